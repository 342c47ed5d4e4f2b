/**
 * The embedded default store: SQLite in one file, through `@effect/sql-sqlite-node`. Import from `stepwise/sqlite`
 * (kept out of the main entry, so that apps that never use SQLite never load its native driver).
 *
 * ```ts
 * import * as Sqlite from "stepwise/sqlite"
 * const Live = WorkflowEngine.layerDefault.pipe(
 *   Layer.provideMerge(Layer.merge(EventBus.layerMemory, Sqlite.layer({ filename: ".stepwise/stepwise.db" })))
 * )
 * ```
 *
 * @since 0.1.0
 */
import { SqliteClient } from "@effect/sql-sqlite-node"
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Config from "effect/Config"
import type { ConfigError } from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { mkdirSync } from "node:fs"
import { dirname } from "node:path"
import * as EventBus from "./EventBus.js"
import * as RunStore from "./RunStore.js"
import * as WorkflowEngine from "./WorkflowEngine.js"
import type { RunStoreError } from "./WorkflowError.js"

/**
 * Where the embedded store lives unless configured: `.stepwise/stepwise.db` under the working directory.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultFilename = ".stepwise/stepwise.db"

/**
 * The store in a SQLite file (created, with its folder, when missing). Several processes may use the same file; they
 * wait for each other's writes (busy timeout 5 s). The file is in WAL mode with `synchronous = NORMAL`: what is
 * committed survives a crash of the process; a power loss may lose the last commits.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: { readonly filename: string }
): Layer.Layer<RunStore.RunStore | SqlClient.SqlClient, RunStoreError> =>
  RunStore.layerSql.pipe(
    Layer.provideMerge(
      Layer.effectDiscard(Effect.flatMap(SqliteClient.SqliteClient, (sql) =>
        Effect.zipRight(
          sql`PRAGMA busy_timeout = 5000`,
          // WAL with synchronous=NORMAL: a commit survives the process dying (SIGKILL, a crash), which is what run
          // recovery needs; only the last commits before a power loss may be lost. FULL costs an fsync per commit.
          sql`PRAGMA synchronous = NORMAL`
        ))).pipe(
        Layer.provideMerge(
          Layer.unwrapEffect(Effect.sync(() => {
            if (options.filename !== ":memory:") mkdirSync(dirname(options.filename), { recursive: true })
            return SqliteClient.layer({ filename: options.filename })
          }))
        ),
        Layer.orDie
      )
    )
  )

/**
 * The store in the SQLite file named by `STEPWISE_SQLITE_FILE` (Effect `Config`), by default `.stepwise/stepwise.db`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig: Layer.Layer<RunStore.RunStore | SqlClient.SqlClient, RunStoreError | ConfigError> = Layer
  .unwrapEffect(
    Effect.map(
      Config.string("STEPWISE_SQLITE_FILE").pipe(Config.withDefault(defaultFilename)),
      (filename) => layer({ filename })
    )
  )

/**
 * Everything an app needs on one machine: the default engine, the memory bus, and the store in the SQLite file of
 * `layerConfig` (`STEPWISE_SQLITE_FILE`, default `.stepwise/stepwise.db`). Runs survive restarts.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerEngine: Layer.Layer<
  WorkflowEngine.WorkflowEngine | EventBus.EventBus | RunStore.RunStore | SqlClient.SqlClient,
  RunStoreError | ConfigError
> = WorkflowEngine.layerDefault.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, layerConfig)))
