/**
 * The pubsub service that delivers events live. It is only for delivery: the `RunStore` holds the truth, so a bus
 * may drop events for channels nobody listens to.
 *
 * @since 0.1.0
 */
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Consume from "./internal/bus/consume.js"
import { EventBusError } from "./WorkflowError.js"

export {
  /**
   * @since 0.1.0
   * @category errors
   */
  EventBusError
} from "./WorkflowError.js"

/**
 * One message on a channel. Watch envelopes on a run channel are `{ type: "watch", runId, data }`.
 *
 * @since 0.1.0
 * @category models
 */
export interface BusEvent {
  readonly type: string
  readonly runId: string
  readonly data: unknown
}

/**
 * The schema every event read from a bus is decoded with.
 *
 * @since 0.1.0
 * @category schemas
 */
export const BusEvent: Schema.Schema<BusEvent> = Schema.Struct({
  type: Schema.String,
  runId: Schema.String,
  data: Schema.Unknown
})

/**
 * Options of `subscribe`: subscribers that share a `group` share the work (each event reaches one of them).
 *
 * @since 0.1.0
 * @category models
 */
export interface SubscribeOptions {
  readonly group?: string
}

/**
 * What `listen` calls. `events` gets the events of one publish (or one batch of them) in order, and `failure` the error
 * that ended the subscription (nothing is delivered after it). Both are called where the bus delivers, which may be
 * inside a publisher's `publish`: they must return quickly and must not throw.
 *
 * @since 0.1.0
 * @category models
 */
export interface Listener {
  readonly events: (events: ReadonlyArray<BusEvent>) => void
  readonly failure: (error: EventBusError) => void
}

/**
 * The event bus service.
 *
 * @since 0.1.0
 * @category tags
 */
export class EventBus extends Context.Tag("stepwise/EventBus")<EventBus, {
  readonly publish: (channel: string, event: BusEvent) => Effect.Effect<void, EventBusError>
  /**
   * Publishes several events on one channel, in order (optional: without it, `publishAll` of this module publishes
   * them one by one). Writers' events reach the bus in batches; a broker layer can send a batch in one round trip.
   */
  readonly publishAll?: (channel: string, events: ReadonlyArray<BusEvent>) => Effect.Effect<void, EventBusError>
  /** Subscribed once this effect succeeds; the subscription lasts as long as the scope. */
  readonly subscribe: (
    channel: string,
    options?: SubscribeOptions
  ) => Effect.Effect<Stream.Stream<BusEvent, EventBusError>, EventBusError, Scope.Scope>
  /**
   * Delivers the channel's events to callbacks instead of a Stream (optional: without it, `listen` of this module
   * consumes a subscription in a fiber of its own). A bus whose deliveries are callbacks anyway implements it to spare
   * a subscriber that only needs waking (a run's readers) a fiber and a Stream on every event: on the memory bus, a
   * reader learns of an event inside the `publish` that sent it. Listening once this effect succeeds; until the scope
   * closes.
   */
  readonly listen?: (channel: string, listener: Listener) => Effect.Effect<void, EventBusError, Scope.Scope>
}>() {}

/**
 * Publishes events on one channel in order, with the bus's `publishAll` when it has one.
 *
 * @since 0.1.0
 * @category utils
 */
export const publishAll = (
  bus: EventBus["Type"],
  channel: string,
  events: ReadonlyArray<BusEvent>
): Effect.Effect<void, EventBusError> =>
  bus.publishAll !== undefined
    ? bus.publishAll(channel, events)
    : Effect.forEach(events, (event) => bus.publish(channel, event), { discard: true })

/**
 * Calls `listener` with the events published on `channel` until the scope closes, with the bus's `listen` when it has
 * one; otherwise through `subscribe`, consumed in a fiber of the scope (a failure of the subscription goes to
 * `listener.failure`).
 *
 * @since 0.1.0
 * @category utils
 */
export const listen = (
  bus: EventBus["Type"],
  channel: string,
  listener: Listener
): Effect.Effect<void, EventBusError, Scope.Scope> =>
  bus.listen !== undefined
    ? bus.listen(channel, listener)
    : Effect.flatMap(bus.subscribe(channel), (events) =>
      Consume.forEachChunk(events, (chunk) => Effect.sync(() => listener.events(Chunk.toReadonlyArray(chunk)))).pipe(
        Effect.catchAll((error) => Effect.sync(() => listener.failure(error))),
        Effect.forkScoped,
        Effect.asVoid
      ))

/**
 * The channel that carries a run's watch envelopes (seed name).
 *
 * @since 0.1.0
 * @category channels
 */
export const runChannel = (runId: string): string => `workflow.events.v2.${runId}`

/**
 * The channel that tells readers of a run's streams (`getWritable`) that chunks were written, a stream was closed or
 * the run ended. It carries notifications only; the chunks themselves are read from the `RunStore`.
 *
 * @since 0.1.0
 * @category channels
 */
export const streamChannel = (runId: string): string => `workflow.streams.v2.${runId}`

/**
 * The channel of the evented engine's commands.
 *
 * @since 0.1.0
 * @category channels
 */
export const workflowsChannel = "workflows"

/**
 * The channel on which the evented engine announces finished runs.
 *
 * @since 0.1.0
 * @category channels
 */
export const workflowsFinishChannel = "workflows-finish"

/**
 * Introspection of the in-memory bus, for tests and benchmarks that check nothing is left behind.
 *
 * @since 0.1.0
 * @category tags
 */
export class MemoryChannels extends Context.Tag("stepwise/EventBus/MemoryChannels")<MemoryChannels, {
  /** How many channels currently have at least one subscriber (and so a `PubSub`). */
  readonly size: Effect.Effect<number>
}>() {}

/** At most this many events per pull for a member of a group. */
const groupChunk = 16

interface Channel {
  readonly pubsub: PubSub.PubSub<BusEvent>
  readonly groups: Map<string, { readonly queue: Queue.Queue<BusEvent>; members: number }>
  /** The listeners' callbacks (`listen`); the set exists once the channel has had one. */
  listeners: Set<Listener> | undefined
  subscribers: number
}

/**
 * Hands `events` to every listener of `channel`, in the publisher's fiber, before the publish goes on with
 * `publish`; with no listener, that is `publish` itself (nothing added on the path of every command and batch). A
 * listener that throws breaks its contract: the others still get the events, and the publish logs it rather than
 * failing.
 */
const withListeners = <A>(
  channel: string,
  target: Channel,
  events: () => ReadonlyArray<BusEvent>,
  publish: Effect.Effect<A>
): Effect.Effect<A> => {
  const listeners = target.listeners
  if (listeners === undefined || listeners.size === 0) return publish
  const batch = events()
  let thrown: Array<unknown> | undefined
  for (const listener of listeners) {
    try {
      listener.events(batch)
    } catch (error) {
      ;(thrown ??= []).push(error)
    }
  }
  return thrown === undefined
    ? publish
    : Effect.zipRight(Effect.logError(`A listener of channel "${channel}" threw (listeners must not throw)`, ...thrown), publish)
}

/**
 * Builds an in-memory bus: one `PubSub` per channel, created when the first subscriber arrives and removed when the
 * last one leaves. Publishing to a channel nobody subscribes to costs nothing and delivers nothing.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<
  { readonly bus: EventBus["Type"]; readonly channels: MemoryChannels["Type"] }
> = Effect.sync(() => {
  const channels = new Map<string, Channel>()

  const acquire = (name: string): Channel => {
    let channel = channels.get(name)
    if (channel === undefined) {
      channel = {
        pubsub: Effect.runSync(PubSub.unbounded<BusEvent>()),
        groups: new Map(),
        listeners: undefined,
        subscribers: 0
      }
      channels.set(name, channel)
    }
    channel.subscribers++
    return channel
  }

  const release = (name: string, channel: Channel) =>
    Effect.suspend(() => {
      channel.subscribers--
      if (channel.subscribers > 0 || channels.get(name) !== channel) return Effect.void
      channels.delete(name)
      return PubSub.shutdown(channel.pubsub)
    })

  const publish = (channel: string, event: BusEvent): Effect.Effect<void, EventBusError> =>
    Effect.suspend(() => {
      const target = channels.get(channel)
      if (target === undefined) return Effect.void
      // Group queues are unbounded: offering to them never waits.
      for (const group of target.groups.values()) Queue.unsafeOffer(group.queue, event)
      return withListeners(channel, target, () => [event], PubSub.publish(target.pubsub, event))
    })

  const publishAll = (channel: string, events: ReadonlyArray<BusEvent>): Effect.Effect<void, EventBusError> =>
    Effect.suspend(() => {
      const target = channels.get(channel)
      if (target === undefined || events.length === 0) return Effect.void
      for (const group of target.groups.values()) {
        for (const event of events) Queue.unsafeOffer(group.queue, event)
      }
      return withListeners(channel, target, () => events, PubSub.publishAll(target.pubsub, events))
    })

  const subscribe = (channel: string, options?: SubscribeOptions) =>
    Effect.gen(function*() {
      const target = yield* Effect.acquireRelease(Effect.sync(() => acquire(channel)), (c) => release(channel, c))
      const group = options?.group
      if (group === undefined) {
        const dequeue = yield* PubSub.subscribe(target.pubsub)
        return Consume.fromQueue(dequeue, Stream.DefaultChunkSize)
      }
      const shared = yield* Effect.acquireRelease(
        Effect.sync(() => {
          let entry = target.groups.get(group)
          if (entry === undefined) {
            entry = { queue: Effect.runSync(Queue.unbounded<BusEvent>()), members: 0 }
            target.groups.set(group, entry)
          }
          entry.members++
          return entry
        }),
        (entry) =>
          Effect.suspend(() => {
            entry.members--
            if (entry.members > 0) return Effect.void
            target.groups.delete(group)
            return Queue.shutdown(entry.queue)
          })
      )
      // A few events per pull: a member that pulled the whole queue would starve the other members of the group,
      // and one event per pull keeps a consumer from seeing that several are waiting (the evented engine walks a run
      // once for all the step ends of one pull).
      return Consume.fromQueue(shared.queue, groupChunk)
    })

  // A listener counts as a subscriber: the channel lives while it has one.
  const listen = (channel: string, listener: Listener): Effect.Effect<void, never, Scope.Scope> =>
    Effect.asVoid(Effect.acquireRelease(
      Effect.sync(() => {
        const target = acquire(channel)
        ;(target.listeners ??= new Set()).add(listener)
        return target
      }),
      (target) =>
        Effect.suspend(() => {
          target.listeners?.delete(listener)
          return release(channel, target)
        })
    ))

  return {
    bus: EventBus.of({ publish, publishAll, subscribe, listen }),
    channels: MemoryChannels.of({ size: Effect.sync(() => channels.size) })
  }
})

/**
 * The in-memory bus, for one process. Also provides `MemoryChannels` for introspection.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<EventBus | MemoryChannels> = Layer.effectContext(
  Effect.map(makeMemory, ({ bus, channels }) =>
    Context.make(EventBus, bus).pipe(Context.add(MemoryChannels, channels)))
)

/**
 * Logs that a message read from a broker on `channel` is not an event (an `EventBusError` saying why) and answers
 * `undefined`: the subscriber skips it and goes on. Broker layers use this for every message they cannot decode.
 *
 * @since 0.1.0
 * @category utils
 */
export const skipMalformed = (channel: string, reason: string): Effect.Effect<undefined> =>
  Effect.as(
    Effect.logWarning(new EventBusError({ channel, reason: `skipping a malformed message: ${reason}` }).message),
    undefined
  )

/**
 * Decodes an event read from an external broker. Malformed events are logged with their channel and skipped, as the
 * contract requires (see `skipMalformed`).
 *
 * @since 0.1.0
 * @category utils
 */
export const decodeIncoming = (channel: string, raw: unknown): Effect.Effect<BusEvent | undefined> =>
  Schema.decodeUnknown(BusEvent)(raw).pipe(Effect.catchAll((error) => skipMalformed(channel, error.message)))
