/**
 * Postgres for many workers on one database: the shared store through `@effect/sql-pg`, and an event bus on the
 * same server, so that a team that runs Postgres needs no broker. Import from `stepwise/postgres`.
 *
 * ```ts
 * import * as Postgres from "stepwise/postgres"
 * const url = "postgres://127.0.0.1:5432/app"
 * const Backends = Layer.merge(Postgres.layer({ url }), Postgres.layerBus({ url }))
 * ```
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Config from "effect/Config"
import type { ConfigError } from "effect/ConfigError"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as EventBus from "./EventBus.js"
import * as PgBus from "./internal/bus/postgres.js"
import * as PgStore from "./internal/store/pgClient.js"
import * as RunStore from "./RunStore.js"
import type { EventBusError, RunStoreError } from "./WorkflowError.js"

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
 * The store's statements are prepared once per connection (named statements), which roughly halves what its larger
 * statements cost the server. Behind a connection pooler in transaction mode that does not keep prepared statements
 * per client (PgBouncer before 1.21, or without `max_prepared_statements`), pass `preparedStatements: false`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: {
    readonly url: string
    /** The pool's size. Default 10. */
    readonly maxConnections?: number
    /** Whether the store prepares its statements on each connection. Default true. */
    readonly preparedStatements?: boolean
  }
): Layer.Layer<RunStore.RunStore | SqlClient.SqlClient, RunStoreError | SqlError> =>
  RunStore.layerSql.pipe(
    Layer.provideMerge(PgStore.layer({
      url: options.url,
      maxConnections: options.maxConnections ?? 10,
      preparedStatements: options.preparedStatements ?? true
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

/**
 * Options of `layerBus`.
 *
 * @since 0.1.0
 * @category models
 */
export interface BusOptions {
  readonly url: string
  /**
   * How long an event a group member took stays leased to it: if the member is gone (its scope closed, its process
   * died) before it acknowledged the event, another member gets it after this. While the layer lives, it extends the
   * leases of what its members hold. Default 10 seconds.
   */
  readonly redeliverAfter?: Duration.DurationInput
  /**
   * How long the bus keeps a channel's messages (and a group without members): a subscriber that falls further behind
   * may miss events. The bus is for live delivery; readers of a run read its history from the store. Default 1 minute.
   */
  readonly retention?: Duration.DurationInput
  /**
   * Put before the bus's table names (and names its NOTIFY channel), so that several deployments can share one
   * database without taking each other's commands. Letters, digits and `_`. Default `"stepwise_bus_"`.
   */
  readonly prefix?: string
  /**
   * The size of the bus's pool: statements at once in this process (more wait their turn, in order of arrival). The
   * bus holds one more connection for LISTEN. Lower it when many processes share a server's `max_connections`.
   * A whole number, at least 1. Default 10.
   */
  readonly maxConnections?: number
}

/**
 * The event bus on the Postgres database at `url`, with no broker: messages in tables (prefixed `stepwise_bus_`,
 * created when the layer is built, beside the store's if it is the same database), LISTEN/NOTIFY to wake subscribers.
 *
 * Every plain subscriber gets every event published after it subscribed, once, in publish order per channel (also
 * with publishers in several processes). Members of a `group` share the events, each to one of them, at most 16 at a
 * time; an event counts as handled once the member's stream is pulled again, and goes to another member if its member
 * is gone before (see `redeliverAfter`). Subscriptions ride out a lost connection or a database restart: they read
 * what they missed when it is back, and one asked for while the database is down waits for it (up to 2 minutes, as
 * the engines wait out an outage). An unreachable database fails the layer within a few seconds.
 *
 * ```ts
 * const Bus = Postgres.layerBus({ url: "postgres://127.0.0.1:5432/app", redeliverAfter: "30 seconds" })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerBus = (options: BusOptions): Layer.Layer<EventBus.EventBus, EventBusError> =>
  Layer.scoped(EventBus.EventBus, Effect.map(PgBus.make(options), ({ bus }) => bus))

/**
 * The event bus on the database named by `DATABASE_URL` (Effect `Config`), by default the local `test` database.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerBusConfig: Layer.Layer<EventBus.EventBus, EventBusError | ConfigError> = Layer.unwrapEffect(
  Effect.map(Config.string("DATABASE_URL").pipe(Config.withDefault(defaultUrl)), (url) => layerBus({ url }))
)
