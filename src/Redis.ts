/**
 * The event bus on Redis Streams, for engines in many processes and on many machines. Import from `stepwise/redis`.
 *
 * ```ts
 * import * as Postgres from "stepwise/postgres"
 * import * as Redis from "stepwise/redis"
 * const Worker = WorkflowEngine.register(chat).pipe(
 *   Layer.provideMerge(WorkflowEngine.layerEvented),
 *   Layer.provide(Redis.layerBus({ url: "redis://127.0.0.1:6379" })),
 *   Layer.provide(Postgres.layer({ url: "postgres://127.0.0.1:5432/app" }))
 * )
 * ```
 *
 * The client is `ioredis`: it reconnects by itself and sends again what was in flight (blocking stream reads
 * included), pipelines a batch of commands in one round trip, and has first-class types for the stream commands
 * (`XADD`, `XREADGROUP`, `XAUTOCLAIM`). `node-redis` does as much, but its commands in flight during a
 * reconnection fail unless the offline queue is set up for it, and its blocking commands need an isolated client
 * each; ioredis keeps both simple.
 *
 * Delivery: a plain subscriber gets every event published on a channel after it subscribed, in publish order; a
 * group shares the events (each to one member), and an event a member took but did not finish with (the member's
 * process died) goes to another member after `redeliverAfter`. Channels expire `channelTtl` after their last
 * publish, so a long-lived Redis does not grow with every run ever made.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import type { ConfigError } from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as EventBus from "./EventBus.js"
import * as RedisBus from "./internal/bus/redis.js"
import type { EventBusError } from "./WorkflowError.js"

/**
 * The server used unless configured: the local Redis.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultUrl = "redis://127.0.0.1:6379"

/**
 * Options of `layerBus`: `url`, and `prefix` (put before every channel name to make its key, default `"stepwise:"`),
 * `redeliverAfter` (default 10 seconds), `channelTtl` (default 1 hour), `maxLength` (entries kept per channel, about;
 * default 10,000), `connectTimeout` (default 5 seconds).
 *
 * @since 0.1.0
 * @category models
 */
export type BusOptions = RedisBus.Options

/**
 * The event bus on the Redis server at `url`. Building it fails with `EventBusError` naming the URL (password
 * hidden) when the server does not answer within `connectTimeout`; after that, lost connections are re-established
 * by themselves and subscribers go on where they were.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerBus = (options: BusOptions): Layer.Layer<EventBus.EventBus, EventBusError> =>
  Layer.scoped(EventBus.EventBus, RedisBus.make(options))

/**
 * The event bus on the Redis server named by `REDIS_URL` (Effect `Config`), by default the local one.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerBusConfig: Layer.Layer<EventBus.EventBus, EventBusError | ConfigError> = Layer.unwrapEffect(
  Effect.map(Config.string("REDIS_URL").pipe(Config.withDefault(defaultUrl)), (url) => layerBus({ url }))
)
