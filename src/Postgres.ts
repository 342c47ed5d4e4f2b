/**
 * The shared store: Postgres through `@effect/sql-pg`, for many workers on one database. Import from
 * `stepwise/postgres`.
 *
 * ```ts
 * import * as Postgres from "stepwise/postgres"
 * const Store = Postgres.layer({ url: "postgres://127.0.0.1:5432/app" })
 * ```
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Config from "effect/Config"
import type { ConfigError } from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as RunStore from "./RunStore.js"
import type { RunStoreError } from "./WorkflowError.js"

/**
 * The database used unless configured: the local server's `test` database.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultUrl = "postgres://postgres@127.0.0.1:5432/test"

/**
 * The store in the Postgres database at `url`. Its tables are created (or migrated) when the layer is built.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: { readonly url: string; readonly maxConnections?: number }
): Layer.Layer<RunStore.RunStore | SqlClient.SqlClient, RunStoreError | SqlError> =>
  RunStore.layerSql.pipe(
    Layer.provideMerge(PgClient.layer({
      url: Redacted.make(options.url),
      maxConnections: options.maxConnections ?? 10
    }))
  )

/**
 * The store in the database named by `DATABASE_URL` (Effect `Config`), by default the local `test` database.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<
  RunStore.RunStore | SqlClient.SqlClient,
  RunStoreError | SqlError | ConfigError
> = Layer.unwrapEffect(
  Effect.map(Config.string("DATABASE_URL").pipe(Config.withDefault(defaultUrl)), (url) => layer({ url }))
)
