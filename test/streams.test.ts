import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Layer, Option, Random, Schema, Stream } from "effect"
import { EventBus, Run, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"
import { awaitStatus } from "./scenarios.js"

const N = Schema.Number

/** One step writing `count` chunks to the default stream and as many `writer.write` events, yielding as it goes. */
const writer = (count: number) =>
  Workflow.make({ id: `writes-${count}`, inputSchema: N, outputSchema: N }).pipe(
    Workflow.then(Step.make({
      id: "producer",
      inputSchema: N,
      outputSchema: N,
      execute: ({ inputData, writer }) =>
        Effect.gen(function*() {
          const out = yield* Workflow.getWritable<number>()
          for (let i = 0; i < count; i++) {
            yield* out.write(i)
            yield* writer.write(i)
            if (i % 100 === 0) yield* Effect.yieldNow()
          }
          return inputData
        })
    })),
    Workflow.commit
  )

const step = (id: string, execute: (input: number) => Effect.Effect<number, unknown, Workflow.RunContext>) =>
  Step.make({ id, inputSchema: N, outputSchema: N, execute: ({ inputData }) => execute(inputData) })

const collect = <A, E>(stream: Stream.Stream<A, E>) => Effect.map(Stream.runCollect(stream), Chunk.toArray)

/** Writes "x" to the default stream, then sleeps a minute (without closing the stream). */
const writesXThenSleeps = (id: string) =>
  Workflow.make({ id, inputSchema: N, outputSchema: N }).pipe(
    Workflow.then(step("write", (n) => Effect.as(Effect.flatMap(Workflow.getWritable<string>(), (w) => w.write("x")), n))),
    Workflow.sleep("1 minute"),
    Workflow.commit
  )

/** A memory bus whose subscriptions to run stream channels deliver nothing and then fail, as a dropped broker would. */
const connectionReset = (channel: string) => new EventBus.EventBusError({ channel, reason: "connection reset (simulated)" })

/** A bus without `listen` whose subscriptions to stream channels fail: readers consume them in a fiber. */
const breakingSubscriptions = Layer.effect(
  EventBus.EventBus,
  Effect.map(EventBus.makeMemory, ({ bus }): EventBus.EventBus["Type"] => ({
    publish: bus.publish,
    subscribe: (channel, options) =>
      channel.startsWith("workflow.streams.")
        ? Effect.map(bus.subscribe(channel, options), (events) =>
          Stream.concat(Stream.take(events, 0), Stream.fail(connectionReset(channel))))
        : bus.subscribe(channel, options)
  }))
)

/** A bus whose listeners of stream channels are told, once listening, that the connection is gone. */
const breakingListeners = Layer.effect(
  EventBus.EventBus,
  Effect.map(EventBus.makeMemory, ({ bus }): EventBus.EventBus["Type"] => ({
    ...bus,
    listen: (channel, listener) =>
      Effect.zipRight(
        EventBus.listen(bus, channel, listener),
        channel.startsWith("workflow.streams.")
          ? Effect.asVoid(Effect.forkScoped(Effect.sync(() => listener.failure(connectionReset(channel)))))
          : Effect.void
      )
  }))
)

describe("run streams and readers", () => {
  it.live("readers starting at random moments while a step writes 10,000 chunks see the identical sequence", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const count = 10_000
      const expected = Array.from({ length: count }, (_, i) => i)
      const run = yield* engine.start(writer(count), 0)
      const readers = yield* Effect.forEach(Array.from({ length: 12 }), (_, i) =>
        Effect.fork(Effect.gen(function*() {
          // staggered starts: before, during and (for the last ones) after the writes
          yield* Effect.sleep(`${yield* Random.nextIntBetween(0, 40 + i * 5)} millis`)
          const chunks = yield* collect(run.readable<number>())
          const outputs = (yield* collect(run.events())).flatMap((e) =>
            e.type === "workflow-step-output" ? [(e.payload as { output: number }).output] : []
          )
          return { chunks, outputs }
        })))
      yield* run.result
      const late = yield* collect(run.readable<number>())
      expect(late).toEqual(expected)
      for (const reader of readers) {
        const { chunks, outputs } = yield* Fiber.join(reader)
        expect(chunks).toEqual(expected)
        expect(outputs).toEqual(expected)
      }
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("startIndex skips the first chunks; a negative one reads the last N", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const run = yield* engine.start(writer(10), 0)
      yield* run.result
      expect(yield* collect(run.readable<number>({ startIndex: 7 }))).toEqual([7, 8, 9])
      expect(yield* collect(run.readable<number>({ startIndex: -2 }))).toEqual([8, 9])
      expect(yield* collect(run.readable<number>({ startIndex: -50 }))).toHaveLength(10)
      expect(yield* collect(run.readable<number>({ startIndex: 50 }))).toEqual([])
      expect(yield* run.streamSize()).toBe(10)
      const events = yield* collect(run.events())
      expect(yield* collect(run.events({ startIndex: -1 }))).toEqual([events.at(-1)])
      expect(yield* collect(run.events({ startIndex: 3 }))).toEqual(events.slice(3))
      // right after workflow-finish (a reader resuming after the last event it saw): nothing more, and it ends
      expect(yield* collect(run.events({ startIndex: events.length }))).toEqual([])
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("a startIndex that is not a whole number fails the reader with a RunStreamError", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const run = yield* engine.start(writer(1), 0)
      const error = yield* Effect.flip(collect(run.readable({ startIndex: 1.5 })))
      expect(error._tag).toBe("RunStreamError")
      expect(error.message).toContain("startIndex must be a whole number")
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  for (const [how, breakingBus] of [["subscription", breakingSubscriptions], ["listener", breakingListeners]] as const) {
    it.effect(`a reader whose bus ${how} fails mid-run fails with a RunStreamError naming the bus failure`, () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const wf = writesXThenSleeps(`bus-breaks-${how}`)
        const run = yield* engine.start(wf, 0)
        yield* awaitStatus(run, "waiting")
        const error = yield* Effect.flip(collect(run.readable<string>()))
        expect(error._tag).toBe("RunStreamError")
        expect(error.message).toContain(run.runId)
        expect(error.message).toContain("connection reset (simulated)")
        yield* run.cancel
      }).pipe(Effect.provide(WorkflowEngine.layerDefault.pipe(
        Layer.provideMerge(Layer.merge(breakingBus, RunStore.layerMemory))
      ))))
  }

  it.effect("readers of a finished run read the store only; a reader that catches up with a live run listens once", () => {
    const subscribed: Array<string> = []
    const countingBus = Layer.effect(
      EventBus.EventBus,
      Effect.map(EventBus.makeMemory, ({ bus }): EventBus.EventBus["Type"] => ({
        ...bus,
        subscribe: (channel, options) => Effect.zipRight(Effect.sync(() => subscribed.push(channel)), bus.subscribe(channel, options)),
        listen: (channel, listener) => Effect.zipRight(Effect.sync(() => subscribed.push(channel)), EventBus.listen(bus, channel, listener))
      }))
    )
    return Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const done = yield* engine.start(writer(50), 0)
      yield* done.result
      expect(yield* collect(done.readable<number>())).toHaveLength(50)
      expect(yield* collect(done.events())).toHaveLength(54)
      expect(subscribed.filter((c) => c.endsWith(done.runId))).toEqual([])
      const wf = writesXThenSleeps("live")
      const live = yield* engine.start(wf, 0)
      yield* awaitStatus(live, "waiting")
      const reader = yield* Effect.fork(collect(live.readable<string>()))
      // it has read "x" and caught up: it listens before it waits
      for (let i = 0; i < 1000 && !subscribed.some((c) => c.endsWith(live.runId)); i++) yield* Effect.yieldNow()
      yield* live.cancel
      expect(yield* Fiber.join(reader)).toEqual(["x"])
      expect(subscribed.filter((c) => c.endsWith(live.runId))).toEqual([EventBus.streamChannel(live.runId)])
    }).pipe(Effect.provide(WorkflowEngine.layerDefault.pipe(
      Layer.provideMerge(Layer.merge(countingBus, RunStore.layerMemory))
    )))
  })

  it.effect("a reader of an unclosed stream ends when the run ends", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const wf = writesXThenSleeps("unclosed")
      const run = yield* engine.start(wf, 0)
      const reader = yield* Effect.fork(collect(run.readable<string>()))
      yield* awaitStatus(run, "waiting")
      expect(Option.isNone(yield* Fiber.poll(reader))).toBe(true)
      yield* run.cancel
      expect(yield* Fiber.join(reader)).toEqual(["x"])
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("a reader keeps waiting through a suspension and sees the chunks written after resume", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const wf = Workflow.make({ id: "suspend-stream", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(Step.make({
          id: "pause",
          inputSchema: N,
          outputSchema: N,
          execute: ({ inputData, resumeData, suspend }) =>
            Effect.gen(function*() {
              const out = yield* Workflow.getWritable<string>()
              if (resumeData === undefined) {
                yield* out.write("before")
                return yield* suspend("wait")
              }
              yield* out.write("after")
              return inputData
            })
        })),
        Workflow.commit
      )
      const run = yield* engine.start(wf, 0)
      const reader = yield* Effect.fork(collect(run.readable<string>()))
      yield* Effect.flip(run.result)
      yield* Effect.yieldNow()
      expect(Option.isNone(yield* Fiber.poll(reader))).toBe(true)
      yield* run.resume({ step: "pause", resumeData: "go" })
      yield* run.result
      expect(yield* Fiber.join(reader)).toEqual(["before", "after"])
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("writing after close fails with StreamClosedError naming the stream and the run", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const wf = Workflow.make({ id: "closed", inputSchema: N, outputSchema: Schema.String }).pipe(
        Workflow.map(() =>
          Effect.gen(function*() {
            const logs = yield* Workflow.getWritable<string>({ namespace: "logs" })
            yield* logs.write("one")
            yield* logs.close
            yield* logs.close // closing twice does nothing
            const error = yield* Effect.flip(logs.write("two"))
            // the default stream is another stream: still open
            yield* (yield* Workflow.getWritable<string>()).write("default")
            return error.message
          })
        ),
        Workflow.commit
      )
      const run = yield* engine.start(wf, 0)
      const message = yield* run.result
      expect(message).toBe(`Cannot write to the stream "logs" of run ${run.runId}: it is closed. Write before closing it.`)
      expect(yield* collect(run.readable({ namespace: "logs" }))).toEqual(["one"])
      expect(yield* collect(run.readable())).toEqual(["default"])
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("a run writable takes an Effect stream through its sink and Web code through toWritableStream", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const wf = Workflow.make({ id: "sinks", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(step("pipe", (n) =>
          Effect.gen(function*() {
            const out = yield* Workflow.getWritable<string>()
            yield* Stream.run(Stream.make("a", "b"), out.sink)
            const bytes = yield* Workflow.getWritable<Uint8Array>({ namespace: "bytes" })
            yield* Effect.promise(() =>
              new ReadableStream<Uint8Array>({
                start(controller) {
                  controller.enqueue(new TextEncoder().encode("Hello from step!"))
                  controller.close()
                }
              }).pipeTo(bytes.toWritableStream())
            )
            return n
          }))),
        Workflow.commit
      )
      const run = yield* engine.start(wf, 0)
      yield* run.result
      expect(yield* collect(run.readable())).toEqual(["a", "b"])
      const bytes = yield* collect(run.readable<Uint8Array>({ namespace: "bytes" }))
      expect(new TextDecoder().decode(bytes[0])).toBe("Hello from step!")
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("Run.toReadableStream hands the same items to Web code", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const run = yield* engine.start(writer(5), 0)
      const web = Run.toReadableStream(run.readable<number>())
      const items = yield* Effect.promise(async () => {
        const out: Array<number> = []
        const reader = web.getReader()
        while (true) {
          const { done, value } = await reader.read()
          if (done) return out
          out.push(value)
        }
      })
      expect(items).toEqual([0, 1, 2, 3, 4])
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("Run.toSSE frames each item as a server-sent event", () =>
    Effect.gen(function*() {
      const sse = Run.toSSE(Stream.make({ a: 1 }, "two"))
      const text = yield* Effect.promise(() => new Response(sse).text())
      expect(text).toBe(`data: {"a":1}\n\ndata: "two"\n\n`)
    }))
})

describe("runs the memory store no longer keeps", () => {
  const noneKept = <E>(engine: Layer.Layer<WorkflowEngine.WorkflowEngine, E, EventBus.EventBus | RunStore.RunStore>) =>
    engine.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, RunStore.layerMemoryWith({ maxFinishedRuns: 0 }))))
  const once = Workflow.make({ id: "once", inputSchema: N, outputSchema: N }).pipe(
    Workflow.then(step("double", (n) => Effect.succeed(n * 2))),
    Workflow.commit
  )
  for (const [name, engine] of [["default", WorkflowEngine.layerDefault], ["evented", WorkflowEngine.layerEvented]] as const) {
    it.effect(`${name} engine: a finished run is kept until the next one starts, then its readers fail saying why`, () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const first = yield* engine.start(once, 1)
        // finishing does not drop the run itself: its last events are written and its outcome can be read
        expect(yield* first.result).toBe(2)
        const types = Chunk.toArray(yield* Stream.runCollect(first.events())).map((e) => e.type)
        expect(types.at(-1)).toBe("workflow-finish")
        const second = yield* engine.start(once, 2)
        expect(yield* second.result).toBe(4)
        // the first run is gone now: readers fail with a reason instead of waiting forever or ending empty
        const events = yield* Effect.flip(Stream.runCollect(first.events()))
        expect(events._tag).toBe("RunStreamError")
        expect(events.message).toContain("not in the run store")
        const chunks = yield* Effect.flip(Stream.runCollect(first.readable()))
        expect(chunks.message).toContain("not in the run store")
      }).pipe(Effect.provide(noneKept(engine))))
  }
})

describe("a reader in a process the bus does not reach", () => {
  it.scopedLive("polls the store, backing off while the run is idle, and catches up at once when it moves", () =>
    Effect.gen(function*() {
      const store = yield* RunStore.makeMemory()
      let reads = 0
      const counted = RunStore.RunStore.of({
        ...store,
        readEvents: (runId, from, max) => Effect.zipRight(Effect.sync(() => reads++), store.readEvents(runId, from, max))
      })
      // Two engines over one store, each with a memory bus of its own: as two processes with one SQL store.
      const engine = (bus: Layer.Layer<EventBus.EventBus>) =>
        Layer.build(WorkflowEngine.layerDefault.pipe(Layer.provide(Layer.merge(bus, Layer.succeed(RunStore.RunStore, counted)))))
      const executing = yield* engine(EventBus.layerMemory)
      const reading = yield* engine(EventBus.layerMemory)
      let release: (() => void) | undefined
      const gate = Effect.async<void>((resume) => {
        release = () => resume(Effect.void)
      })
      const wf = Workflow.make({ id: "idle-then-busy", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(step("wait", (n) => Effect.as(gate, n))),
        Workflow.commit
      )
      const run = yield* Effect.flatMap(WorkflowEngine.WorkflowEngine, (e) => e.start(wf, 1)).pipe(Effect.provide(executing))
      const remote = yield* Effect.flatMap(WorkflowEngine.WorkflowEngine, (e) => e.getRun(run.runId)).pipe(
        Effect.provide(reading)
      )
      const events = yield* Effect.fork(Stream.runCollect(remote.events()))
      yield* Effect.sleep("3 seconds")
      const idleReads = reads
      // 100 ms apart, 30 reads; backing off from 100 ms to a second, about 6.
      expect(idleReads).toBeLessThanOrEqual(10)
      release!()
      const started = Date.now()
      const all = yield* Fiber.join(events)
      expect(Chunk.toArray(all).at(-1)?.type).toBe("workflow-finish")
      expect(Date.now() - started).toBeLessThan(1500)
    }))
})
