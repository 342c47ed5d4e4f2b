import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Deferred, Effect, Layer, Logger, Schema, Stream, TestClock } from "effect"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine, WorkflowEvent } from "stepwise"
import { Recorded, recordingEventedEngine } from "./helpers.js"
import { postgresEnabled, postgresStore, sqliteStore } from "./backends.js"
import { awaitStatus } from "./scenarios.js"

const N = Schema.Number
const add = (id: string, k: number, onRun?: (input: number) => void) =>
  Step.make({
    id,
    inputSchema: N,
    outputSchema: N,
    execute: ({ inputData }) =>
      Effect.sync(() => {
        onRun?.(inputData)
        return inputData + k
      })
  })

const twoSteps = Workflow.make({ id: "two-steps", inputSchema: N, outputSchema: N }).pipe(
  Workflow.then(add("a", 1)),
  Workflow.then(add("b", 10)),
  Workflow.commit
)

describe("evented engine", () => {
  it.effect("every transition is a command on `workflows`, and the outcome is announced on `workflows-finish`", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const run = yield* engine.start(twoSteps, 1)
      expect(yield* run.result).toBe(12)
      const published = yield* Recorded
      const commands = published.filter((p) => p.channel === "workflows").map((p) => p.event)
      expect(commands.map((c) => c.type)).toEqual([
        "workflow.start",
        "workflow.step.run",
        "workflow.step.end",
        "workflow.step.run",
        "workflow.step.end",
        "workflow.end"
      ])
      expect(commands[1]).toEqual({ type: "workflow.step.run", runId: run.runId, data: { path: "0" } })
      for (const c of commands) expect(Schema.is(WorkflowEngine.Command)(c)).toBe(true)
      // With no tracer, they carry no trace context (see tracing.test.ts); one that carries it decodes.
      const trace = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled: true }
      expect(Schema.is(WorkflowEngine.Command)({ ...commands[1], trace })).toBe(true)
      const finished = published.filter((p) => p.channel === "workflows-finish").map((p) => p.event)
      expect(finished).toEqual([{ type: "workflow.finished", runId: run.runId, data: { status: "success" } }])
    }).pipe(Effect.provide(recordingEventedEngine)))

  it.effect("a map is executed like a step, so canceling the run interrupts a map that is running, at once", () =>
    // A map may do slow work (a model call). Run in the dispatching walk, which holds the run's lock as conditions
    // do, it would hold the cancel back until it ended, and the maps of a parallel's branches would run one by one.
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const entered = yield* Deferred.make<void>()
      let interrupted = false
      const wf = Workflow.make({ id: "slow-map", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(add("a", 1)),
        Workflow.map(() =>
          Effect.zipRight(Deferred.succeed(entered, undefined), Effect.never).pipe(
            Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
          )
        ),
        Workflow.then(add("b", 10)),
        Workflow.commit
      )
      const run = yield* engine.start(wf, 1)
      yield* Deferred.await(entered)
      yield* run.cancel
      expect(interrupted).toBe(true)
      expect(yield* run.status).toBe("canceled")
      const commands = (yield* Recorded).filter((p) => p.channel === "workflows").map((p) => p.event)
      expect(commands).toContainEqual({ type: "workflow.step.run", runId: run.runId, data: { path: "1" } })
    }).pipe(Effect.provide(recordingEventedEngine)))

  const memoryServices = Layer.merge(EventBus.layerMemory, RunStore.layerMemory)
  it.live.each([
    ["evented", "a branch condition"],
    ["evented", "a sleep function"],
    ["default", "a branch condition"],
    ["default", "a sleep function"]
  ] as const)(
    "canceling the run (%s engine) interrupts %s that is running, at once",
    ([kind, where]) =>
      // Conditions and sleep functions run in the walk that holds the run's lock; a cancel waited for that lock, so a
      // condition that never ended made the run impossible to cancel.
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const entered = yield* Deferred.make<void>()
        let interrupted = false
        const slow = Effect.zipRight(Deferred.succeed(entered, undefined), Effect.never).pipe(
          Effect.onInterrupt(() => Effect.sync(() => (interrupted = true)))
        )
        const run = where === "a branch condition"
          ? yield* engine.start(
            Workflow.make({ id: "slow-condition", inputSchema: N, outputSchema: N }).pipe(
              Workflow.then(add("a", 1)),
              Workflow.branch([[() => slow, add("b", 10)]]),
              Workflow.map(() => Effect.succeed(0)),
              Workflow.commit
            ),
            1
          )
          : yield* engine.start(
            Workflow.make({ id: "slow-sleep-function", inputSchema: N, outputSchema: N }).pipe(
              Workflow.then(add("a", 1)),
              Workflow.sleep(() => Effect.as(slow, 1)),
              Workflow.commit
            ),
            1
          )
        yield* Deferred.await(entered)
        yield* Effect.timeoutFail(run.cancel, { duration: "5 seconds", onTimeout: () => "the cancel waited for the walk" })
        expect(interrupted).toBe(true)
        expect(yield* run.status).toBe("canceled")
      }).pipe(Effect.provide(
        kind === "evented" ? recordingEventedEngine : WorkflowEngine.layerDefault.pipe(Layer.provide(memoryServices))
      ))
  )

  it.effect("the maps of a parallel's branches run at the same time: each waits here for the other", () =>
    // Run in the dispatching walk, they would run one after the other, and these two would wait for ever.
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const both = yield* Deferred.make<void>()
      let entered = 0
      const meet = (n: number) =>
        Effect.suspend(() => Effect.zipRight(++entered === 2 ? Deferred.succeed(both, undefined) : Effect.void, Deferred.await(both)))
          .pipe(Effect.as(n * 2))
      const branch = (k: string) =>
        Workflow.make({ id: `meets-${k}`, inputSchema: N, outputSchema: N }).pipe(
          Workflow.then(add(`s${k}`, 1)),
          Workflow.map(({ inputData }) => meet(inputData)),
          Workflow.commit
        )
      const wf = Workflow.make({ id: "maps-meet", inputSchema: N, outputSchema: Schema.Unknown }).pipe(
        Workflow.parallel([branch("1"), branch("2")]),
        Workflow.commit
      )
      const run = yield* engine.start(wf, 1)
      expect(yield* run.result).toEqual({ "meets-1": 4, "meets-2": 4 })
    }).pipe(Effect.provide(recordingEventedEngine)))

  it.effect("malformed or unknown messages on `workflows` are logged with the channel and skipped", () => {
    const logs: Array<string> = []
    const logger = Logger.make(({ message }) => {
      logs.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
    })
    return Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const engine = yield* WorkflowEngine.WorkflowEngine
      const garbage: ReadonlyArray<unknown> = [
        { type: "workflow.step.run", runId: 5, data: { path: "0" } },
        { nonsense: true },
        { type: "workflow.explode", runId: "r", data: {} },
        { type: "workflow.step.end", runId: "r", data: null }
      ]
      for (const g of garbage) yield* bus.publish("workflows", g as EventBus.BusEvent)
      const run = yield* engine.start(twoSteps, 1)
      expect(yield* run.result).toBe(12)
      const skipped = logs.filter((l) => l.includes(`Skipping malformed message on channel "workflows"`))
      expect(skipped).toHaveLength(garbage.length)
    }).pipe(
      Effect.provide(WorkflowEngine.layerEventedMemory),
      Effect.provide(Logger.replace(Logger.defaultLogger, logger))
    )
  })

  it.live("step ends arriving while a walk waits for the run's lock are walked once, together", () => {
    // A store whose run reads take 5 ms, as a database's do: ten parallel steps end while walks are under way.
    const ids = Array.from({ length: 10 }, (_, i) => `p${i}`)
    let executed = 0
    let readsAfterLastStep = 0
    const slowReads = Layer.effect(
      RunStore.RunStore,
      Effect.map(RunStore.makeMemory(), (store) => ({
        ...store,
        getRun: (runId: string) =>
          Effect.zipRight(
            Effect.sync(() => executed === ids.length && readsAfterLastStep++),
            Effect.zipRight(Effect.sleep("5 millis"), store.getRun(runId))
          )
      }))
    )
    const fanOut = Workflow.make({ id: "fan-out-ends", inputSchema: N, outputSchema: Schema.Record({ key: Schema.String, value: N }) })
      .pipe(Workflow.parallel(ids.map((id) => add(id, 1, () => executed++))), Workflow.commit)
    return Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const run = yield* engine.start(fanOut, 1)
      expect(yield* run.result).toEqual(Object.fromEntries(ids.map((id) => [id, 2])))
      // Step ends still queued when the run finished are handled after it: let them.
      yield* Effect.sleep("200 millis")
      // Once the last step ran: a walk or two (each reads the run once), the end and the result's read: 3 here. A
      // walk per step end makes it 11.
      expect(readsAfterLastStep).toBeLessThanOrEqual(6)
      expect(readsAfterLastStep).toBeGreaterThanOrEqual(2)
    }).pipe(
      Effect.provide(WorkflowEngine.layerEvented),
      Effect.provide(Layer.merge(EventBus.layerMemory, slowReads))
    )
  })

  it.effect("two engine instances on one bus share the work, and every step executes exactly once", () =>
    Effect.gen(function*() {
      const executions = new Map<string, number>()
      const counted = (id: string) =>
        add(id, 1, (input) => executions.set(`${id}:${input}`, (executions.get(`${id}:${input}`) ?? 0) + 1))
      const wf = Workflow.make({ id: "shared", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(counted("s1")),
        Workflow.then(counted("s2")),
        Workflow.then(counted("s3")),
        Workflow.commit
      )
      // Count what each subscriber of the `workflows` group receives.
      const { bus: memory } = yield* EventBus.makeMemory
      const deliveries: Array<number> = []
      const countingBus = EventBus.EventBus.of({
        publish: memory.publish,
        subscribe: (channel, options) =>
          Effect.map(memory.subscribe(channel, options), (stream) => {
            if (channel !== "workflows") return stream
            const index = deliveries.push(0) - 1
            return Stream.tap(stream, () => Effect.sync(() => deliveries[index]!++))
          })
      })
      const shared = Layer.merge(Layer.succeed(EventBus.EventBus, countingBus), Layer.succeed(RunStore.RunStore, yield* RunStore.makeMemory()))
      const instance = Layer.provideMerge(WorkflowEngine.register(wf), WorkflowEngine.layerEvented).pipe(Layer.provide(shared))
      const first = yield* Layer.build(instance)
      yield* Layer.build(instance)
      const engine = Context.get(first, WorkflowEngine.WorkflowEngine)
      const runs = yield* Effect.forEach(Array.from({ length: 40 }, (_, i) => i * 100), (i) => engine.start(wf, i))
      const results = yield* Effect.forEach(runs, (run) => run.result, { concurrency: "unbounded" })
      expect(results).toEqual(Array.from({ length: 40 }, (_, i) => i * 100 + 3))
      expect(executions.size).toBe(120)
      expect(Array.from(executions.values()).every((n) => n === 1)).toBe(true)
      expect(deliveries).toHaveLength(2)
      expect(deliveries.every((n) => n > 0)).toBe(true)
    }).pipe(Effect.scoped))

  it.live("a step that outlasts the scan for orphaned runs executes once; a waiting run is not launched again", () =>
    // The run names this worker as its owner. The scan (every half lease) used to take it for a run left by a crash:
    // it launched it again, which dispatched the step still executing a second time.
    Effect.gen(function*() {
      let executions = 0
      const slow = Step.make({
        id: "slow",
        inputSchema: N,
        outputSchema: N,
        execute: ({ inputData }) => Effect.as(Effect.zipRight(Effect.sync(() => executions++), Effect.sleep("1 second")), inputData)
      })
      const wf = Workflow.make({ id: "outlasts-scan", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(slow),
        Workflow.sleep("1 hour"),
        Workflow.commit
      )
      const { bus: memory } = yield* EventBus.makeMemory
      const commands: Array<string> = []
      const recording = EventBus.EventBus.of({
        ...memory,
        publish: (channel, event) =>
          Effect.zipRight(Effect.sync(() => channel === "workflows" && commands.push(event.type)), memory.publish(channel, event))
      })
      const context = yield* Layer.build(WorkflowEngine.layerEventedWith({ lease: "200 millis" }).pipe(
        Layer.provide(Layer.merge(Layer.succeed(EventBus.EventBus, recording), RunStore.layerMemory))
      ))
      const run = yield* Context.get(context, WorkflowEngine.WorkflowEngine).start(wf, 1)
      // about ten scans while the step runs, and as many while the run waits in its sleep
      for (let i = 0; i < 250 && (yield* run.status) !== "waiting"; i++) yield* Effect.sleep("20 millis")
      expect(yield* run.status).toBe("waiting")
      yield* Effect.sleep("1 second")
      expect(executions).toBe(1)
      expect(commands.filter((c) => c === "workflow.step.run")).toHaveLength(1) // the sleep's comes when it is due
      expect(commands).not.toContain("workflow.resume")
      const starts = (yield* Stream.runCollect(Stream.take(run.events(), 3))).pipe(Chunk.toArray)
        .filter((e) => e.type === "workflow-step-start")
      expect(starts).toHaveLength(1)
      yield* run.cancel
    }).pipe(Effect.scoped))

  const nestsTwoSteps = Workflow.make({ id: "nests-two-steps", inputSchema: N, outputSchema: N }).pipe(
    Workflow.then(twoSteps),
    Workflow.commit
  )
  it.live.each([["a step", twoSteps], ["a step of a nested workflow", nestsTwoSteps]] as const)(
    "a run whose end of %s never came is walked on by its owner after the lease",
    ([, wf]) =>
      Effect.gen(function*() {
        // The bus loses the first step's end (its executor crashed after recording the result, say): nothing else
        // would ever walk the run again while its owner lives.
        const { bus: memory } = yield* EventBus.makeMemory
        let dropped = 0
        const lossy = EventBus.EventBus.of({
          ...memory,
          publish: (channel, event) =>
            channel === "workflows" && event.type === "workflow.step.end" && dropped++ === 0 ? Effect.void : memory.publish(channel, event)
        })
        const context = yield* Layer.build(WorkflowEngine.layerEventedWith({ lease: "300 millis" }).pipe(
          Layer.provide(Layer.merge(Layer.succeed(EventBus.EventBus, lossy), RunStore.layerMemory))
        ))
        const run = yield* Context.get(context, WorkflowEngine.WorkflowEngine).start(wf, 1)
        expect(yield* Effect.timeoutFail(run.result, { duration: "10 seconds", onTimeout: () => "the run stalled" })).toBe(12)
        expect(dropped).toBeGreaterThan(1)
      }).pipe(Effect.scoped))

  it.live("a step command that a stopping worker took but had not started goes back to the group", () =>
    Effect.gen(function*() {
      // worker-b takes every command until it stops; its store never answers once b has dispatched the first step, so
      // b stops before it has recorded that step as its own. Lost, the command left the run waiting while its owner
      // (worker-a) lived; the lease is long, so only the hand-back can save it.
      const { bus: memory } = yield* EventBus.makeMemory
      const store = yield* RunStore.makeMemory()
      const gate = yield* Deferred.make<void>()
      const reading = yield* Deferred.make<void>()
      let stalled = false
      const dispatching = EventBus.EventBus.of({
        ...memory,
        publish: (channel, event) =>
          Effect.zipRight(Effect.sync(() => event.type === "workflow.step.run" && (stalled = true)), memory.publish(channel, event))
      })
      const stalling = RunStore.RunStore.of({
        ...store,
        getRun: (runId) => stalled ? Effect.zipRight(Deferred.succeed(reading, undefined), Effect.never) : store.getRun(runId)
      })
      const a = yield* eventedWorker({ workerId: "worker-a", lease: "1 minute" }, gatedBus(memory, gate), store, twoSteps)
      const run = yield* Effect.scoped(Effect.gen(function*() {
        yield* eventedWorker({ workerId: "worker-b", lease: "1 minute" }, dispatching, stalling, twoSteps)
        const run = yield* a.start(twoSteps, 1)
        yield* Deferred.await(reading)
        // worker-a joins the group before b stops (a group that loses its last member loses its queue)
        yield* Deferred.succeed(gate, undefined)
        return run
      }))
      expect(yield* Effect.timeoutFail(run.result, { duration: "5 seconds", onTimeout: () => "the run stalled" })).toBe(12)
    }).pipe(Effect.scoped))

  it.live("an instance that does not register the run's workflow hands its commands back to the group", () =>
    Effect.gen(function*() {
      // worker-c registers nothing. It takes the run's first command while worker-a (the owner) reads none, and hands
      // it back until worker-a reads too; dropping it left the run pending for as long as worker-a lived.
      const { bus: memory } = yield* EventBus.makeMemory
      const store = yield* RunStore.makeMemory()
      const gate = yield* Deferred.make<void>()
      const handedBack: Array<string> = []
      const recording = EventBus.EventBus.of({
        ...memory,
        publish: (channel, event) =>
          Effect.zipRight(
            Effect.sync(() => (event as { handBacks?: number }).handBacks !== undefined && handedBack.push(event.type)),
            memory.publish(channel, event)
          )
      })
      yield* eventedWorker({ workerId: "worker-c" }, recording, store)
      const a = yield* eventedWorker({ workerId: "worker-a" }, gatedBus(recording, gate), store, twoSteps)
      const run = yield* a.start(twoSteps, 1)
      for (let i = 0; i < 100 && handedBack.length < 2; i++) yield* Effect.sleep("10 millis")
      expect(handedBack.slice(0, 2)).toEqual(["workflow.start", "workflow.start"])
      expect(yield* run.status).toBe("pending")
      yield* Deferred.succeed(gate, undefined)
      expect(yield* Effect.timeoutFail(run.result, { duration: "10 seconds", onTimeout: () => "the run stalled" })).toBe(12)
    }).pipe(Effect.scoped))

  it.effect("the step ends taken in one pull from the bus come to one walk", () =>
    Effect.gen(function*() {
      // Every handler reads the run once: 200 executions, plus one read per walk and a few for start and end.
      let reads = 0
      const store = yield* RunStore.makeMemory()
      const counting = RunStore.RunStore.of({ ...store, getRun: (runId) => Effect.zipRight(Effect.sync(() => reads++), store.getRun(runId)) })
      const items = Array.from({ length: 200 }, (_, i) => i)
      const wf = Workflow.make({ id: "wide-foreach", inputSchema: Schema.Array(N), outputSchema: Schema.Array(N) }).pipe(
        Workflow.foreach(add("item", 1), { concurrency: items.length }),
        Workflow.commit
      )
      const context = yield* Layer.build(WorkflowEngine.layerEvented.pipe(
        Layer.provide(Layer.merge(EventBus.layerMemory, Layer.succeed(RunStore.RunStore, counting)))
      ))
      const run = yield* Context.get(context, WorkflowEngine.WorkflowEngine).start(wf, items)
      expect(yield* run.result).toEqual(items.map((i) => i + 1))
      // A walk per step end makes it over 400.
      expect(reads).toBeLessThan(300)
    }).pipe(Effect.scoped))

  it.live("a step record another process wrote is seen by the next walk, though this one keeps the run's records", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const wf = Workflow.make({ id: "finished-elsewhere", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(Step.make({
          id: "slow",
          inputSchema: N,
          outputSchema: N,
          execute: () => Effect.zipRight(Deferred.succeed(started, undefined), Effect.never)
        })),
        Workflow.then(add("next", 1)),
        Workflow.commit
      )
      const { bus } = yield* EventBus.makeMemory
      const store = yield* RunStore.makeMemory()
      const context = yield* Layer.build(WorkflowEngine.layerEvented.pipe(
        Layer.provide(Layer.merge(Layer.succeed(EventBus.EventBus, bus), Layer.succeed(RunStore.RunStore, store)))
      ))
      const run = yield* Context.get(context, WorkflowEngine.WorkflowEngine).start(wf, 1)
      yield* Deferred.await(started)
      // Another worker (which took the step over) records its result and reports its end, as the engine would.
      const version = (yield* store.getRun(run.runId))?.stepsVersion ?? 0
      expect(yield* store.putStep(run.runId, { path: "0", stepId: "slow", status: "success", output: 100 })).toBe(version + 1)
      yield* bus.publish("workflows", { type: "workflow.step.end", runId: run.runId, data: { path: "0" } })
      // Walked on records cached before that write, the run would wait for "slow" for ever.
      expect(yield* Effect.timeoutFail(run.result, { duration: "5 seconds", onTimeout: () => "the walk missed the write" }))
        .toBe(101)
    }).pipe(Effect.scoped))
})

const storeBackends: ReadonlyArray<{ readonly name: string; readonly layer: Layer.Layer<RunStore.RunStore, unknown> }> = [
  { name: "memory", layer: RunStore.layerMemory },
  { name: "SQLite", layer: sqliteStore },
  ...(postgresEnabled ? [{ name: "Postgres", layer: postgresStore }] : [])
]

// Each test names its workflow afresh: the Postgres database keeps the runs of earlier test runs, which the
// workers would otherwise take over.
for (const backend of storeBackends) {
  describe(`the evented engine with instances that stop, on the ${backend.name} store`, () => {
    it.live.each([
      ["crashes", "after the lease"],
      ["stops", "at once: the stopping worker hands it back"],
      // Its new process heartbeats under the same workerId, which must not pass for the dead one's.
      ["crashes and comes back at once under its name", "after the lease"]
    ] as const)("a step whose executing worker %s while the run's owner lives is executed again %s", ([how]) =>
      Effect.gen(function*() {
        // worker-a starts the run and owns it; worker-b takes every command (worker-a reads none until b is gone),
        // so the step executes on b, which stops inside it: gracefully, or as in a crash, where nothing it would
        // still publish reaches the bus (the lease is then what tells). A long lease shows a graceful stop does not
        // wait for it.
        let calls = 0
        const entered = yield* Deferred.make<void>()
        const wf = Workflow.make({ id: `executor-stops-${crypto.randomUUID()}`, inputSchema: N, outputSchema: N }).pipe(
          Workflow.then(Step.make({
            id: "long",
            inputSchema: N,
            outputSchema: N,
            execute: ({ inputData }) =>
              Effect.suspend(() =>
                ++calls === 1 ? Effect.zipRight(Deferred.succeed(entered, undefined), Effect.never) : Effect.succeed(inputData + 1)
              )
          })),
          Workflow.then(add("after", 10)),
          Workflow.commit
        )
        const { bus: memory } = yield* EventBus.makeMemory
        const store = Context.get(yield* Layer.build(backend.layer), RunStore.RunStore)
        const gate = yield* Deferred.make<void>()
        const gated = gatedBus(memory, gate)
        let dead = false
        const mortal = EventBus.EventBus.of({
          ...memory,
          publish: (channel, event) => dead ? Effect.void : memory.publish(channel, event)
        })
        const crashes = how !== "stops"
        const lease = crashes ? "300 millis" : "1 minute"
        const a = yield* eventedWorker({ workerId: "worker-a", lease }, gated, store, wf)
        const run = yield* Effect.scoped(Effect.gen(function*() {
          yield* eventedWorker({ workerId: "worker-b", lease }, mortal, store, wf)
          const run = yield* a.start(wf, 1)
          yield* Deferred.await(entered)
          dead = crashes
          // worker-a joins the group before b stops (a group that loses its last member loses its queue)
          yield* Deferred.succeed(gate, undefined)
          return run
        }))
        if (how === "crashes and comes back at once under its name") {
          yield* eventedWorker({ workerId: "worker-b", lease }, memory, store, wf)
        }
        expect((yield* store.getRun(run.runId))?.owner).toBe("worker-a")
        expect(yield* Effect.timeoutFail(run.result, { duration: "5 seconds", onTimeout: () => "the run stalled" }))
          .toBe(12)
        expect(calls).toBe(2)
      }).pipe(Effect.scoped))

    it.live("a run taken over from its silent owner leaves a step that a live worker executes to that worker", () =>
      Effect.gen(function*() {
        // worker-a starts the run and stops; worker-b, which executes its step, takes the run over after the lease.
        // The takeover sends again only the steps that lost their executor: this one has not.
        let calls = 0
        const entered = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const wf = Workflow.make({ id: `owner-stops-${crypto.randomUUID()}`, inputSchema: N, outputSchema: N }).pipe(
          Workflow.then(Step.make({
            id: "long",
            inputSchema: N,
            outputSchema: N,
            execute: ({ inputData }) =>
              Effect.suspend(() => {
                calls++
                return Effect.as(Effect.zipRight(Deferred.succeed(entered, undefined), Deferred.await(release)), inputData + 1)
              })
          })),
          Workflow.then(add("after", 10)),
          Workflow.commit
        )
        const { bus: memory } = yield* EventBus.makeMemory
        const store = Context.get(yield* Layer.build(backend.layer), RunStore.RunStore)
        const deaf = EventBus.EventBus.of({
          publish: memory.publish,
          subscribe: (channel, options) => channel === "workflows" ? Effect.succeed(Stream.never) : memory.subscribe(channel, options)
        })
        const b = yield* eventedWorker({ workerId: "worker-b", lease: "300 millis" }, memory, store, wf)
        const runId = yield* Effect.scoped(Effect.gen(function*() {
          const run = yield* (yield* eventedWorker({ workerId: "worker-a", lease: "300 millis" }, deaf, store, wf)).start(wf, 1)
          yield* Deferred.await(entered)
          return run.runId
        }))
        for (let i = 0; i < 100 && (yield* store.getRun(runId))?.owner !== "worker-b"; i++) yield* Effect.sleep("20 millis")
        expect((yield* store.getRun(runId))?.owner).toBe("worker-b")
        // the takeover's walk, and a few of worker-b's checks for lost steps
        yield* Effect.sleep("600 millis")
        expect(calls).toBe(1)
        yield* Deferred.succeed(release, undefined)
        expect(yield* (yield* b.getRun(runId)).result).toBe(12)
        expect(calls).toBe(1)
      }).pipe(Effect.scoped))
  })
}

/**
 * Builds, in the current scope, an evented engine instance over this bus and store that registers `workflows` (the
 * workflows' services must be none).
 */
const eventedWorker = (
  options: WorkflowEngine.Options,
  bus: EventBus.EventBus["Type"],
  store: RunStore.RunStore["Type"],
  ...workflows: ReadonlyArray<Workflow.Workflow<string, number, number, never, never>>
) =>
  Effect.map(
    Layer.build(Layer.provideMerge(WorkflowEngine.register(...workflows), WorkflowEngine.layerEventedWith(options)).pipe(
      Layer.provide(Layer.merge(Layer.succeed(EventBus.EventBus, bus), Layer.succeed(RunStore.RunStore, store)))
    )),
    (context) => Context.get(context, WorkflowEngine.WorkflowEngine)
  )

/** The memory bus, except that the `workflows` commands reach this subscriber only once `gate` is open. */
const gatedBus = (memory: EventBus.EventBus["Type"], gate: Deferred.Deferred<void>) =>
  EventBus.EventBus.of({
    ...memory,
    subscribe: (channel, options) =>
      channel === "workflows"
        ? Effect.succeed(Stream.unwrapScoped(Effect.zipRight(Deferred.await(gate), memory.subscribe(channel, options))))
        : memory.subscribe(channel, options)
  })

const engineKinds = [
  ["default", WorkflowEngine.layerDefaultWith],
  ["evented", WorkflowEngine.layerEventedWith]
] as const

const sleeper = (afterSleep: Array<number>) =>
  Workflow.make({ id: "survives", inputSchema: N, outputSchema: N }).pipe(
    Workflow.then(add("before", 1)),
    Workflow.sleep("1 hour"),
    Workflow.then(add("after", 10, (n) => afterSleep.push(n))),
    Workflow.commit
  )

const sharedMemory = Effect.map(
  Effect.all([EventBus.makeMemory, RunStore.makeMemory()]),
  ([{ bus }, store]) => ({
    store,
    layer: Layer.merge(Layer.succeed(EventBus.EventBus, bus), Layer.succeed(RunStore.RunStore, store))
  })
)

/** Starts a run on one instance and leaves it waiting; the instance is gone when this returns. */
const startAndDie = (engine: Layer.Layer<WorkflowEngine.WorkflowEngine, unknown>, wf: ReturnType<typeof sleeper>) =>
  Effect.scoped(Effect.gen(function*() {
    const run = yield* Context.get(yield* Layer.build(engine), WorkflowEngine.WorkflowEngine).start(wf, 1)
    yield* awaitStatus(run, "waiting")
    return run.runId
  }))

for (const [name, layerWith] of engineKinds) {
  describe(`the ${name} engine keeps no run state of its own`, () => {
    it.effect("a restarted worker (same workerId) takes its waiting run back at once and finishes it", () =>
      Effect.gen(function*() {
        const afterSleep: Array<number> = []
        const wf = sleeper(afterSleep)
        const engine = (layerWith({ workerId: "worker-1" }) as Layer.Layer<WorkflowEngine.WorkflowEngine, unknown, EventBus.EventBus | RunStore.RunStore>)
          .pipe(Layer.provide((yield* sharedMemory).layer))
        const runId = yield* startAndDie(engine, wf)
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(Layer.provideMerge(WorkflowEngine.register(wf), engine))
          const run = yield* Context.get(context, WorkflowEngine.WorkflowEngine).getRun(runId)
          yield* awaitStatus(run, "waiting")
          yield* TestClock.adjust("1 hour")
          expect(yield* run.result).toBe(12)
          expect(afterSleep).toEqual([2])
          const types = Array.from(yield* Stream.runCollect(run.events())).map((e) => e.type)
          expect(types.filter((t) => t === "workflow-step-waiting")).toHaveLength(1)
          expect(types.filter((t) => t === "workflow-step-start")).toHaveLength(2)
        }))
      }))

    it.effect("a map that a stopped worker was running is run again when the run is taken back", () =>
      Effect.gen(function*() {
        let calls = 0
        const entered = yield* Deferred.make<void>()
        const wf = Workflow.make({ id: "stuck-map", inputSchema: N, outputSchema: N }).pipe(
          Workflow.then(add("before", 1)),
          Workflow.map(({ inputData }) =>
            Effect.suspend(() => ++calls === 1 ? Effect.zipRight(Deferred.succeed(entered, undefined), Effect.never) : Effect.succeed(inputData * 2))),
          Workflow.then(add("after", 10)),
          Workflow.commit
        )
        const engine = (layerWith({ workerId: "worker-1" }) as Layer.Layer<WorkflowEngine.WorkflowEngine, unknown, EventBus.EventBus | RunStore.RunStore>)
          .pipe(Layer.provide((yield* sharedMemory).layer))
        // the first worker stops (its scope closes) while the map runs
        const runId = yield* Effect.scoped(Effect.gen(function*() {
          const run = yield* Context.get(yield* Layer.build(engine), WorkflowEngine.WorkflowEngine).start(wf, 1)
          yield* Deferred.await(entered)
          return run.runId
        }))
        const run = yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(Layer.provideMerge(WorkflowEngine.register(wf), engine))
          const run = yield* Context.get(context, WorkflowEngine.WorkflowEngine).getRun(runId)
          expect(yield* run.result).toBe(14)
          return run
        }))
        expect(calls).toBe(2)
        const started = Array.from(yield* Stream.runCollect(run.events()))
          .filter(WorkflowEvent.is("workflow-step-start"))
          .map((e) => e.payload.id)
        expect(started).toEqual(["before", "map-1", "map-1", "after"])
      }))

    it.effect("another worker takes a run over once its owner has been silent for the lease", () =>
      Effect.gen(function*() {
        const afterSleep: Array<number> = []
        const wf = sleeper(afterSleep)
        const shared = yield* sharedMemory
        const engine = (id: string) =>
          (layerWith({ workerId: id, lease: "300 millis" }) as Layer.Layer<WorkflowEngine.WorkflowEngine, unknown, EventBus.EventBus | RunStore.RunStore>)
            .pipe(Layer.provide(shared.layer))
        const runId = yield* startAndDie(engine("worker-a"), wf)
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(Layer.provideMerge(WorkflowEngine.register(wf), engine("worker-b")))
          const store = shared.store
          // not at once: worker-a's heartbeat is fresh
          expect((yield* store.getRun(runId))?.owner).toBe("worker-a")
          // after the lease (real time), worker-b's periodic scan claims it
          for (let i = 0; i < 100 && (yield* store.getRun(runId))?.owner !== "worker-b"; i++) {
            yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 50)))
          }
          expect((yield* store.getRun(runId))?.owner).toBe("worker-b")
          const run = yield* Context.get(context, WorkflowEngine.WorkflowEngine).getRun(runId)
          yield* awaitStatus(run, "waiting")
          yield* TestClock.adjust("1 hour")
          expect(yield* run.result).toBe(12)
          expect(afterSleep).toEqual([2])
        }))
      }))
  })
}
