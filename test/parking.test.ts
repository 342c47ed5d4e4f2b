/**
 * Long sleeps park their run: the default engine's walk stops at the sleep, the run holds no fiber while it waits
 * (one timer queue serves every parked run), and a new walk replays it from the store once the sleep is due.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, Schema, Supervisor, TestClock } from "effect"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"
import type { Run } from "stepwise"
import { awaitStatus } from "./scenarios.js"

const Num = Schema.Struct({ n: Schema.Number })

const counted = (id: string, calls: Map<string, number>) =>
  Step.make({
    id,
    inputSchema: Num,
    outputSchema: Num,
    execute: ({ inputData }) =>
      Effect.sync(() => {
        calls.set(id, (calls.get(id) ?? 0) + 1)
        return { n: inputData.n + 1 }
      })
  })

const sleeper = (calls: Map<string, number>, duration: `${number} ${"minute" | "hour" | "day"}`) =>
  Workflow.make({ id: `sleeper-${duration.replace(" ", "-")}`, inputSchema: Num, outputSchema: Num }).pipe(
    Workflow.then(counted("before", calls)),
    Workflow.sleep(duration),
    Workflow.then(counted("after", calls)),
    Workflow.commit
  )

const engineWith = (options: WorkflowEngine.DefaultOptions) =>
  WorkflowEngine.layerDefaultWith(options).pipe(
    Layer.provideMerge(Layer.merge(EventBus.layerMemory, RunStore.layerMemory))
  )

/** Runs `program` with the engine built inside it, and counts the fibers alive at the moment `probe` is evaluated. */
const supervised = <A, E>(
  layer: Layer.Layer<WorkflowEngine.WorkflowEngine, unknown>,
  program: (fibers: Effect.Effect<number>) => Effect.Effect<A, E, WorkflowEngine.WorkflowEngine>
) =>
  Effect.gen(function*() {
    const supervisor = yield* Supervisor.track
    const fibers = Effect.map(supervisor.value, (all) => all.length)
    return yield* Effect.supervised(Effect.provide(program(fibers), layer), supervisor)
  })

const allWaiting = (runs: ReadonlyArray<Run.Run<unknown, unknown>>) =>
  Effect.forEach(runs, (run) => awaitStatus(run, "waiting"), { discard: true })

describe("parking long sleeps (default engine)", () => {
  it.effect("200 runs waiting in a 1-hour sleep hold no fiber each, and all wake and finish when it is due", () => {
    const calls = new Map<string, number>()
    const wf = sleeper(calls, "1 hour")
    return supervised(engineWith({ lease: "1 hour" }), (fibers) =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const idle = yield* fibers
        const runs = yield* Effect.forEach(Array.from({ length: 200 }), (_, i) => engine.start(wf, { n: i }))
        yield* allWaiting(runs)
        // The engine's own fibers (leases, the timer queue) only: none per waiting run.
        expect((yield* fibers) - idle).toBeLessThan(5)
        yield* TestClock.adjust("1 hour")
        const results = yield* Effect.forEach(runs, (run) => run.result)
        expect(results).toEqual(runs.map((_, i) => ({ n: i + 2 })))
        expect(calls.get("before")).toBe(200)
        expect(calls.get("after")).toBe(200)
      }))
  })

  it.effect("sleeps shorter than parkAfter keep their fiber and finish the same way", () => {
    const calls = new Map<string, number>()
    const wf = sleeper(calls, "1 minute")
    return supervised(engineWith({ lease: "1 hour", parkAfter: "1 hour" }), (fibers) =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const idle = yield* fibers
        const runs = yield* Effect.forEach(Array.from({ length: 50 }), (_, i) => engine.start(wf, { n: i }))
        yield* allWaiting(runs)
        expect((yield* fibers) - idle).toBeGreaterThanOrEqual(50)
        yield* TestClock.adjust("1 minute")
        expect(yield* Effect.forEach(runs, (run) => run.result)).toEqual(runs.map((_, i) => ({ n: i + 2 })))
      }))
  })

  it.effect("a sleep due while a sibling step still runs is not lost (no lease recovery to fall back on)", () => {
    const calls = new Map<string, number>()
    const napper = Workflow.make({ id: "napper", inputSchema: Num, outputSchema: Num }).pipe(
      Workflow.sleep("1 hour"),
      Workflow.then(counted("nap-done", calls)),
      Workflow.commit
    )
    const worker = Step.make({
      id: "worker",
      inputSchema: Num,
      outputSchema: Num,
      execute: ({ inputData }) => Effect.as(Effect.sleep("2 hours"), inputData)
    })
    const wf = Workflow.make({ id: "beside", inputSchema: Num, outputSchema: Schema.Unknown }).pipe(
      Workflow.parallel([napper, worker]),
      Workflow.commit
    )
    return Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const run = yield* engine.start(wf, { n: 1 })
      yield* Effect.yieldNow()
      // The nap falls due while the walk still waits for the worker; then the worker ends and the walk parks.
      yield* TestClock.adjust("1 hour")
      yield* Effect.yieldNow()
      yield* TestClock.adjust("1 hour")
      expect(yield* run.result).toEqual({ napper: { n: 2 }, worker: { n: 1 } })
      expect(calls.get("nap-done")).toBe(1)
    }).pipe(Effect.provide(engineWith({ lease: "1 hour" })))
  })

  it.effect("a parked run canceled never wakes: its later step never runs", () => {
    const calls = new Map<string, number>()
    const wf = sleeper(calls, "1 day")
    return Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const runs = yield* Effect.forEach(Array.from({ length: 20 }), (_, i) => engine.start(wf, { n: i }))
      yield* allWaiting(runs)
      yield* Effect.forEach(runs.slice(0, 10), (run) => run.cancel, { discard: true })
      const canceled = yield* Effect.forEach(runs.slice(0, 10), (run) => Effect.flip(run.result))
      expect(canceled.map((e) => e._tag)).toEqual(Array(10).fill("RunCanceledError"))
      expect(yield* Effect.forEach(runs.slice(0, 10), (run) => run.status)).toEqual(Array(10).fill("canceled"))
      yield* TestClock.adjust("2 days")
      expect(yield* Effect.forEach(runs.slice(10), (run) => run.result)).toEqual(
        runs.slice(10).map((_, i) => ({ n: i + 12 }))
      )
      expect(calls.get("after")).toBe(10)
    }).pipe(Effect.provide(engineWith({ lease: "1 hour" })))
  })

  it.effect("a parked run that another instance took over meanwhile is not walked here when its sleep is due", () => {
    const calls = new Map<string, number>()
    const wf = sleeper(calls, "1 hour")
    return Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const store = yield* RunStore.RunStore
      const run = yield* engine.start(wf, { n: 1 })
      yield* awaitStatus(run, "waiting")
      yield* store.updateRun(run.runId, { owner: "another-worker" })
      yield* TestClock.adjust("2 hours")
      expect(yield* run.status).toBe("waiting")
      expect(calls.get("after")).toBeUndefined()
    }).pipe(Effect.provide(engineWith({ lease: "1 hour", workerId: "this-worker" })))
  })

  it.effect("a parked run is taken back by a new engine on the same store, and wakes at its stored time", () => {
    const calls = new Map<string, number>()
    const wf = sleeper(calls, "1 hour")
    return Effect.gen(function*() {
      const runId = yield* Effect.scoped(Effect.gen(function*() {
        const first = yield* Layer.build(WorkflowEngine.layerDefaultWith({ workerId: "w1" }))
        const engine = first.unsafeMap.get(WorkflowEngine.WorkflowEngine.key) as WorkflowEngine.WorkflowEngine["Type"]
        const run = yield* engine.start(wf, { n: 1 })
        yield* awaitStatus(run, "waiting")
        return run.runId
      }))
      // The first engine is gone; a second one with the same worker name takes the run back on register.
      yield* TestClock.adjust("30 minutes")
      return yield* Effect.scoped(Effect.gen(function*() {
        const second = yield* Layer.build(
          WorkflowEngine.register(wf).pipe(Layer.provideMerge(WorkflowEngine.layerDefaultWith({ workerId: "w1" })))
        )
        const engine = second.unsafeMap.get(WorkflowEngine.WorkflowEngine.key) as WorkflowEngine.WorkflowEngine["Type"]
        const run = yield* engine.getRun(runId)
        yield* awaitStatus(run, "waiting")
        yield* TestClock.adjust("29 minutes")
        expect(calls.get("after")).toBeUndefined()
        yield* TestClock.adjust("1 minute")
        expect(yield* run.result).toEqual({ n: 3 })
        expect(calls.get("before")).toBe(1)
        expect(calls.get("after")).toBe(1)
      }))
    }).pipe(Effect.provide(Layer.merge(EventBus.layerMemory, RunStore.layerMemory)))
  })

  it.effect("a parkAfter or lease that is not a duration is refused with a message", () =>
    Effect.gen(function*() {
      for (const [options, message] of [
        [{ parkAfter: -1 }, "parkAfter must be a duration"],
        [{ parkAfter: "soon" as "1 second" }, `parkAfter must be a duration such as "10 seconds"; got soon`],
        [{ lease: "forever" as "1 second" }, "lease must be a duration"],
        [{ lease: 0 }, "lease must be a positive, finite duration"]
      ] as const) {
        const exit = yield* Effect.exit(Layer.build(WorkflowEngine.layerDefaultWith(options)).pipe(Effect.scoped))
        expect(Exit.isFailure(exit)).toBe(true)
        expect(Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "").toContain(message)
      }
    }).pipe(Effect.provide(Layer.merge(EventBus.layerMemory, RunStore.layerMemory))))
})
