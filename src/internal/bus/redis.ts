/**
 * The `EventBus` over Redis Streams (see `src/Redis.ts` for the public side).
 *
 * Every channel is one stream key (`prefix + channel`). Publishing is `XADD` (a batch is one pipeline: one round
 * trip), capped with `MAXLEN ~` and followed by `PEXPIRE`, so a channel nobody publishes to any more (a finished
 * run's) disappears by itself.
 *
 * - Plain subscribers of a process share ONE blocking connection: a loop `XREAD`s every subscribed key from its
 *   cursor. A subscription starts after the stream's last entry at the moment it subscribes (so it sees everything
 *   published after `subscribe` succeeded, in stream order), and a new key reaches the loop at once: the loop's
 *   blocking read is cut short with `CLIENT UNBLOCK`.
 * - Group subscribers use a consumer group (`XREADGROUP`), each on a connection of its own (a blocking read per
 *   member). An entry is acknowledged (`XACK`) when the member pulls again (it handled the chunk it got) or when its
 *   subscription ends between two pulls (what a consumer that stops does with what it got is its own business: the
 *   evented engine hands such commands back). An entry taken by a member whose process died is claimed by another
 *   member once it has been pending for `redeliverAfter` (`XAUTOCLAIM`).
 * - A lost connection is re-established by the client; blocking reads are sent again with the same cursors, so
 *   nothing is skipped. Commands wait for the connection instead of failing.
 */
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { Redis } from "ioredis"
import { hostname } from "node:os"
import * as EventBus from "../../EventBus.js"
import { EventBusError } from "../../WorkflowError.js"
import { randomId } from "../ids.js"
import { redactUrl } from "../url.js"

/** Options of the Redis bus. */
export interface Options {
  /** `redis://[user:password@]host:port[/db]`. */
  readonly url: string
  /** Put before every channel name to make its key. Default `"stepwise:"`. */
  readonly prefix?: string
  /**
   * How long an entry taken by a member of a group may stay unacknowledged before another member takes it (its member
   * is taken for dead). Default 10 seconds.
   */
  readonly redeliverAfter?: Duration.DurationInput
  /** A channel not published to for this long is deleted (its key expires). Default 1 hour. */
  readonly channelTtl?: Duration.DurationInput
  /** Each channel keeps about this many entries at most (`MAXLEN ~`). Default 10,000. */
  readonly maxLength?: number
  /** How long building the layer waits for the first connection. Default 5 seconds. */
  readonly connectTimeout?: Duration.DurationInput
}

// ---------------------------------------------------------------------------------------------------------------
// stream ids

/** Whether entry id `a` comes after `b` (ids are `ms-seq`). */
const after = (a: string, b: string): boolean => {
  const da = a.indexOf("-")
  const db = b.indexOf("-")
  const ma = a.slice(0, da)
  const mb = b.slice(0, db)
  if (ma.length !== mb.length) return ma.length > mb.length
  if (ma !== mb) return ma > mb
  const sa = a.slice(da + 1)
  const sb = b.slice(db + 1)
  return sa.length !== sb.length ? sa.length > sb.length : sa > sb
}

type Entry = readonly [id: string, fields: ReadonlyArray<string>]

const asEntries = (raw: unknown): ReadonlyArray<Entry> =>
  Array.isArray(raw) ? raw.filter((e): e is Entry => Array.isArray(e) && typeof e[0] === "string" && Array.isArray(e[1])) : []

const decodeBusEvent = Schema.decodeUnknownEither(EventBus.BusEvent)

/** The event of an entry, or `undefined` (logged) when it is not one. */
const decodeEntry = (channel: string, entry: Entry): Effect.Effect<EventBus.BusEvent | undefined> => {
  const fields = entry[1]
  const at = fields.indexOf("e")
  const text = at === -1 ? undefined : fields[at + 1]
  if (text === undefined) return EventBus.skipMalformed(channel, `entry ${entry[0]} has no "e" field`)
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return EventBus.skipMalformed(channel, `entry ${entry[0]} is not JSON: ${text.slice(0, 80)}`)
  }
  const decoded = decodeBusEvent(json)
  return Either.isRight(decoded)
    ? Effect.succeed(decoded.right)
    : EventBus.skipMalformed(channel, `entry ${entry[0]} is not an event: ${decoded.left.message}`)
}

const decodeEntries = (channel: string, entries: ReadonlyArray<Entry>) =>
  Effect.map(
    Effect.forEach(entries, (entry) => decodeEntry(channel, entry)),
    (events) => events.filter((e): e is EventBus.BusEvent => e !== undefined)
  )

// ---------------------------------------------------------------------------------------------------------------
// the bus

interface Subscription {
  readonly queue: Queue.Queue<EventBus.BusEvent>
  /** Only entries after this id are for it (it subscribed when the stream ended there). */
  readonly from: string
}

interface Channel {
  /** The last entry the loop read. */
  cursor: string
  readonly subscriptions: Set<Subscription>
}

/** Entries per read. */
const readCount = 1000
/** At most this many entries per pull for a member of a group (as the memory bus). */
const groupChunk = 16

export const make = (options: Options): Effect.Effect<EventBus.EventBus["Type"], EventBusError, Scope.Scope> =>
  Effect.gen(function*() {
    const prefix = options.prefix ?? "stepwise:"
    const redeliverMillis = Duration.toMillis(options.redeliverAfter ?? "10 seconds")
    const ttlMillis = Duration.toMillis(options.channelTtl ?? "1 hour")
    const maxLength = options.maxLength ?? 10_000
    const connectMillis = Duration.toMillis(options.connectTimeout ?? "5 seconds")
    const where = redactUrl(options.url)
    const key = (channel: string) => prefix + channel

    /** A connection, closed with the scope. Fails when the server does not answer within `connectTimeout`. */
    const connect = (purpose: string) =>
      Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const client = new Redis(options.url, {
              lazyConnect: true,
              // Commands wait for the connection to come back instead of failing.
              maxRetriesPerRequest: null,
              connectTimeout: connectMillis,
              retryStrategy: (times) => Math.min(50 * times, 2000),
              connectionName: `stepwise-${purpose}`
            })
            // Without a listener, ioredis prints every failed reconnection; the loops log what matters.
            client.on("error", () => {})
            try {
              await client.connect()
            } catch (error) {
              client.disconnect()
              throw error
            }
            return client
          },
          catch: (error) =>
            new EventBusError({
              channel: "*",
              reason: `cannot connect to Redis at ${where}: ${error instanceof Error ? error.message : String(error)}`
            })
        }),
        (client) => Effect.sync(() => client.disconnect())
      )

    const failure = (channel: string, what: string) => (error: unknown) =>
      new EventBusError({
        channel,
        reason: `${what} on Redis at ${where} failed: ${error instanceof Error ? error.message : String(error)}`
      })

    const commands = yield* connect("commands")

    // -------------------------------------------------------------------------------------------------------------
    // publishing

    const publishAll = (channel: string, events: ReadonlyArray<EventBus.BusEvent>): Effect.Effect<void, EventBusError> =>
      Effect.suspend(() => {
        if (events.length === 0) return Effect.void
        const k = key(channel)
        const pipeline = commands.pipeline()
        for (const event of events) {
          let text: string
          try {
            text = JSON.stringify(event)
          } catch (error) {
            return Effect.fail(failure(channel, `encoding an event of type "${event.type}"`)(error))
          }
          pipeline.xadd(k, "MAXLEN", "~", maxLength, "*", "e", text)
        }
        pipeline.pexpire(k, ttlMillis)
        return Effect.tryPromise({ try: () => pipeline.exec(), catch: failure(channel, "XADD") }).pipe(
          Effect.flatMap((results) => {
            const error = results?.find(([e]) => e !== null)?.[0]
            return error === undefined || error === null ? Effect.void : Effect.fail(failure(channel, "XADD")(error))
          })
        )
      })

    const publish = (channel: string, event: EventBus.BusEvent) => publishAll(channel, [event])

    // -------------------------------------------------------------------------------------------------------------
    // plain subscribers: one loop, one connection

    const reader = yield* connect("reader")
    const channels = new Map<string, Channel>()
    /** Bumped when a channel is added; the loop notes which generation its read covers. */
    let generation = 0
    let reading = 0
    let readerId: string | undefined
    let idle: (() => void) | undefined

    /** Makes the loop read the channels as they are now: wakes it when idle, cuts its blocking read short. */
    const refresh = Effect.promise(async () => {
      generation++
      if (idle !== undefined) {
        const wake = idle
        idle = undefined
        wake()
        return
      }
      // The loop may be between two reads (its next read sees the new channel) or about to block with the old list:
      // then the unblock finds nothing blocked, and is tried again until the loop's read covers the change.
      for (let i = 0; i < 50 && reading < generation; i++) {
        if (readerId !== undefined) {
          const unblocked = await commands.call("CLIENT", "UNBLOCK", readerId).catch(() => 0)
          if (unblocked === 1) return
        }
        await new Promise((resolve) => setTimeout(resolve, 2))
      }
    })

    const deliver = (raw: unknown) =>
      Effect.forEach(Array.isArray(raw) ? raw : [], (item) => {
        if (!Array.isArray(item) || typeof item[0] !== "string") return Effect.void
        const name = (item[0] as string).slice(prefix.length)
        const channel = channels.get(name)
        const entries = asEntries(item[1])
        if (channel === undefined || entries.length === 0) return Effect.void
        channel.cursor = entries[entries.length - 1]![0]
        return Effect.forEach(entries, (entry) =>
          Effect.map(decodeEntry(name, entry), (event) => {
            if (event === undefined) return
            for (const subscription of channel.subscriptions) {
              if (after(entry[0], subscription.from)) Queue.unsafeOffer(subscription.queue, event)
            }
          }), { discard: true })
      }, { discard: true })

    const readOnce: Effect.Effect<void> = Effect.gen(function*() {
      if (channels.size === 0) {
        yield* Effect.async<void>((resume) => {
          if (channels.size > 0) return resume(Effect.void)
          idle = () => resume(Effect.void)
          return Effect.sync(() => {
            idle = undefined
          })
        })
        return
      }
      reading = generation
      const names = Array.from(channels.keys())
      const args: Array<string> = ["COUNT", String(readCount), "BLOCK", "5000", "STREAMS"]
      for (const name of names) args.push(key(name))
      for (const name of names) args.push(channels.get(name)!.cursor)
      // Sent together with the read, so the id is that of the connection the read blocks on (it changes with a
      // reconnection).
      const id = reader.call("CLIENT", "ID")
      const read = reader.call("XREAD", ...args)
      // Handled below, unless the loop is interrupted first (the layer closing): then its rejection is expected.
      read.catch(() => {})
      readerId = String(yield* Effect.promise(() => id.catch(() => undefined)))
      const result = yield* Effect.tryPromise({ try: () => read, catch: failure("*", "XREAD") })
      yield* deliver(result)
    }).pipe(
      Effect.catchAll((error) => Effect.zipRight(Effect.logWarning(error.message), Effect.sleep("200 millis")))
    )
    yield* Effect.forkScoped(Effect.forever(readOnce))

    const lastId = (channel: string) =>
      Effect.tryPromise({
        try: () => commands.xrevrange(key(channel), "+", "-", "COUNT", 1),
        catch: failure(channel, "XREVRANGE")
      }).pipe(Effect.map((entries) => entries[0]?.[0] ?? "0-0"))

    const subscribePlain = (channel: string) =>
      Effect.gen(function*() {
        const from = yield* lastId(channel)
        const queue = yield* Queue.unbounded<EventBus.BusEvent>()
        const subscription: Subscription = { queue, from }
        yield* Effect.acquireRelease(
          Effect.suspend(() => {
            const existing = channels.get(channel)
            if (existing !== undefined) {
              existing.subscriptions.add(subscription)
              return Effect.void
            }
            channels.set(channel, { cursor: from, subscriptions: new Set([subscription]) })
            return refresh
          }),
          () =>
            Effect.suspend(() => {
              const existing = channels.get(channel)
              existing?.subscriptions.delete(subscription)
              if (existing !== undefined && existing.subscriptions.size === 0) channels.delete(channel)
              return Queue.shutdown(queue)
            })
        )
        return Stream.fromQueue(queue)
      })

    // -------------------------------------------------------------------------------------------------------------
    // groups

    const createGroup = (channel: string, group: string, start: "$" | "0") =>
      Effect.tryPromise({
        try: () => commands.xgroup("CREATE", key(channel), group, start, "MKSTREAM"),
        catch: (error) => error
      }).pipe(
        Effect.catchAll((error) =>
          error instanceof Error && error.message.includes("BUSYGROUP")
            ? Effect.void
            : Effect.fail(failure(channel, `XGROUP CREATE ${group}`)(error))
        ),
        Effect.asVoid
      )

    const subscribeGroup = (channel: string, group: string) =>
      Effect.gen(function*() {
        const k = key(channel)
        yield* createGroup(channel, group, "$")
        const consumer = `${hostname()}:${process.pid}:${randomId().slice(0, 8)}`
        const connection = yield* connect(`group-${group}`)
        let unacked: Array<string> = []
        let claimedAt = 0
        yield* Effect.addFinalizer(() =>
          // The member handled what it pulled (its consumer stopped between two pulls): that is acknowledged. What the
          // server handed it that never reached the consumer stays pending, for another member after
          // `redeliverAfter`; a consumer left with nothing pending is removed from the group.
          Effect.promise(async () => {
            if (unacked.length > 0) await commands.xack(k, group, ...unacked).catch(() => 0)
            const pending = await commands.xpending(k, group, "-", "+", 1, consumer).catch(() => [1])
            if (Array.isArray(pending) && pending.length === 0) {
              await commands.xgroup("DELCONSUMER", k, group, consumer).catch(() => 0)
            }
          })
        )
        const take = (entries: ReadonlyArray<Entry>) =>
          Effect.map(decodeEntries(channel, entries), (events) => {
            // Malformed entries are acknowledged with the rest: they were logged and will never decode.
            unacked = entries.map(([id]) => id)
            return events
          })
        /** The next entries for this member: stale ones of dead members first, then new ones. */
        const next: Effect.Effect<ReadonlyArray<Entry>, EventBusError> = Effect.gen(function*() {
          const now = Date.now()
          if (now - claimedAt >= redeliverMillis / 2) {
            claimedAt = now
            const claimed = yield* Effect.tryPromise({
              try: () => commands.xautoclaim(k, group, consumer, redeliverMillis, "0-0", "COUNT", groupChunk),
              catch: failure(channel, "XAUTOCLAIM")
            })
            const entries = asEntries(claimed[1])
            if (entries.length > 0) return entries
          }
          const block = Math.max(10, Math.min(2000, Math.floor(redeliverMillis / 2)))
          const result = yield* Effect.tryPromise({
            try: () =>
              connection.call(
                "XREADGROUP", "GROUP", group, consumer, "COUNT", String(groupChunk), "BLOCK", String(block),
                "STREAMS", k, ">"
              ),
            catch: (error) => error
          }).pipe(Effect.catchAll((error) =>
            error instanceof Error && error.message.includes("NOGROUP")
              // The key expired or was deleted, and the group with it: entries published since are read from the start.
              ? Effect.as(createGroup(channel, group, "0"), null)
              : Effect.fail(failure(channel, "XREADGROUP")(error))
          ))
          const stream = Array.isArray(result) ? result[0] : undefined
          return Array.isArray(stream) ? asEntries(stream[1]) : []
        })
        // A member keeps going through the server's errors (they are logged): its stream ends only with its scope.
        const pull: Effect.Effect<Chunk.Chunk<EventBus.BusEvent>> = Effect.gen(function*() {
          if (unacked.length > 0) {
            const ids = unacked
            unacked = []
            // Not acknowledged: they are taken again after `redeliverAfter`.
            yield* Effect.tryPromise({ try: () => commands.xack(k, group, ...ids), catch: failure(channel, "XACK") }).pipe(
              Effect.catchAll((error) => Effect.logWarning(error.message))
            )
          }
          while (true) {
            const entries = yield* next.pipe(
              Effect.catchAll((error) =>
                Effect.as(Effect.zipRight(Effect.logWarning(error.message), Effect.sleep("200 millis")), [])
              )
            )
            if (entries.length === 0) continue
            const events = yield* take(entries)
            if (events.length > 0) return Chunk.unsafeFromArray(events)
          }
        })
        return Stream.repeatEffectChunk(pull)
      })

    const subscribe = (channel: string, options?: EventBus.SubscribeOptions) =>
      options?.group === undefined ? subscribePlain(channel) : subscribeGroup(channel, options.group)

    return EventBus.EventBus.of({ publish, publishAll, subscribe })
  })
