/**
 * Durable backends for the shared suites: SQLite in a temp file, and Postgres at `DATABASE_URL` (default: the local
 * server's `test` database). A Postgres suite may be skipped only when the server is absent and `CI` is unset.
 */
import { Effect, Layer } from "effect"
import { mkdtempSync } from "node:fs"
import { createConnection } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { EventBus, RunStore } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Sqlite from "stepwise/sqlite"

export const databaseUrl = process.env["DATABASE_URL"] ?? Postgres.defaultUrl

/** A fresh SQLite file in a new temp folder. */
export const tempSqliteFile = () => join(mkdtempSync(join(tmpdir(), "stepwise-")), "test.db")

/** A store in a fresh SQLite file each time the layer is built. */
export const sqliteStore: Layer.Layer<RunStore.RunStore, unknown> = Layer.unwrapEffect(
  Effect.sync(() => Sqlite.layer({ filename: tempSqliteFile() }))
)

export const postgresStore: Layer.Layer<RunStore.RunStore, unknown> = Postgres.layer({ url: databaseUrl, maxConnections: 4 })

/**
 * The event bus on the same database, in tables of this vitest worker (its files run one after another), so that
 * engines of test files running at once in other workers do not take each other's commands.
 */
export const postgresBus: Layer.Layer<EventBus.EventBus, unknown> = Postgres.layerBus({
  url: databaseUrl,
  prefix: `stepwise_bus_w${process.env["VITEST_POOL_ID"] ?? "0"}_`
})

const reachable = (url: string): Promise<boolean> => {
  const { hostname, port } = new URL(url)
  return new Promise((resolve) => {
    const socket = createConnection({ host: hostname || "127.0.0.1", port: Number(port || (url.startsWith("redis") ? 6379 : 5432)) })
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(1000, () => done(false))
    socket.once("connect", () => done(true))
    socket.once("error", () => done(false))
  })
}

/** Whether to run the Postgres suites: always under CI (a missing server is then a failure), else when reachable. */
export const postgresEnabled = process.env["CI"] !== undefined && process.env["CI"] !== "" ? true : await reachable(databaseUrl)
if (!postgresEnabled) console.warn(`Postgres at ${databaseUrl} is not reachable and CI is unset: skipping its suites`)

export const redisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"

/** Whether to run the Redis suites: always under CI (a missing server is then a failure), else when reachable. */
export const redisEnabled = process.env["CI"] !== undefined && process.env["CI"] !== "" ? true : await reachable(redisUrl)
if (!redisEnabled) console.warn(`Redis at ${redisUrl} is not reachable and CI is unset: skipping its suites`)
