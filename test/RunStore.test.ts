import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, TestClock } from "effect"
import { RunStore } from "stepwise"

const record = (runId: string, status: RunStore.RunStatus = "running"): RunStore.RunRecord => ({
  runId,
  workflowId: "wf",
  status,
  input: { n: 1 },
  createdAt: 0,
  updatedAt: 0
})

/** The behaviour every RunStore layer must have. SQL layers join by calling this with their layer. */
export const runStoreSuite = (name: string, layer: Layer.Layer<RunStore.RunStore>) =>
  describe(`RunStore: ${name}`, () => {
    it.effect("creates a run once; a second create with the same id changes nothing", () =>
      Effect.gen(function*() {
        const store = yield* RunStore.RunStore
        expect(yield* store.createRun(record("a"))).toBe(true)
        expect(yield* store.createRun({ ...record("a"), workflowId: "other" })).toBe(false)
        expect((yield* store.getRun("a"))?.workflowId).toBe("wf")
        expect(yield* store.getRun("missing")).toBeUndefined()
      }).pipe(Effect.provide(layer)))

    it.effect("updates a run and lists runs by workflow and status", () =>
      Effect.gen(function*() {
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        yield* store.createRun(record("b"))
        yield* store.updateRun("a", { status: "success", output: { ok: true } })
        expect(yield* store.getRun("a")).toMatchObject({ status: "success", output: { ok: true } })
        const running = yield* store.listRuns({ workflowId: "wf", statuses: ["running", "waiting"] })
        expect(running.map((r) => r.runId)).toEqual(["b"])
        const failure = yield* Effect.flip(store.updateRun("nope", { status: "failed" }))
        expect(failure.message).toContain("run nope")
      }).pipe(Effect.provide(layer)))

    it.effect("gives concurrent appends to a log dense indices from 0", () =>
      Effect.gen(function*() {
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        const indices = yield* Effect.forEach(
          Array.from({ length: 200 }, (_, i) => i),
          (i) => store.appendEvent("a", { type: "data-n", i }),
          { concurrency: 20 }
        )
        expect([...indices].sort((x, y) => x - y)).toEqual(Array.from({ length: 200 }, (_, i) => i))
        const page = yield* store.readEvents("a", 190, 50)
        expect(page.size).toBe(200)
        expect(page.events).toHaveLength(10)
      }).pipe(Effect.provide(layer)))

    it.effect("keeps each stream's chunks densely indexed, and refuses writes after close", () =>
      Effect.gen(function*() {
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        const indices = yield* Effect.forEach(
          Array.from({ length: 100 }, (_, i) => i),
          (i) => store.appendChunk("a", i % 2 === 0 ? "" : "logs", i),
          { concurrency: 10 }
        )
        expect(indices.filter((_, i) => i % 2 === 0).sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i))
        yield* store.closeStream("a", "logs")
        yield* store.closeStream("a", "logs")
        const closed = yield* Effect.flip(store.appendChunk("a", "logs", "late"))
        expect(closed._tag).toBe("StreamClosedError")
        const page = yield* store.readChunks("a", "logs", 48, 10)
        expect(page).toEqual({ chunks: [97, 99], size: 50, closed: true })
        expect(yield* store.readChunks("a", "never-written", 0, 10)).toEqual({ chunks: [], size: 0, closed: false })
      }).pipe(Effect.provide(layer)))

    it.effect("stores step results by path, the last write of a path winning", () =>
      Effect.gen(function*() {
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        yield* store.putStep("a", { path: "0", stepId: "s", status: "suspended", suspendPayload: 1 })
        yield* store.putStep("a", { path: "0", stepId: "s", status: "success", output: { n: 2 }, attempt: 1 })
        yield* store.putStep("a", { path: "1", stepId: "nested", status: "running", stepCallId: "call-1" })
        const steps = yield* store.getSteps("a")
        expect(steps).toHaveLength(2)
        expect(steps.find((s) => s.path === "0")).toMatchObject({ status: "success", output: { n: 2 } })
        expect(steps.find((s) => s.path === "1")?.stepCallId).toBe("call-1")
      }).pipe(Effect.provide(layer)))
  })

runStoreSuite("layerMemory", RunStore.layerMemory)

describe("RunStore.layerMemory retention", () => {
  it.effect("drops the oldest finished runs beyond maxFinishedRuns, never a run in progress", () =>
    Effect.gen(function*() {
      const store = yield* RunStore.RunStore
      yield* store.createRun(record("live"))
      for (const id of ["a", "b", "c", "d", "e"]) {
        yield* store.createRun(record(id))
        yield* TestClock.adjust("1 second")
        yield* store.updateRun(id, { status: "success" })
      }
      const left = (yield* store.listRuns({})).map((r) => r.runId).sort()
      expect(left).toEqual(["c", "d", "e", "live"])
    }).pipe(Effect.provide(RunStore.layerMemoryWith({ maxFinishedRuns: 3 }))))

  it.effect("drops finished runs older than the retention period", () =>
    Effect.gen(function*() {
      const store = yield* RunStore.RunStore
      yield* store.createRun(record("old"))
      yield* store.updateRun("old", { status: "failed" })
      yield* TestClock.adjust("2 hours")
      yield* store.createRun(record("new"))
      expect(yield* store.getRun("old")).toBeUndefined()
      expect(yield* store.getRun("new")).toBeDefined()
    }).pipe(Effect.provide(RunStore.layerMemoryWith({ retention: "1 hour" }))))

  it.effect("refuses a negative bound with a clear message", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Layer.build(RunStore.layerMemoryWith({ maxFinishedRuns: -1 })).pipe(Effect.scoped))
      expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain("retention and maxFinishedRuns must be non-negative")
    }))
})
