/**
 * The contract every `EventBus` layer meets, as one suite that runs unchanged against each of them (memory, Redis,
 * Postgres). A backend gives a fresh bus per test and, where it has a wire, ways to act as a foreign party on it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Fiber, Layer, Logger, type Scope, Stream } from "effect"
import { EventBus } from "stepwise"

export interface BusBackend {
  /** The bus, with whatever the backend's hooks need (built fresh for each test). */
  readonly layer: Layer.Layer<EventBus.EventBus, unknown>
  /** Writes `raw` on `channel` as a foreign publisher would (bytes that need not be an event). No wire: absent. */
  readonly publishRaw?: (channel: string, raw: string) => Effect.Effect<void, unknown>
  /**
   * Takes up to `n` events of `channel` as a member of `group` whose process then dies: it never acknowledges them.
   * Answers how many it took. A bus in one process has no member that dies alone: absent.
   */
  readonly takeAndDie?: (channel: string, group: string, n: number) => Effect.Effect<number, unknown>
  /** How much of `channels` the backend still holds (keys, rows, PubSubs), once their subscriptions ended. */
  readonly leftovers: (channels: ReadonlyArray<string>) => Effect.Effect<number, unknown>
  /** How long leftovers may take to go (a broker expires channels after a TTL). */
  readonly cleanupWithin: Duration.DurationInput
  /** The bus's `redeliverAfter`, where it has one. */
  readonly redeliverAfter?: Duration.DurationInput
}

const event = (n: number, data: unknown = n): EventBus.BusEvent => ({ type: "test", runId: `r${n}`, data })
let serial = 0
/** A channel name no other test uses (the backends share their server between tests). */
const fresh = (name: string) => `${name}.${process.pid}.${Date.now()}.${serial++}`

/** Collects log lines. */
const capturing = () => {
  const lines: Array<string> = []
  const logger = Logger.make(({ message }) => {
    lines.push(Array.isArray(message) ? message.map(String).join(" ") : String(message))
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

const take = <A, E>(stream: Stream.Stream<A, E>, n: number) =>
  Effect.map(Stream.runCollect(Stream.take(stream, n)), Chunk.toArray)

/** Waits until `check` holds, checking every 100 ms, for at most `within`. */
const eventually = <E>(check: Effect.Effect<boolean, E>, within: Duration.DurationInput) =>
  Effect.gen(function*() {
    const deadline = Date.now() + Duration.toMillis(within)
    while (!(yield* check) && Date.now() < deadline) yield* Effect.sleep("100 millis")
  })

/** What a backend can show: a wire (foreign bytes on a channel), members that die alone (other processes). */
export interface Capabilities {
  readonly wire: boolean
  readonly processes: boolean
}

export const busContract = (name: string, enabled: boolean, capabilities: Capabilities, backend: () => BusBackend) =>
  describe.skipIf(!enabled)(`EventBus contract: ${name}`, () => {
    /** Runs `f` with a fresh bus; every log line of the test (the bus's own fibers' too) goes to `lines`. */
    const withBus = <A, E>(
      f: (bus: EventBus.EventBus["Type"], b: BusBackend, lines: ReadonlyArray<string>) => Effect.Effect<A, E, Scope.Scope>
    ) =>
      Effect.suspend(() => {
        const b = backend()
        const log = capturing()
        return Effect.flatMap(EventBus.EventBus, (bus) => f(bus, b, log.lines)).pipe(
          Effect.provide(b.layer),
          Effect.provide(log.layer)
        )
      })

    it.scopedLive("a subscriber gets every event published after it subscribed, in publish order", () =>
      withBus((bus) =>
        Effect.gen(function*() {
          const channel = fresh("order")
          yield* bus.publish(channel, event(-1)) // before anyone subscribed
          const events = yield* bus.subscribe(channel)
          for (let i = 0; i < 200; i++) yield* bus.publish(channel, event(i))
          yield* EventBus.publishAll(bus, channel, Array.from({ length: 300 }, (_, i) => event(200 + i)))
          const got = yield* take(events, 500)
          expect(got.map((e) => e.data)).toEqual(Array.from({ length: 500 }, (_, i) => i))
        })
      ))

    it.scopedLive("every plain subscriber gets every event, in one order, and each publisher's events stay in order", () =>
      withBus((bus) =>
        Effect.gen(function*() {
          const channel = fresh("fanout")
          const a = yield* bus.subscribe(channel)
          const b = yield* bus.subscribe(channel)
          const readA = yield* Effect.fork(take(a, 400))
          const readB = yield* Effect.fork(take(b, 400))
          yield* Effect.forEach([0, 1, 2, 3], (publisher) =>
            Effect.forEach(
              Array.from({ length: 100 }, (_, i) => i),
              (i) => bus.publish(channel, event(publisher, { publisher, i })),
              { discard: true }
            ), { concurrency: "unbounded", discard: true })
          const gotA = (yield* Fiber.join(readA)).map((e) => e.data as { publisher: number; i: number })
          const gotB = (yield* Fiber.join(readB)).map((e) => e.data as { publisher: number; i: number })
          expect(gotA).toEqual(gotB)
          for (const publisher of [0, 1, 2, 3]) {
            expect(gotA.filter((d) => d.publisher === publisher).map((d) => d.i)).toEqual(
              Array.from({ length: 100 }, (_, i) => i)
            )
          }
        })
      ))

    it.scopedLive("members of a group share the events, each to one member; a plain subscriber gets them all", () =>
      withBus((bus) =>
        Effect.gen(function*() {
          const channel = fresh("group")
          const w1 = yield* bus.subscribe(channel, { group: "workers" })
          const w2 = yield* bus.subscribe(channel, { group: "workers" })
          const watcher = yield* bus.subscribe(channel)
          const all = yield* Effect.fork(take(watcher, 100))
          const shared = yield* Effect.fork(take(
            Stream.merge(
              Stream.map(w1, (e) => ["w1", e.data as number] as const),
              Stream.map(w2, (e) => ["w2", e.data as number] as const)
            ),
            100
          ))
          // In ten bursts, so that both members are waiting when events come.
          for (let burst = 0; burst < 10; burst++) {
            yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => burst * 10 + i), (i) => bus.publish(channel, event(i)), {
              discard: true
            })
            yield* Effect.sleep("20 millis")
          }
          const got = yield* Fiber.join(shared)
          expect(got.map(([, n]) => n).sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i))
          expect(new Set(got.map(([worker]) => worker)).size).toBe(2)
          expect((yield* Fiber.join(all)).length).toBe(100)
        })
      ))

    // Only where the backend has it: a bus in one process has no wire and no member that dies alone.
    if (capabilities.processes) {
      it.scopedLive(
        "events a member took and never acknowledged (its process died) go to another member after the lease",
        () =>
          withBus((bus, b) =>
            Effect.gen(function*() {
              const channel = fresh("redeliver")
              // Subscribing joins the group; the survivor reads only once its stream is pulled.
              const survivor = yield* bus.subscribe(channel, { group: "workers" })
              yield* EventBus.publishAll(bus, channel, Array.from({ length: 5 }, (_, i) => event(i)))
              const taken = yield* b.takeAndDie!(channel, "workers", 5)
              expect(taken).toBe(5)
              const started = Date.now()
              const got = yield* take(survivor, 5)
              expect(got.map((e) => e.data)).toEqual([0, 1, 2, 3, 4])
              // They came back only once they had been pending for the lease.
              expect(Date.now() - started).toBeGreaterThanOrEqual(Duration.toMillis(b.redeliverAfter!) * 0.5)
              yield* bus.publish(channel, event(5))
              expect((yield* take(survivor, 1)).map((e) => e.data)).toEqual([5])
            })
          ),
        30_000
      )
    }

    it.scopedLive("a subscription that ended gets nothing more; the others go on", () =>
      withBus((bus) =>
        Effect.gen(function*() {
          const channel = fresh("unsubscribe")
          const kept = yield* bus.subscribe(channel)
          const received: Array<unknown> = []
          yield* Effect.scoped(Effect.gen(function*() {
            const ended = yield* bus.subscribe(channel)
            yield* bus.publish(channel, event(0))
            received.push(...(yield* take(ended, 1)).map((e) => e.data))
          }))
          yield* bus.publish(channel, event(1))
          expect(received).toEqual([0])
          expect((yield* take(kept, 2)).map((e) => e.data)).toEqual([0, 1])
        })
      ))

    // Only where the backend has it: a bus in one process has no wire and no member that dies alone.
    if (capabilities.wire) {
      it.scopedLive("a malformed message is logged as an EventBusError naming the channel, and skipped", () =>
        withBus((bus, b, lines) =>
          Effect.gen(function*() {
            const channel = fresh("garbage")
            const plain = yield* bus.subscribe(channel)
            const member = yield* bus.subscribe(channel, { group: "g" })
            yield* b.publishRaw!(channel, "{ this is not json")
            yield* b.publishRaw!(channel, JSON.stringify({ type: 42, runId: null }))
            yield* bus.publish(channel, event(7))
            const [fromPlain, fromMember] = yield* Effect.all([take(plain, 1), take(member, 1)], {
              concurrency: "unbounded"
            })
            expect(fromPlain.map((e) => e.data)).toEqual([7])
            expect(fromMember.map((e) => e.data)).toEqual([7])
            const text = lines.join("\n")
            expect(text).toContain(`Event bus failure on channel "${channel}": skipping a malformed message`)
            // Each of the two malformed messages (a bus may log one once for all its subscribers in a process).
            expect(lines.filter((line) => line.includes(`channel "${channel}": skipping`)).length).toBeGreaterThanOrEqual(2)
          })
        ))
    }

    it.scopedLive("a payload of 1 MB arrives intact", () =>
      withBus((bus) =>
        Effect.gen(function*() {
          const channel = fresh("large")
          const big = "x".repeat(1024 * 1024)
          const plain = yield* bus.subscribe(channel)
          const member = yield* bus.subscribe(channel, { group: "g" })
          yield* bus.publish(channel, event(1, { big, tail: "é✓" }))
          const [a, m] = yield* Effect.all([take(plain, 1), take(member, 1)], { concurrency: "unbounded" })
          expect(a[0]!.data).toEqual({ big, tail: "é✓" })
          expect(m[0]!.data).toEqual({ big, tail: "é✓" })
        })
      ))

    it.scopedLive("10,000 channels subscribed to, used and left leave nothing behind", () =>
      withBus((bus, b) =>
        Effect.gen(function*() {
          const prefix = fresh("many")
          const names = Array.from({ length: 10_000 }, (_, i) => `${prefix}.${i}`)
          const started = Date.now()
          yield* Effect.forEach(names, (channel, i) =>
            Effect.scoped(Effect.gen(function*() {
              const events = yield* bus.subscribe(channel)
              yield* bus.publish(channel, event(i))
              expect((yield* take(events, 1))[0]!.data).toBe(i)
            })), { concurrency: 100, discard: true })
          const used = Date.now()
          let left = -1
          yield* eventually(
            Effect.map(b.leftovers(names), (n) => {
              left = n
              return n === 0
            }),
            b.cleanupWithin
          )
          expect(left).toBe(0)
          console.log(`${name}: 10,000 channels used in ${used - started} ms, gone ${Date.now() - used} ms later`)
        })
      ), 60_000)
  })
