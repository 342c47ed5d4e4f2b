/**
 * The `PgClient` under the Postgres store: `@effect/sql-pg` over a pool of its own, whose connections prepare the
 * store's statements once each. node-postgres sends a parameterized statement unnamed, so the server parses and plans
 * it on every call; for the store's CTEs (a step's claim, its outcome) that was about half of each statement's cost
 * (a raw loop at load 3: a claim 500-680 µs unnamed, 250-400 µs named). A named statement is parsed and planned once
 * per connection, then only bound and executed.
 *
 * Only the store's statements are named: parameterized ones on its `stepwise_` tables, without `SELECT *` (a named
 * statement whose result columns change, after an `ALTER TABLE ... ADD COLUMN`, fails). Statements of the
 * application on the same client are sent as before, and each connection names at most `maxPrepared` texts, so that
 * what the server keeps per session stays bounded.
 */
import { PgClient } from "@effect/sql-pg"
import type * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import { createRequire } from "node:module"

// The few parts of `pg` (node-postgres, the driver under `@effect/sql-pg`) used here, typed here because `@types/pg`
// is not installed.
interface PgClientLike {
  query(config: unknown, values?: unknown, callback?: unknown): unknown
}
interface PgPool {
  query(text: string): Promise<unknown>
  end(): Promise<void>
  on(event: "error", listener: (error: Error) => void): void
}
interface PgModule {
  readonly Client: new(...args: Array<unknown>) => PgClientLike
  readonly Pool: new(config: {
    readonly connectionString: string
    readonly max: number
    readonly application_name: string
    readonly Client: new(...args: Array<unknown>) => PgClientLike
  }) => PgPool
}

const Pg = createRequire(import.meta.url)("pg") as PgModule

/** Distinct statements a connection prepares; more are sent unnamed. The store has a few dozen. */
const maxPrepared = 256

/** Whether a statement is the store's own and safe to keep prepared (see the module's doc). */
const prepares = (text: string): boolean => text.includes("stepwise_") && !/\bSELECT\s+\*/i.test(text)

/** A connection that names each of the store's statements the first time it sends it. */
class PreparingClient extends Pg.Client {
  private readonly names = new Map<string, string>()
  override query(config: unknown, values?: unknown, callback?: unknown): unknown {
    if (typeof config === "string" && Array.isArray(values) && values.length > 0) {
      // A statement named before is found at once; the text is looked at only the first time (per-step path).
      let name = this.names.get(config)
      if (name === undefined && this.names.size < maxPrepared && prepares(config)) {
        name = `stepwise_${this.names.size}`
        this.names.set(config, name)
      }
      if (name !== undefined) return super.query({ name, text: config, values }, callback)
    }
    return super.query(config, values, callback)
  }
}

/** Options of `layer`, as `Postgres.layer` takes them. */
export interface Options {
  readonly url: string
  readonly maxConnections: number
  readonly preparedStatements: boolean
}

const connectTimeout = Duration.seconds(5)

/**
 * The client of the store: a pool of `maxConnections` connections to `url`, preparing the store's statements unless
 * `preparedStatements` is false. Fails within 5 seconds when the server cannot be reached, as `PgClient.layer` does.
 */
export const layer = (options: Options): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, SqlError> =>
  PgClient.layerFromPool({
    acquire: Effect.acquireRelease(
      Effect.suspend(() => {
        const pool = new Pg.Pool({
          connectionString: options.url,
          max: options.maxConnections,
          application_name: "@effect/sql-pg",
          Client: options.preparedStatements ? PreparingClient : Pg.Client
        })
        // An idle connection that fails is dropped by the pool; the next statement gets another.
        pool.on("error", () => {})
        return Effect.tryPromise({
          try: () => pool.query("SELECT 1"),
          catch: (cause) => new SqlError({ cause, message: "PgClient: Failed to connect" })
        }).pipe(
          Effect.timeoutFail({
            duration: connectTimeout,
            onTimeout: () => new SqlError({ cause: new Error("Connection timed out"), message: "PgClient: Connection timed out" })
          }),
          Effect.as(pool),
          Effect.tapError(() => Effect.promise(() => pool.end().catch(() => {})))
        )
      }),
      (pool) => Effect.promise(() => pool.end()).pipe(Effect.interruptible, Effect.timeoutOption(1000))
    )
  })
