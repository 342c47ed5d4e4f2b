import { describe, expect, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Exit, Fiber, Logger, Schema, Stream } from "effect"
import { EventBus, Step, Workflow, WorkflowEngine } from "stepwise"

const event = (n: number): EventBus.BusEvent => ({ type: "test", runId: "r", data: n })

describe("EventBus.layerMemory", () => {
  it.scoped("delivers what is published after subscribing, to every subscriber", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      yield* bus.publish("c", event(0)) // nobody listens: dropped
      const a = yield* bus.subscribe("c")
      const b = yield* bus.subscribe("c")
      yield* bus.publish("c", event(1))
      yield* bus.publish("c", event(2))
      expect(Chunk.toArray(yield* Stream.runCollect(Stream.take(a, 2)))).toEqual([event(1), event(2)])
      expect(Chunk.toArray(yield* Stream.runCollect(Stream.take(b, 2)))).toEqual([event(1), event(2)])
    }).pipe(Effect.provide(EventBus.layerMemory)))

  it.scoped("subscribers in one group share the events; a subscriber without a group gets them all", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const w1 = yield* bus.subscribe("work", { group: "workers" })
      const w2 = yield* bus.subscribe("work", { group: "workers" })
      const watcher = yield* bus.subscribe("work")
      const all = yield* Effect.fork(Stream.runCollect(Stream.take(watcher, 100)))
      const shared = yield* Effect.fork(Stream.runCollect(Stream.take(
        Stream.merge(
          Stream.map(w1, (e) => ["w1", e.data as number] as const),
          Stream.map(w2, (e) => ["w2", e.data as number] as const)
        ),
        100
      )))
      for (let i = 0; i < 100; i++) yield* bus.publish("work", event(i))
      const got = Chunk.toArray(yield* Fiber.join(shared))
      expect(got.map(([, n]) => n).sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i))
      expect(new Set(got.map(([worker]) => worker)).size).toBe(2)
      expect(Chunk.size(yield* Fiber.join(all))).toBe(100)
    }).pipe(Effect.provide(EventBus.layerMemory)))

  it.scoped("publishAll delivers a batch in order to every subscriber and to one member of each group", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      yield* EventBus.publishAll(bus, "batch", [event(-1)]) // nobody listens: dropped
      const plain = yield* bus.subscribe("batch")
      const member = yield* bus.subscribe("batch", { group: "g" })
      const batch = Array.from({ length: 50 }, (_, i) => event(i))
      expect(bus.publishAll).toBeDefined()
      yield* EventBus.publishAll(bus, "batch", batch)
      yield* EventBus.publishAll(bus, "batch", [])
      yield* bus.publish("batch", event(50))
      const expected = [...batch, event(50)]
      expect(Chunk.toArray(yield* Stream.runCollect(Stream.take(plain, 51)))).toEqual(expected)
      expect(Chunk.toArray(yield* Stream.runCollect(Stream.take(member, 51)))).toEqual(expected)
    }).pipe(Effect.provide(EventBus.layerMemory)))

  it.scoped("publishAll falls back on publish, one by one, for a bus without publishAll", () =>
    Effect.gen(function*() {
      const { bus } = yield* EventBus.makeMemory
      const calls: Array<number> = []
      const minimal: EventBus.EventBus["Type"] = {
        publish: (channel, e) => Effect.zipRight(Effect.sync(() => calls.push(e.data as number)), bus.publish(channel, e)),
        subscribe: bus.subscribe
      }
      const sub = yield* minimal.subscribe("c")
      yield* EventBus.publishAll(minimal, "c", [event(1), event(2), event(3)])
      expect(calls).toEqual([1, 2, 3])
      expect(Chunk.toArray(yield* Stream.runCollect(Stream.take(sub, 3)))).toEqual([event(1), event(2), event(3)])
    }))

  it.effect("a channel exists while it has subscribers and is removed when the last one leaves", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const channels = yield* EventBus.MemoryChannels
      yield* bus.publish("lonely", event(1))
      expect(yield* channels.size).toBe(0)
      yield* Effect.scoped(Effect.gen(function*() {
        yield* bus.subscribe("one")
        yield* bus.subscribe("one")
        yield* bus.subscribe("two", { group: "g" })
        expect(yield* channels.size).toBe(2)
      }))
      expect(yield* channels.size).toBe(0)
    }).pipe(Effect.provide(EventBus.layerMemory)))

  it.effect("after 10,000 completed runs, each read by a reader, no channel is left", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const channels = yield* EventBus.MemoryChannels
      const wf = Workflow.make({ id: "many", inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
        Workflow.then(Step.make({
          id: "echo",
          inputSchema: Schema.Number,
          outputSchema: Schema.Number,
          execute: ({ inputData, writer }) => Effect.as(writer.write(inputData), inputData)
        })),
        Workflow.commit
      )
      yield* Effect.forEach(Array.from({ length: 10_000 }, (_, i) => i), (i) =>
        Effect.gen(function*() {
          const run = yield* engine.start(wf, i)
          const events = yield* Stream.runCollect(run.events())
          expect(Chunk.size(events)).toBe(5)
          yield* run.result
          yield* Stream.runDrain(run.readable())
        }), { concurrency: 50, discard: true })
      expect(yield* channels.size).toBe(0)
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("decodeIncoming skips a malformed event with a warning naming the channel", () =>
    Effect.gen(function*() {
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => logs.push(Array.isArray(message) ? message.join(" ") : String(message)))
      const good = yield* EventBus.decodeIncoming("workflows", { type: "x", runId: "r", data: 1 })
      const bad = yield* EventBus.decodeIncoming("workflows", { type: 42 }).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, logger))
      )
      expect(good).toEqual({ type: "x", runId: "r", data: 1 })
      expect(bad).toBeUndefined()
      expect(logs.join("\n")).toContain(`Event bus failure on channel "workflows": skipping a malformed message`)
    }))

  it.effect("a listener gets each publish's events in the publisher's call, until its scope closes", () =>
    Effect.gen(function*() {
      const { bus, channels } = yield* EventBus.makeMemory
      const got: Array<ReadonlyArray<number>> = []
      const listener: EventBus.Listener = {
        events: (events) => got.push(events.map((e) => e.data as number)),
        failure: () => got.push([-1])
      }
      yield* Effect.scoped(Effect.gen(function*() {
        yield* EventBus.listen(bus, "c", listener)
        expect(yield* channels.size).toBe(1) // a listener keeps its channel
        const plain = yield* bus.subscribe("c")
        yield* bus.publish("c", event(1))
        expect(got).toEqual([[1]]) // delivered by the time publish returns
        yield* EventBus.publishAll(bus, "c", [event(2), event(3)])
        yield* EventBus.publishAll(bus, "c", [])
        expect(got).toEqual([[1], [2, 3]])
        // subscribers of the same channel still get everything
        expect(Chunk.toArray(yield* Stream.runCollect(Stream.take(plain, 3)))).toEqual([event(1), event(2), event(3)])
      }))
      expect(yield* channels.size).toBe(0)
      yield* bus.publish("c", event(4))
      expect(got).toEqual([[1], [2, 3]])
    }))

  it.effect("a listener that throws is logged with its channel; the other listeners and the publish go on", () =>
    Effect.gen(function*() {
      const { bus } = yield* EventBus.makeMemory
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => logs.push(Array.isArray(message) ? message.join(" ") : String(message)))
      const got: Array<number> = []
      yield* Effect.scoped(Effect.gen(function*() {
        yield* EventBus.listen(bus, "c", {
          events: () => {
            throw new Error("listener bug")
          },
          failure: () => {}
        })
        yield* EventBus.listen(bus, "c", { events: (events) => got.push(events.length), failure: () => {} })
        yield* bus.publish("c", event(1)).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      }))
      expect(got).toEqual([1])
      expect(logs.join("\n")).toContain(`A listener of channel "c" threw`)
      expect(logs.join("\n")).toContain("listener bug")
    }))

  it.scoped("EventBus.listen goes through subscribe on a bus without listen; a failed subscription goes to failure", () =>
    Effect.gen(function*() {
      const { bus } = yield* EventBus.makeMemory
      const reset = new EventBus.EventBusError({ channel: "c", reason: "connection reset (simulated)" })
      const failing = yield* Deferred.make<void>()
      const minimal: EventBus.EventBus["Type"] = {
        publish: bus.publish,
        subscribe: (channel) =>
          Effect.map(bus.subscribe(channel), (events) =>
            Stream.concat(
              Stream.take(events, 2),
              Stream.unwrap(Effect.as(Deferred.await(failing), Stream.fail(reset)))
            ))
      }
      const got: Array<number> = []
      const failures: Array<EventBus.EventBusError> = []
      const done = yield* Deferred.make<void>()
      yield* EventBus.listen(minimal, "c", {
        events: (events) => {
          for (const e of events) got.push(e.data as number)
        },
        failure: (error) => {
          failures.push(error)
          Deferred.unsafeDone(done, Exit.void)
        }
      })
      yield* EventBus.publishAll(minimal, "c", [event(1), event(2)])
      for (let i = 0; i < 100 && got.length < 2; i++) yield* Effect.yieldNow()
      expect(got).toEqual([1, 2])
      expect(failures).toEqual([])
      yield* Deferred.succeed(failing, undefined)
      yield* Deferred.await(done)
      expect(failures).toEqual([reset])
    }))
})
