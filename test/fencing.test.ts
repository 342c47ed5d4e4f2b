/**
 * Exactly-once step commit: each attempt of a step is claimed in the store before its code runs, and everything the
 * execution writes is written under that claim, so that of two executions of one step exactly one reports it. On the
 * memory, SQLite and Postgres stores.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Deferred, Effect, Layer, Logger, LogLevel, Schedule, Schema, Stream } from "effect"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine, WorkflowEvent } from "stepwise"
import { postgresEnabled, postgresStore, sqliteStore } from "./backends.js"

const N = Schema.Number

const storeBackends: ReadonlyArray<{ readonly name: string; readonly layer: Layer.Layer<RunStore.RunStore, unknown> }> = [
  { name: "memory", layer: RunStore.layerMemory },
  { name: "SQLite", layer: sqliteStore },
  ...(postgresEnabled ? [{ name: "Postgres", layer: postgresStore }] : [])
]

/** A store built once in the current scope, to be shared by several engine instances (and restarts). */
const sharedStore = (layer: Layer.Layer<RunStore.RunStore, unknown>) =>
  Effect.map(Layer.build(layer), (context) => Context.get(context, RunStore.RunStore))

/** Builds, in the current scope, an engine instance over this bus and store that registers `workflows`. */
const worker = (
  engine: Layer.Layer<WorkflowEngine.WorkflowEngine, unknown, EventBus.EventBus | RunStore.RunStore>,
  bus: EventBus.EventBus["Type"],
  store: RunStore.RunStore["Type"],
  ...workflows: ReadonlyArray<Workflow.Workflow<string, number, number, unknown, never>>
) =>
  Effect.map(
    Layer.build(Layer.provideMerge(WorkflowEngine.register(...workflows), engine).pipe(
      Layer.provide(Layer.merge(Layer.succeed(EventBus.EventBus, bus), Layer.succeed(RunStore.RunStore, store)))
    )),
    (context) => Context.get(context, WorkflowEngine.WorkflowEngine)
  )

/** The memory bus, except that this subscriber gets the `workflows` commands only once `gate` is open. */
const gated = (memory: EventBus.EventBus["Type"], gate: Deferred.Deferred<void>) =>
  EventBus.EventBus.of({
    ...memory,
    subscribe: (channel, options) =>
      channel === "workflows"
        ? Effect.succeed(Stream.unwrapScoped(Effect.zipRight(Deferred.await(gate), memory.subscribe(channel, options))))
        : memory.subscribe(channel, options)
  })

/** A store whose instance never records a heartbeat: to the others, the instance looks dead (but it is not). */
const silent = (store: RunStore.RunStore["Type"]) => RunStore.RunStore.of({ ...store, heartbeat: () => Effect.void })

const allEvents = (run: { readonly events: () => Stream.Stream<WorkflowEvent.WorkflowEvent, unknown> }) =>
  Effect.map(Stream.runCollect(run.events()), Chunk.toArray)

const within = <A, E, R>(effect: Effect.Effect<A, E, R>, what: string) =>
  Effect.timeoutFail(effect, { duration: "10 seconds", onTimeout: () => `timed out: ${what}` })

for (const backend of storeBackends) {
  describe(`exactly-once step commit, on the ${backend.name} store`, () => {
    it.live("a workflow.step.run delivered twice executes the step's code once, and reports it once", () => {
      const logs: Array<{ readonly level: string; readonly message: string }> = []
      return Effect.gen(function*() {
        // Every step command reaches the group twice (a broker redelivering a message whose consumer looked dead), and
        // two instances share the group: the copies race in one instance or in two.
        const calls = new Map<string, number>()
        const counted = (id: string, k: number) =>
          Step.make({
            id,
            inputSchema: N,
            outputSchema: N,
            execute: ({ inputData, writer }) =>
              Effect.gen(function*() {
                calls.set(id, (calls.get(id) ?? 0) + 1)
                // Long enough for the second copy of the command to arrive while this one runs.
                yield* Effect.sleep("40 millis")
                yield* writer.write(`${id} ran`)
                yield* (yield* Workflow.getWritable<string>()).write(id)
                return inputData + k
              })
          })
        const wf = Workflow.make({ id: `twice-${crypto.randomUUID()}`, inputSchema: N, outputSchema: N }).pipe(
          Workflow.then(counted("a", 1)),
          Workflow.parallel([counted("p", 10), counted("q", 20), counted("r", 30)]),
          Workflow.map(({ inputData }) => Effect.succeed(inputData["p"]! + inputData["q"]! + inputData["r"]!)),
          Workflow.then(counted("b", 1000)),
          Workflow.commit
        )
        const { bus: memory } = yield* EventBus.makeMemory
        let duplicated = 0
        const twice = EventBus.EventBus.of({
          ...memory,
          publish: (channel, event) =>
            channel === "workflows" && event.type === "workflow.step.run"
              ? Effect.zipRight(
                Effect.sync(() => duplicated++),
                Effect.zipRight(memory.publish(channel, event), memory.publish(channel, event))
              )
              : memory.publish(channel, event)
        })
        const store = yield* sharedStore(backend.layer)
        const a = yield* worker(WorkflowEngine.layerEventedWith({ workerId: "worker-a" }), twice, store, wf)
        yield* worker(WorkflowEngine.layerEventedWith({ workerId: "worker-b" }), twice, store, wf)
        const run = yield* a.start(wf, 1)
        // a: 2; p, q, r: 12, 22, 32; map: 66; b: 1066
        expect(yield* within(run.result, "the run")).toBe(1066)
        // Copies still on the bus when the run ended find the steps done.
        yield* Effect.sleep("200 millis")
        expect(duplicated).toBeGreaterThanOrEqual(5)
        expect(Object.fromEntries(calls)).toEqual({ a: 1, p: 1, q: 1, r: 1, b: 1 })
        const events = yield* allEvents(run)
        for (const id of ["a", "p", "q", "r", "b"]) {
          const starts = events.filter(WorkflowEvent.is("workflow-step-start")).filter((e) => e.payload.id === id)
          const results = events.filter(WorkflowEvent.is("workflow-step-result")).filter((e) => e.payload.id === id)
          expect(starts).toHaveLength(1)
          expect(results).toHaveLength(1)
          expect(results[0]!.payload.stepCallId).toBe(starts[0]!.payload.stepCallId)
          const outputs = events.filter(WorkflowEvent.is("workflow-step-output")).filter((e) => e.payload.stepName === id)
          expect(outputs.map((e) => e.payload.output)).toEqual([`${id} ran`])
        }
        const chunks = Chunk.toArray(yield* Stream.runCollect(run.readable<string>()))
        expect([...chunks].sort()).toEqual(["a", "b", "p", "q", "r"])
        // The copies that lost said so, quietly.
        const lost = logs.filter((log) => log.message.includes("is claimed by another execution"))
        expect(lost.length).toBeGreaterThan(0)
        expect(new Set(lost.map((log) => log.level))).toEqual(new Set(["DEBUG"]))
        expect(lost[0]!.message).toMatch(new RegExp(
          `^Run ${run.runId}: step "[abpqr]" \\(path [^)]+\\) is claimed by another execution; ` +
            `this execution \\(attempt 1\\) stops`
        ))
        expect(logs.filter((log) => log.level === "WARN" || log.level === "ERROR")).toEqual([])
      }).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, Logger.make(({ logLevel, message }) => {
          logs.push({ level: logLevel.label, message: (Array.isArray(message) ? message : [message]).map(String).join(" ") })
        }))),
        Logger.withMinimumLogLevel(LogLevel.Debug),
        Effect.scoped
      )
    })

    it.live("a nested workflow that two walks finish at once reports its result once", () =>
      Effect.gen(function*() {
        // The walk executing the nested workflow's last step comes to the nested workflow's end; so does the walk
        // after a sibling's end, which comes while the first is recording it (held up here by the store).
        const lastInnerDone = yield* Deferred.make<void>()
        const add = (id: string) =>
          Step.make({ id, inputSchema: N, outputSchema: N, execute: ({ inputData }) => Effect.succeed(inputData + 1) })
        const inner = Workflow.make({ id: "inner", inputSchema: N, outputSchema: N }).pipe(
          Workflow.then(add("i1")),
          Workflow.then(add("i2")),
          Workflow.commit
        )
        const sibling = Step.make({
          id: "sibling",
          inputSchema: N,
          outputSchema: N,
          execute: ({ inputData }) => Effect.as(Deferred.await(lastInnerDone), inputData)
        })
        const wf = Workflow.make({ id: `nested-${crypto.randomUUID()}`, inputSchema: N, outputSchema: N }).pipe(
          Workflow.parallel([inner, sibling]),
          Workflow.map(({ inputData }) => Effect.succeed(inputData["inner"]! + inputData["sibling"]!)),
          Workflow.commit
        )
        const base = yield* sharedStore(backend.layer)
        const nestedEnd = (record: RunStore.StepRecord) => record.path === "0:inner" && record.status !== "running"
        const store = RunStore.RunStore.of({
          ...base,
          putStep: (runId, record, event, fence) =>
            Effect.zipRight(
              nestedEnd(record) ? Effect.sleep("150 millis") : Effect.void,
              Effect.tap(base.putStep(runId, record, event, fence), () =>
                record.path === "0:inner/1" && record.status === "success" ? Deferred.succeed(lastInnerDone, undefined) : Effect.void)
            ),
          claimStep: (runId, record, expected, event) =>
            Effect.zipRight(nestedEnd(record) ? Effect.sleep("150 millis") : Effect.void, base.claimStep(runId, record, expected, event))
        })
        const { bus } = yield* EventBus.makeMemory
        const a = yield* worker(WorkflowEngine.layerEventedWith({ workerId: "nested-a" }), bus, store, wf)
        const run = yield* a.start(wf, 1)
        expect(yield* within(run.result, "the run")).toBe(4)
        const results = (yield* allEvents(run)).filter(WorkflowEvent.is("workflow-step-result"))
        expect(results.map((e) => e.payload.id).sort()).toEqual(["i1", "i2", "inner", "map-1", "sibling"])
      }).pipe(Effect.scoped))

    it.live("an execution fenced off while it runs has its late result, events and stream writes refused", () =>
      Effect.gen(function*() {
        // worker-a starts the run and executes "long" (attempt 1), then stops reading commands and never heartbeats:
        // to worker-b it looks dead. worker-b takes the run over after the lease, sends "long" again and executes it
        // (attempt 2) to the end, while worker-a's execution is still running. Then worker-a's execution goes on: it
        // writes to the run's stream and its writer and returns. None of it may land.
        const release = yield* Deferred.make<void>()
        const entered = yield* Deferred.make<void>()
        let calls = 0
        let aFinished = false
        let aStopped = false
        const long = Step.make({
          id: "long",
          inputSchema: N,
          outputSchema: N,
          retry: Schedule.recurs(3),
          execute: ({ attempt, inputData, writer }) =>
            Effect.gen(function*() {
              calls++
              const logs = yield* Workflow.getWritable<string>()
              if (attempt === 1) {
                yield* Deferred.succeed(entered, undefined)
                yield* Deferred.await(release)
                for (let i = 0; i < 5; i++) {
                  yield* logs.write(`a-late-${i}`)
                  yield* writer.write(`a-late-${i}`)
                }
                aFinished = true
                return inputData + 1
              }
              for (let i = 0; i < 3; i++) {
                yield* writer.write(`b-${i}`)
                yield* logs.write(`b-${i}`)
              }
              return inputData + 100
            }).pipe(Effect.onExit(() => Effect.sync(() => attempt === 1 && (aStopped = true))))
        })
        const wf = Workflow.make({ id: `fenced-${crypto.randomUUID()}`, inputSchema: N, outputSchema: N }).pipe(
          Workflow.then(long),
          Workflow.then(Step.make({
            id: "after",
            inputSchema: N,
            outputSchema: N,
            execute: ({ inputData }) =>
              Effect.as(Effect.flatMap(Workflow.getWritable<string>(), (logs) => logs.write("after")), inputData * 2)
          })),
          Workflow.commit
        )
        const { bus: memory } = yield* EventBus.makeMemory
        // worker-a reads commands up to the first step's, then no more.
        const deafAfterStep = EventBus.EventBus.of({
          ...memory,
          subscribe: (channel, options) =>
            channel === "workflows"
              ? Effect.map(memory.subscribe(channel, options), Stream.takeUntil((event) => event.type === "workflow.step.run"))
              : memory.subscribe(channel, options)
        })
        const store = yield* sharedStore(backend.layer)
        const gate = yield* Deferred.make<void>()
        const lease = "300 millis"
        const a = yield* worker(WorkflowEngine.layerEventedWith({ workerId: "worker-a", lease }), deafAfterStep, silent(store), wf)
        yield* worker(WorkflowEngine.layerEventedWith({ workerId: "worker-b", lease }), gated(memory, gate), store, wf)
        const run = yield* a.start(wf, 1)
        yield* within(Deferred.await(entered), "worker-a entering the step")
        yield* Deferred.succeed(gate, undefined)
        expect(yield* within(run.result, "worker-b finishing the run")).toBe(202)
        expect((yield* store.getRun(run.runId))?.owner).toBe("worker-b")

        const before = {
          events: (yield* store.readEvents(run.runId, 0, 1000)).events,
          chunks: yield* store.readChunks(run.runId, "", 0, 1000),
          steps: (yield* store.getSteps(run.runId)).steps
        }
        yield* Deferred.succeed(release, undefined)
        for (let i = 0; i < 250 && !aStopped; i++) yield* Effect.sleep("20 millis")
        expect(aStopped).toBe(true)
        // Stopped at its first refused write: not retried, never at its end.
        expect(aFinished).toBe(false)
        expect(calls).toBe(2)
        yield* Effect.sleep("100 millis")

        expect((yield* store.readEvents(run.runId, 0, 1000)).events).toEqual(before.events)
        expect(yield* store.readChunks(run.runId, "", 0, 1000)).toEqual(before.chunks)
        expect((yield* store.getSteps(run.runId)).steps).toEqual(before.steps)
        // The stream: worker-b's values only, densely indexed from 0.
        expect(before.chunks).toEqual({ chunks: ["b-0", "b-1", "b-2", "after"], size: 4, closed: false })
        expect(Chunk.toArray(yield* Stream.runCollect(run.readable<string>()))).toEqual(["b-0", "b-1", "b-2", "after"])
        expect(Chunk.toArray(yield* Stream.runCollect(run.readable<string>({ startIndex: 2 })))).toEqual(["b-2", "after"])
        const events = yield* allEvents(run)
        expect(events.filter(WorkflowEvent.is("workflow-step-output")).map((e) => e.payload.output)).toEqual(["b-0", "b-1", "b-2"])
        const starts = events.filter(WorkflowEvent.is("workflow-step-start")).filter((e) => e.payload.id === "long")
        const results = events.filter(WorkflowEvent.is("workflow-step-result")).filter((e) => e.payload.id === "long")
        // Attempt 1 started (it held the claim then), attempt 2 started and is the one result.
        expect(starts).toHaveLength(2)
        expect(results).toHaveLength(1)
        expect(results[0]!.payload).toMatchObject({ status: "success", output: 101, stepCallId: starts[1]!.payload.stepCallId })
        expect((yield* store.getSteps(run.runId)).steps.find((s) => s.path === "0")).toMatchObject({
          status: "success",
          output: 101,
          attempt: 2
        })
      }).pipe(Effect.scoped))

    it.live("a restarted worker never runs a completed step again, and runs the interrupted one with attempt + 1", () =>
      Effect.gen(function*() {
        const runs: Array<string> = []
        let entered = yield* Deferred.make<void>()
        const step = (id: string, block: boolean) =>
          Step.make({
            id,
            inputSchema: N,
            outputSchema: N,
            execute: ({ attempt, inputData }) =>
              Effect.suspend(() => {
                runs.push(`${id}#${attempt}`)
                return block && attempt === 1
                  ? Effect.zipRight(Deferred.succeed(entered, undefined), Effect.never)
                  : Effect.succeed(inputData + 1)
              })
          })
        const wf = Workflow.make({ id: `restart-${crypto.randomUUID()}`, inputSchema: N, outputSchema: N }).pipe(
          Workflow.then(step("first", false)),
          Workflow.then(step("second", true)),
          Workflow.then(step("third", false)),
          Workflow.commit
        )
        const store = yield* sharedStore(backend.layer)
        for (const engine of ["default", "evented"] as const) {
          runs.length = 0
          entered = yield* Deferred.make<void>()
          const { bus } = yield* EventBus.makeMemory
          // The same name before and after the restart: the restarted worker takes its run back at once.
          const workerId = `restarting-${engine}-${crypto.randomUUID()}`
          const layer = engine === "default"
            ? WorkflowEngine.layerDefaultWith({ workerId })
            : WorkflowEngine.layerEventedWith({ workerId })
          const runId = yield* Effect.scoped(Effect.gen(function*() {
            const run = yield* (yield* worker(layer, bus, store, wf)).start(wf, 1)
            yield* within(Deferred.await(entered), "the second step")
            return run.runId
          }))
          const run = yield* (yield* worker(layer, bus, store, wf)).getRun(runId)
          expect(yield* within(run.result, `the ${engine} engine's restart`)).toBe(4)
          expect(runs).toEqual(["first#1", "second#1", "second#2", "third#1"])
          const starts = (yield* allEvents(run)).filter(WorkflowEvent.is("workflow-step-start")).map((e) => e.payload.id)
          expect(starts).toEqual(["first", "second", "second", "third"])
        }
      }).pipe(Effect.scoped))

    it.live("an owner paused past its lease comes back to find its step taken over: nothing it does lands", () =>
      Effect.gen(function*() {
        // The default engine's worker-a stalls inside "second" without heartbeats; worker-b takes the run over after
        // the lease, runs "second" again and the rest of the run. When worker-a's "second" returns, its result is
        // refused and its walk stops: "third" is never run a second time.
        const release = yield* Deferred.make<void>()
        const entered = yield* Deferred.make<void>()
        const runs: Array<string> = []
        const step = (id: string) =>
          Step.make({
            id,
            inputSchema: N,
            outputSchema: N,
            execute: ({ attempt, inputData }) =>
              Effect.gen(function*() {
                runs.push(`${id}#${attempt}`)
                if (id === "second" && attempt === 1) {
                  yield* Deferred.succeed(entered, undefined)
                  yield* Deferred.await(release)
                }
                return inputData + (id === "second" ? attempt * 10 : 1)
              })
          })
        const wf = Workflow.make({ id: `paused-${crypto.randomUUID()}`, inputSchema: N, outputSchema: N }).pipe(
          Workflow.then(step("first")),
          Workflow.then(step("second")),
          Workflow.then(step("third")),
          Workflow.commit
        )
        const store = yield* sharedStore(backend.layer)
        const { bus } = yield* EventBus.makeMemory
        const lease = "300 millis"
        const a = yield* worker(WorkflowEngine.layerDefaultWith({ workerId: "paused-a", lease }), bus, silent(store), wf)
        const run = yield* a.start(wf, 1)
        yield* within(Deferred.await(entered), "the second step")
        const b = yield* worker(WorkflowEngine.layerDefaultWith({ workerId: "paused-b", lease }), bus, store, wf)
        // first: 2; second (attempt 2): 22; third: 23
        expect(yield* within((yield* b.getRun(run.runId)).result, "worker-b taking the run over")).toBe(23)
        const settled = yield* store.getRun(run.runId)
        const log = (yield* store.readEvents(run.runId, 0, 1000)).events
        yield* Deferred.succeed(release, undefined)
        yield* Effect.sleep("300 millis")
        expect(runs).toEqual(["first#1", "second#1", "second#2", "third#1"])
        expect(yield* store.getRun(run.runId)).toEqual(settled)
        expect((yield* store.readEvents(run.runId, 0, 1000)).events).toEqual(log)
        expect(yield* run.result).toBe(23)
      }).pipe(Effect.scoped))
  })
}

describe("exactly-once step commit leaves a finished step's own writes alone", () => {
  it.live.each(["default", "evented"] as const)(
    "a fiber a step left behind still writes to the run's stream after the step ended (%s engine)",
    (engine) =>
      Effect.gen(function*() {
        const wrote = yield* Deferred.make<void>()
        const wf = Workflow.make({ id: `leftover-${engine}`, inputSchema: N, outputSchema: N }).pipe(
          Workflow.then(Step.make({
            id: "forks",
            inputSchema: N,
            outputSchema: N,
            execute: ({ inputData }) =>
              Effect.gen(function*() {
                const logs = yield* Workflow.getWritable<string>()
                yield* logs.write("in step")
                yield* Effect.forkDaemon(
                  Effect.zipRight(Effect.sleep("50 millis"), Effect.zipRight(logs.write("after step"), Deferred.succeed(wrote, undefined)))
                )
                return inputData + 1
              })
          })),
          Workflow.then(Step.make({
            id: "waits",
            inputSchema: N,
            outputSchema: N,
            execute: ({ inputData }) => Effect.as(Deferred.await(wrote), inputData + 1)
          })),
          Workflow.commit
        )
        const layer = engine === "default" ? WorkflowEngine.layerMemory : WorkflowEngine.layerEventedMemory
        const run = yield* Context.get(yield* Layer.build(layer), WorkflowEngine.WorkflowEngine).start(wf, 1)
        expect(yield* within(run.result, "the run")).toBe(3)
        expect(Chunk.toArray(yield* Stream.runCollect(run.readable<string>()))).toEqual(["in step", "after step"])
      }).pipe(Effect.scoped)
  )
})
