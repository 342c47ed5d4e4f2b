import { SqlClient } from "@effect/sql"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Effect, Exit, Layer, TestClock } from "effect"
import { RunStore, type WorkflowEvent } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Sqlite from "stepwise/sqlite"
import * as SqlStore from "../src/internal/store/sql.js"
import { databaseUrl, postgresEnabled, postgresStore, sqliteStore, tempSqliteFile } from "./backends.js"

// Ids are unique per test: a durable store keeps what earlier tests (and earlier runs of the suite) wrote.
let namespace = crypto.randomUUID().slice(0, 8)
const id = (name: string) => `${namespace}-${name}`
const fresh = Effect.sync(() => {
  namespace = crypto.randomUUID().slice(0, 8)
})

const record = (name: string, status: RunStore.RunStatus = "running"): RunStore.RunRecord => ({
  runId: id(name),
  workflowId: `wf-${namespace}`,
  status,
  input: { n: 1 },
  createdAt: 0,
  updatedAt: 0
})

/** The behaviour every RunStore layer must have. SQL layers join by calling this with their layer. */
export const runStoreSuite = (name: string, layer: Layer.Layer<RunStore.RunStore, unknown>) =>
  describe(`RunStore: ${name}`, () => {
    it.effect("creates a run once; a second create with the same id changes nothing", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        expect(yield* store.createRun(record("a"))).toBe(true)
        expect(yield* store.createRun({ ...record("a"), workflowId: "other" })).toBe(false)
        expect((yield* store.getRun(id("a")))?.workflowId).toBe(`wf-${namespace}`)
        expect(yield* store.getRun(id("missing"))).toBeUndefined()
      }).pipe(Effect.provide(layer)))

    it.effect("keeps a run's trace context, and a run created without one has none", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        const trace = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled: true }
        yield* store.createRun({ ...record("traced"), trace })
        yield* store.createRun(record("untraced"))
        yield* store.updateRun(id("traced"), { status: "waiting" })
        expect((yield* store.getRun(id("traced")))?.trace).toEqual(trace)
        expect((yield* store.listRuns({ workflowId: `wf-${namespace}`, statuses: ["waiting"] }))[0]?.trace).toEqual(trace)
        expect(yield* store.getRun(id("untraced"))).not.toHaveProperty("trace")
      }).pipe(Effect.provide(layer)))

    it.effect("creates a run with its first event in one write; a second create adds no event", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        const start = { type: "workflow-start", runId: id("a"), from: "WORKFLOW", payload: { workflowId: "w" } } as const
        expect(yield* store.createRun(record("a"), start)).toBe(true)
        expect(yield* store.createRun(record("a"), start)).toBe(false)
        const page = yield* store.readEvents(id("a"), 0, 10)
        expect(page.size).toBe(1)
        expect(page.events).toEqual([start])
      }).pipe(Effect.provide(layer)))

    it.effect("updates a run and lists runs by workflow and status", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        yield* store.createRun(record("b"))
        yield* store.updateRun(id("a"), { status: "success", output: { ok: true } })
        expect(yield* store.getRun(id("a"))).toMatchObject({ status: "success", output: { ok: true } })
        const running = yield* store.listRuns({ workflowId: `wf-${namespace}`, statuses: ["running", "waiting"] })
        expect(running.map((r) => r.runId)).toEqual([id("b")])
        const failure = yield* Effect.flip(store.updateRun(id("nope"), { status: "failed" }))
        expect(failure.message).toContain(`run ${id("nope")}`)
      }).pipe(Effect.provide(layer)))

    it.effect("leaves a finished run as it is: a late patch does not set it running again", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("settled"))
        yield* store.updateRun(id("settled"), { status: "success", output: 1 })
        yield* store.updateRun(id("settled"), { status: "running" })
        yield* store.updateRun(id("settled"), { status: "waiting", output: 2 })
        expect(yield* store.getRun(id("settled"))).toMatchObject({ status: "success", output: 1 })
      }).pipe(Effect.provide(layer)))

    it.effect("finishes a run with its events in one write, after the events before; a finished run gets them too", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        const event = (type: string) => ({ type, runId: id("a") }) as unknown as WorkflowEvent.WorkflowEvent
        yield* store.createRun(record("a"), event("start"))
        yield* store.appendEvent(id("a"), event("middle"))
        yield* store.updateRun(id("a"), { status: "canceled" }, [event("canceled"), event("finish")])
        expect(yield* store.getRun(id("a"))).toMatchObject({ status: "canceled" })
        // Too late: the run stays canceled, with its updatedAt, and the late end is in the log after the first.
        const updatedAt = (yield* store.getRun(id("a")))?.updatedAt
        yield* TestClock.adjust("1 second")
        yield* store.updateRun(id("a"), { status: "success", output: 1 }, [event("finish")])
        expect(yield* store.getRun(id("a"))).toMatchObject({ status: "canceled", updatedAt })
        expect(yield* store.getRun(id("a"))).not.toHaveProperty("output")
        const page = yield* store.readEvents(id("a"), 0, 10)
        expect(page.events.map((e) => e.type)).toEqual(["start", "middle", "canceled", "finish", "finish"])
        expect(page.size).toBe(5)
        expect(yield* store.appendEvent(id("a"), event("after"))).toBe(5)
        const failure = yield* Effect.flip(store.updateRun(id("nope"), { status: "failed" }, [event("finish")]))
        expect(failure.message).toContain(`run ${id("nope")}`)
        expect((yield* store.readEvents(id("nope"), 0, 10)).size).toBe(0)
      }).pipe(Effect.provide(layer)))

    it.effect("lists runs oldest first by default, or newest first, up to a limit", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        for (const [name, createdAt] of [["b", 2], ["a", 1], ["c", 3]] as const) {
          yield* store.createRun({ ...record(name), createdAt })
        }
        const names = (runs: ReadonlyArray<RunStore.RunRecord>) => runs.map((r) => r.runId)
        const workflowId = `wf-${namespace}`
        expect(names(yield* store.listRuns({ workflowId }))).toEqual([id("a"), id("b"), id("c")])
        expect(names(yield* store.listRuns({ workflowId, order: "newest-first" }))).toEqual([id("c"), id("b"), id("a")])
        expect(names(yield* store.listRuns({ workflowId, order: "newest-first", limit: 2 }))).toEqual([id("c"), id("b")])
        expect(names(yield* store.listRuns({ workflowId, limit: 1 }))).toEqual([id("a")])
        yield* store.updateRun(id("c"), { status: "failed" })
        expect(names(yield* store.listRuns({ workflowId, statuses: ["running"], order: "newest-first", limit: 1 })))
          .toEqual([id("b")])
      }).pipe(Effect.provide(layer)))

    it.effect("gives concurrent appends to a log dense indices from 0", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        const indices = yield* Effect.forEach(
          Array.from({ length: 200 }, (_, i) => i),
          (i) => store.appendEvent(id("a"), { type: "data-n", i }),
          { concurrency: 20 }
        )
        expect([...indices].sort((x, y) => x - y)).toEqual(Array.from({ length: 200 }, (_, i) => i))
        const page = yield* store.readEvents(id("a"), 190, 50)
        expect(page.size).toBe(200)
        expect(page.events).toHaveLength(10)
      }).pipe(Effect.provide(layer)))

    it.effect("appends batches of events in order, interleaved densely with single appends", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        expect(yield* store.appendEvent(id("a"), { type: "data-n", i: 0 })).toBe(0)
        const batch = Array.from({ length: 500 }, (_, i) => ({ type: "data-n", i: i + 1, text: `chunk "${i}" \u00e9` }))
        expect(yield* store.appendEvents(id("a"), batch)).toBe(1)
        expect(yield* store.appendEvents(id("a"), [])).toBe(501)
        expect(yield* store.appendEvent(id("a"), { type: "data-n", i: 501 })).toBe(501)
        const firsts = yield* Effect.forEach(
          Array.from({ length: 20 }, (_, k) => k),
          (k) => store.appendEvents(id("a"), [{ type: "data-m", k, j: 0 }, { type: "data-m", k, j: 1 }]),
          { concurrency: 5 }
        )
        expect([...firsts].sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, k) => 502 + 2 * k))
        const page = yield* store.readEvents(id("a"), 0, 1000)
        expect(page.size).toBe(542)
        expect(page.events.slice(0, 502).map((e) => (e as { i?: number }).i)).toEqual(Array.from({ length: 502 }, (_, i) => i))
        expect(page.events[2]).toEqual({ type: "data-n", i: 2, text: `chunk "1" \u00e9` })
        // each batch stays together
        for (const first of firsts) {
          const [a, b] = [page.events[first] as unknown as { k: number; j: number }, page.events[first + 1] as unknown as { k: number; j: number }]
          expect([a.j, b.j, a.k === b.k]).toEqual([0, 1, true])
        }
        const missing = yield* Effect.flip(store.appendEvents(id("nope"), [{ type: "data-n" }]))
        expect(missing.message).toContain(`run ${id("nope")}`)
        const missingEmpty = yield* Effect.flip(store.appendEvents(id("nope"), []))
        expect(missingEmpty.message).toContain(`run ${id("nope")}`)
      }).pipe(Effect.provide(layer)))

    it.effect("keeps each stream's chunks densely indexed, and refuses writes after close", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        const indices = yield* Effect.forEach(
          Array.from({ length: 100 }, (_, i) => i),
          (i) => store.appendChunks(id("a"), i % 2 === 0 ? "" : "logs", [i]),
          { concurrency: 10 }
        )
        expect(indices.filter((_, i) => i % 2 === 0).sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i))
        yield* store.closeStream(id("a"), "logs")
        yield* store.closeStream(id("a"), "logs")
        const closed = yield* Effect.flip(store.appendChunks(id("a"), "logs", ["late"]))
        expect(closed._tag).toBe("StreamClosedError")
        const page = yield* store.readChunks(id("a"), "logs", 48, 10)
        expect(page.chunks).toHaveLength(2)
        expect(page).toMatchObject({ size: 50, closed: true })
        // concurrent appends take indices in any order, but every chunk is there exactly once
        const all = (yield* store.readChunks(id("a"), "logs", 0, 100)).chunks as Array<number>
        expect([...all].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => 2 * i + 1))
        expect(yield* store.readChunks(id("a"), "never-written", 0, 10)).toEqual({ chunks: [], size: 0, closed: false })
      }).pipe(Effect.provide(layer)))

    it.effect("appends a batch of chunks atomically, in order, after what is there", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        expect(yield* store.appendChunks(id("a"), "", ["a", "b"])).toBe(0)
        expect(yield* store.appendChunks(id("a"), "", Array.from({ length: 500 }, (_, i) => i))).toBe(2)
        const page = yield* store.readChunks(id("a"), "", 0, 1000)
        expect(page.size).toBe(502)
        expect(page.chunks).toEqual(["a", "b", ...Array.from({ length: 500 }, (_, i) => i)])
      }).pipe(Effect.provide(layer)))

    it.effect("stores step results by path, the last write of a path winning", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        yield* store.putStep(id("a"), { path: "0", stepId: "s", status: "suspended", suspendPayload: 1 })
        yield* store.putStep(id("a"), { path: "0", stepId: "s", status: "success", output: { n: 2 }, attempt: 1 })
        yield* store.putStep(id("a"), { path: "1", stepId: "nested", status: "running", stepCallId: "call-1" })
        const { steps } = yield* store.getSteps(id("a"))
        expect(steps).toHaveLength(2)
        expect(steps.find((s) => s.path === "0")).toMatchObject({ status: "success", output: { n: 2 } })
        expect(steps.find((s) => s.path === "1")?.stepCallId).toBe("call-1")
      }).pipe(Effect.provide(layer)))

    it.effect("counts step writes: each answers the run's new stepsVersion, which getRun and getSteps show", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        expect((yield* store.getRun(id("a")))?.stepsVersion).toBe(0)
        expect(yield* store.getSteps(id("a"))).toEqual({ steps: [], version: 0 })
        expect(yield* store.putStep(id("a"), { path: "0", stepId: "s", status: "running" })).toBe(1)
        expect(yield* store.putStep(id("a"), { path: "0", stepId: "s", status: "success" })).toBe(2)
        expect(yield* store.putStep(id("a"), { path: "1", stepId: "t", status: "running" })).toBe(3)
        expect((yield* store.getRun(id("a")))?.stepsVersion).toBe(3)
        const read = yield* store.getSteps(id("a"))
        expect(read.version).toBe(3)
        expect(read.steps.map((s) => s.status).sort()).toEqual(["running", "success"])
        // Other writes leave it alone.
        yield* store.appendEvent(id("a"), { type: "data-n", i: 0 })
        yield* store.updateRun(id("a"), { status: "running" })
        expect((yield* store.getRun(id("a")))?.stepsVersion).toBe(3)
        expect(yield* store.getSteps(id("never-created"))).toEqual({ steps: [], version: 0 })
      }).pipe(Effect.provide(layer)))

    it.effect("answers the step records written after a version, with the version they bring the run to", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        yield* store.putStep(id("a"), { path: "0", stepId: "s", status: "running" })
        yield* store.putStep(id("a"), { path: "1", stepId: "t", status: "running" })
        expect(yield* store.getSteps(id("a"), 2)).toEqual({ steps: [], version: 2 })
        yield* store.putStep(id("a"), { path: "0", stepId: "s", status: "success", output: 5 })
        expect(yield* store.getSteps(id("a"), 2)).toEqual({
          steps: [{ path: "0", stepId: "s", status: "success", output: 5 }],
          version: 3
        })
        const since1 = yield* store.getSteps(id("a"), 1)
        expect(since1.steps.map((s) => s.path).sort()).toEqual(["0", "1"])
        expect((yield* store.getSteps(id("a"), 0)).steps).toHaveLength(2)
        expect((yield* store.getSteps(id("a"))).steps).toHaveLength(2)
        expect(yield* store.getSteps(id("never-created"), 1)).toEqual({ steps: [], version: 0 })
      }).pipe(Effect.provide(layer)))

    it.effect("gives concurrent step writes distinct versions, one per write", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        const versions = yield* Effect.forEach(
          Array.from({ length: 20 }, (_, i) => i),
          (i) => store.putStep(id("a"), { path: String(i), stepId: "s", status: "success", output: i }),
          { concurrency: "unbounded" }
        )
        expect([...versions].sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
        const read = yield* store.getSteps(id("a"))
        expect(read.version).toBe(20)
        expect(read.steps).toHaveLength(20)
      }).pipe(Effect.provide(layer)))

    it.effect("keeps one record per path across many paths, rewrites answering only what changed since a version", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        // A few paths and many: the memory store keeps a few records differently from many.
        for (let i = 0; i < 30; i++) {
          yield* store.putStep(id("a"), { path: `p${i}`, stepId: "s", status: "running", stepCallId: `c${i}` })
          if (i === 3) {
            yield* store.putStep(id("a"), { path: "p1", stepId: "s", status: "success", output: 1, stepCallId: "c1" })
          }
        }
        expect(yield* store.getSteps(id("a"), 31)).toEqual({ steps: [], version: 31 })
        const few = { path: "p2", stepId: "s", status: "success", output: 2, stepCallId: "c2" } as const
        const many = { path: "p25", stepId: "s", status: "success", output: 25, stepCallId: "c25" } as const
        expect(yield* store.putStep(id("a"), few, undefined, { path: "p2", stepCallId: "c2" })).toBe(32)
        expect(yield* store.putStep(id("a"), many, undefined, { path: "p25", stepCallId: "c25" })).toBe(33)
        const late = yield* Effect.flip(store.putStep(id("a"), { ...many, output: 99 }, undefined, { path: "p25", stepCallId: "other" }))
        expect(late._tag).toBe("StepFencedError")
        const since = yield* store.getSteps(id("a"), 31)
        expect(since.version).toBe(33)
        expect(since.steps.map((s) => s.path).sort()).toEqual(["p2", "p25"])
        const all = (yield* store.getSteps(id("a"))).steps
        expect(all).toHaveLength(30)
        expect(all.find((s) => s.path === "p1")).toMatchObject({ status: "success", output: 1 })
        expect(all.find((s) => s.path === "p29")).toMatchObject({ status: "running", stepCallId: "c29" })
      }).pipe(Effect.provide(layer)))

    it.effect("stores a step record and its event in one write, and refuses a step of a run it does not have", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        yield* store.appendEvent(id("a"), { type: "data-n", i: 0 })
        const event = { type: "data-step", path: "0" }
        expect(yield* store.putStep(id("a"), { path: "0", stepId: "s", status: "success", output: 1 }, event)).toBe(1)
        expect(yield* store.appendEvent(id("a"), { type: "data-n", i: 2 })).toBe(2)
        const page = yield* store.readEvents(id("a"), 0, 10)
        expect(page.events).toEqual([{ type: "data-n", i: 0 }, event, { type: "data-n", i: 2 }])
        expect((yield* store.getSteps(id("a"))).steps).toEqual([{ path: "0", stepId: "s", status: "success", output: 1 }])

        const refused = yield* Effect.flip(store.putStep(id("b"), { path: "0", stepId: "s", status: "success" }, event))
        expect(refused).toBeInstanceOf(RunStore.RunStoreError)
        expect(refused.message).toContain("no such run")
        expect(yield* store.getSteps(id("b"))).toEqual({ steps: [], version: 0 })
        expect((yield* store.readEvents(id("b"), 0, 10)).size).toBe(0)
      }).pipe(Effect.provide(layer)))

    const running = (callId: string, attempt: number, extra: Partial<RunStore.StepRecord> = {}): RunStore.StepRecord => ({
      path: "0",
      stepId: "s",
      status: "running",
      stepCallId: callId,
      attempt,
      ...extra
    })
    const started = (callId: string) => ({ type: "data-start", callId })

    it.effect("lets exactly one of many concurrent claimers that read the same record claim a step", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        // From no record at all, then from the dispatched record every claimer read.
        const fromNothing = yield* Effect.forEach(
          Array.from({ length: 16 }, (_, i) => i),
          (i) => store.claimStep(id("a"), running(`first-${i}`, 0), undefined, started(`first-${i}`)),
          { concurrency: "unbounded" }
        )
        expect(fromNothing.filter((v) => v !== undefined)).toHaveLength(1)
        const dispatched = (yield* store.getSteps(id("a"))).steps[0]!
        const claims = yield* Effect.forEach(
          Array.from({ length: 16 }, (_, i) => i),
          (i) => store.claimStep(id("a"), running(`claim-${i}`, 1, { worker: `w${i}` }), dispatched, started(`claim-${i}`)),
          { concurrency: "unbounded" }
        )
        const winners = claims.flatMap((v, i) => v === undefined ? [] : [i])
        expect(winners).toHaveLength(1)
        const { steps, version } = yield* store.getSteps(id("a"))
        expect(steps).toEqual([running(`claim-${winners[0]}`, 1, { worker: `w${winners[0]}` })])
        expect(claims[winners[0]!]).toBe(version)
        // Each claim carries its start event: exactly the two winners' are in the log, densely.
        const page = yield* store.readEvents(id("a"), 0, 100)
        expect(page.size).toBe(2)
        expect((page.events[1] as unknown as { callId: string }).callId).toBe(`claim-${winners[0]}`)
        // A claimer that read the record before the winner's claim has lost too, now.
        expect(yield* store.claimStep(id("a"), running("late", 1), dispatched)).toBeUndefined()
      }).pipe(Effect.provide(layer)))

    it.effect("never claims over a step that succeeded, failed or is suspended without resume data", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        const outcomes: ReadonlyArray<RunStore.StepRecord> = [
          { path: "0", stepId: "s", status: "success", output: 1, attempt: 1 },
          { path: "0", stepId: "s", status: "failed", error: { name: "E", message: "no" }, attempt: 1 },
          { path: "0", stepId: "s", status: "suspended", suspendPayload: 1, attempt: 1 }
        ]
        for (const outcome of outcomes) {
          yield* store.putStep(id("a"), outcome)
          expect(yield* store.claimStep(id("a"), running("x", 2), outcome)).toBeUndefined()
          expect(yield* store.claimStep(id("a"), running("y", 2), undefined)).toBeUndefined()
          expect((yield* store.getSteps(id("a"))).steps).toEqual([outcome])
        }
        // Resumed, it is claimable by whoever read it resumed.
        const resumed: RunStore.StepRecord = { ...outcomes[2]!, resumeData: { ok: true }, stepCallId: "resume-1" }
        yield* store.putStep(id("a"), resumed)
        expect(yield* store.claimStep(id("a"), running("z", 1), outcomes[2])).toBeUndefined()
        expect(yield* store.claimStep(id("a"), running("z", 1, { resumeData: { ok: true } }), resumed)).toBeDefined()
        expect((yield* store.getSteps(id("a"))).steps[0]?.stepCallId).toBe("z")
        // A claim retried after it landed finds itself there.
        const retried = running("w", 2)
        const version = yield* store.claimStep(id("a"), retried, (yield* store.getSteps(id("a"))).steps[0])
        expect(yield* store.claimStep(id("a"), retried, running("z", 1, { resumeData: { ok: true } }))).toBe(version)
        expect(yield* store.claimStep(id("nope"), running("q", 1), undefined).pipe(Effect.flip)).toBeInstanceOf(RunStore.RunStoreError)
      }).pipe(Effect.provide(layer)))

    it.effect("refuses a write under a claim that no longer holds, and writes nothing", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        const a = running("call-a", 1)
        yield* store.claimStep(id("a"), a, undefined)
        yield* store.appendChunks(id("a"), "", ["a-0"], [{ path: "0", stepCallId: "call-a" }])
        // Another execution claims the step.
        yield* store.claimStep(id("a"), running("call-b", 2), a, started("call-b"))
        const fenceA = { path: "0", stepCallId: "call-a" }
        const before = { events: (yield* store.readEvents(id("a"), 0, 0)).size, steps: yield* store.getSteps(id("a")) }

        const events = yield* Effect.flip(store.appendEvents(id("a"), [{ type: "data-late" }], [fenceA]))
        expect(events).toBeInstanceOf(RunStore.StepFencedError)
        expect(events).toMatchObject({ fences: [fenceA] })
        expect(events.message).toContain(`Run ${id("a")}`)
        expect(events.message).toContain("path 0 (call call-a)")
        const chunks = yield* Effect.flip(store.appendChunks(id("a"), "", ["a-late"], [fenceA]))
        expect(chunks._tag).toBe("StepFencedError")
        const result = yield* Effect.flip(store.putStep(id("a"), { path: "0", stepId: "s", status: "success", output: "a", attempt: 1 }, { type: "data-result" }, fenceA))
        expect(result._tag).toBe("StepFencedError")
        const retry = yield* Effect.flip(store.putStep(id("a"), running("call-a", 2), undefined, fenceA))
        expect(retry._tag).toBe("StepFencedError")
        const close = yield* Effect.flip(store.closeStream(id("a"), "", fenceA))
        expect(close._tag).toBe("StepFencedError")
        // A batch under a fence that holds and one that does not lands nowhere, naming only the one that does not.
        const mixed = yield* Effect.flip(store.appendEvents(id("a"), [{ type: "data-x" }], [{ path: "0", stepCallId: "call-b" }, fenceA]))
        expect(mixed._tag === "StepFencedError" ? mixed.fences : mixed).toEqual([fenceA])

        expect((yield* store.readEvents(id("a"), 0, 0)).size).toBe(before.events)
        expect(yield* store.getSteps(id("a"))).toEqual(before.steps)
        expect(yield* store.readChunks(id("a"), "", 0, 10)).toEqual({ chunks: ["a-0"], size: 1, closed: false })
      }).pipe(Effect.provide(layer)))

    it.effect("accepts writes under the current claim, and its execution's late writes after its result", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        const fence = { path: "0", stepCallId: "call-b" }
        yield* store.claimStep(id("a"), running("call-b", 1), undefined, started("call-b"))
        expect(yield* store.appendEvents(id("a"), [{ type: "data-1" }, { type: "data-2" }], [fence, fence])).toBe(1)
        expect(yield* store.appendChunks(id("a"), "", ["b-0", "b-1"], [fence])).toBe(0)
        // A retry of the same claim keeps its fence.
        yield* store.putStep(id("a"), running("call-b", 2), undefined, fence)
        expect(yield* store.appendChunks(id("a"), "logs", ["b-2"], [fence])).toBe(0)
        yield* store.closeStream(id("a"), "logs", fence)
        const success: RunStore.StepRecord = { path: "0", stepId: "s", status: "success", output: "b", attempt: 2, stepCallId: "call-b" }
        const version = yield* store.putStep(id("a"), success, { type: "data-result" }, fence)
        // Retried after it landed, it answers the same version and writes nothing more.
        expect(yield* store.putStep(id("a"), success, { type: "data-result" }, fence)).toBe(version)
        expect((yield* store.readEvents(id("a"), 0, 10)).events.map((e) => e.type))
          .toEqual(["data-start", "data-1", "data-2", "data-result"])
        expect((yield* store.readChunks(id("a"), "logs", 0, 10)).closed).toBe(true)
        // The result keeps the execution's fence: a fiber it left behind still writes; no claim replaces a result.
        expect(yield* store.appendChunks(id("a"), "", ["late"], [fence])).toBe(2)
        expect(yield* store.claimStep(id("a"), running("call-c", 3), success)).toBeUndefined()
        expect((yield* store.readChunks(id("a"), "", 0, 10)).chunks).toEqual(["b-0", "b-1", "late"])
      }).pipe(Effect.provide(layer)))

    it.live("orders every append a claim fences off before that claim, however they race", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        const a = running("call-a", 1)
        yield* store.claimStep(id("a"), a, undefined)
        const fenceA = { path: "0", stepCallId: "call-a" }
        const fenceB = { path: "0", stepCallId: "call-b" }
        // Six writers keep appending under A's claim while B claims the step, once some of A's appends landed.
        const appendsA = Effect.forEach(Array.from({ length: 120 }, (_, i) => i), (i) =>
          Effect.all([
            Effect.either(store.appendEvents(id("a"), [{ type: "data-a", i }], [fenceA])),
            Effect.either(store.appendChunks(id("a"), "", [`a-${i}`], [fenceA])),
            Effect.yieldNow()
          ]), { concurrency: 6 })
        const claimB = Effect.gen(function*() {
          while ((yield* store.readEvents(id("a"), 0, 0)).size < 12) yield* Effect.yieldNow()
          yield* store.claimStep(id("a"), running("call-b", 2), a, started("call-b"))
          yield* store.appendChunks(id("a"), "", ["b"], [fenceB])
        })
        const [results] = yield* Effect.all([appendsA, claimB], { concurrency: "unbounded" })
        const events = (yield* store.readEvents(id("a"), 0, 1000)).events
        const claimed = events.findIndex((e) => e.type === "data-start")
        expect(claimed).toBeGreaterThanOrEqual(0)
        expect(events.slice(claimed + 1).filter((e) => e.type === "data-a")).toEqual([])
        const chunks = (yield* store.readChunks(id("a"), "", 0, 1000)).chunks
        expect(chunks.slice(chunks.indexOf("b") + 1)).toEqual([])
        // Every append A made either landed whole (before the claim) or was refused, saying so.
        const answered = (k: 0 | 1) => results.map((pair) => pair[k])
        for (const k of [0, 1] as const) {
          for (const r of answered(k)) if (r._tag === "Left") expect(r.left.message).toContain("claim on path 0 (call call-a)")
        }
        const landed = answered(0).filter((r) => r._tag === "Right").length
        expect(landed).toBeGreaterThanOrEqual(12)
        expect(landed).toBeLessThan(120)
        expect(events.filter((e) => e.type === "data-a")).toHaveLength(landed)
        expect(chunks.filter((c) => c !== "b")).toHaveLength(answered(1).filter((r) => r._tag === "Right").length)
      }).pipe(Effect.provide(layer)))

    it.effect("round-trips bytes, undefined and nested values in chunks and step results", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        yield* store.appendChunks(id("a"), "", [new Uint8Array([0, 1, 255])])
        yield* store.appendChunks(id("a"), "", [{ nested: { list: [1, "two", null] } }, undefined])
        const page = yield* store.readChunks(id("a"), "", 0, 10)
        expect(page.chunks).toEqual([new Uint8Array([0, 1, 255]), { nested: { list: [1, "two", null] } }, undefined])
        expect(page.chunks[0]).toBeInstanceOf(Uint8Array)
        yield* store.putStep(id("a"), { path: "0", stepId: "s", status: "success" })
        expect((yield* store.getSteps(id("a"))).steps[0]).toEqual({ path: "0", stepId: "s", status: "success" })
        // Bytes deep inside, and text that looks like the bytes marker.
        yield* store.appendChunks(id("a"), "", [{ deep: [{ bytes: new Uint8Array([7]) }] }, { text: "$stepwise:bytes" }])
        const more = (yield* store.readChunks(id("a"), "", 3, 10)).chunks
        expect(more).toEqual([{ deep: [{ bytes: new Uint8Array([7]) }] }, { text: "$stepwise:bytes" }])
        expect((more[0] as { deep: [{ bytes: unknown }] }).deep[0].bytes).toBeInstanceOf(Uint8Array)
      }).pipe(Effect.provide(layer)))

    it.effect("lets one owner claim a run, and another take it over only once the owner is silent", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        yield* store.createRun(record("a"))
        expect(yield* store.claimRun(id("a"), "one", 1000, 0)).toBe(true)
        expect(yield* store.claimRun(id("a"), "two", 1500, 500)).toBe(false)
        yield* store.heartbeat("one", 2000)
        expect((yield* store.getRun(id("a")))?.heartbeatAt).toBe(2000)
        expect(yield* store.claimRun(id("a"), "two", 2500, 1500)).toBe(false)
        expect(yield* store.claimRun(id("a"), "two", 9000, 8000)).toBe(true)
        expect((yield* store.getRun(id("a")))?.owner).toBe("two")
      }).pipe(Effect.provide(layer)))

    it.effect("keeps each engine instance's last heartbeat, and forgets instances silent for a week", () =>
      Effect.gen(function*() {
        yield* fresh
        const store = yield* RunStore.RunStore
        expect(yield* store.workerHeartbeats([])).toEqual(new Map())
        yield* store.heartbeat(id("one"), 1000)
        yield* store.heartbeat(id("two"), 1500)
        yield* store.heartbeat(id("one"), 2000)
        expect(yield* store.workerHeartbeats([id("one"), id("two"), id("three")]))
          .toEqual(new Map([[id("one"), 2000], [id("two"), 1500]]))
        const week = 7 * 24 * 60 * 60 * 1000
        yield* store.heartbeat(id("one"), 1600 + week)
        expect(yield* store.workerHeartbeats([id("one"), id("two")])).toEqual(new Map([[id("one"), 1600 + week]]))
      }).pipe(Effect.provide(layer)))
  })

runStoreSuite("layerMemory", RunStore.layerMemory)
runStoreSuite("SQLite", sqliteStore)
if (postgresEnabled) runStoreSuite("Postgres", postgresStore)

if (postgresEnabled) {
  describe("RunStore: Postgres claims across processes", () => {
    it.live("claims, fenced appends and plain writes from separate connection pools never let a fenced write land", () =>
      Effect.gen(function*() {
        // Two pools, as two worker processes have, race eight successive claims of one step against writers that
        // append under whichever claim they last saw, while heartbeats and plain writes of the run go on. Every event
        // written under a claim must sit between that claim's start and the next claim's.
        const pools = yield* Effect.all([Layer.build(postgresStore), Layer.build(postgresStore)])
        const [one, two] = pools.map((context) => Context.get(context, RunStore.RunStore)) as [
          RunStore.RunStore["Type"],
          RunStore.RunStore["Type"]
        ]
        yield* fresh
        const runId = id("race")
        yield* one.createRun({ ...record("race"), owner: id("worker") })
        let current: RunStore.StepRecord = { path: "0", stepId: "s", status: "running", stepCallId: "c0", attempt: 0 }
        yield* one.claimStep(runId, current, undefined, { type: "data-start", call: "c0" })
        const winners: Array<number> = []
        const refusals: Array<string> = []
        const claims = Effect.forEach(Array.from({ length: 8 }, (_, i) => i + 1), (k) =>
          Effect.gen(function*() {
            const seen = current
            // Both pools claim from the same record, each with a call id of its own: one of them wins.
            const mine = (who: string): RunStore.StepRecord => ({ ...seen, stepCallId: `c${k}${who}`, attempt: k, worker: who })
            const [a, b] = yield* Effect.all([
              one.claimStep(runId, mine("a"), seen, { type: "data-start", call: `c${k}a` }),
              two.claimStep(runId, mine("b"), seen, { type: "data-start", call: `c${k}b` })
            ], { concurrency: 2 })
            winners.push([a, b].filter((v) => v !== undefined).length)
            current = mine(a !== undefined ? "a" : "b")
            yield* Effect.sleep("5 millis")
          }))
        const writer = (store: RunStore.RunStore["Type"]) =>
          Effect.forEach(Array.from({ length: 40 }, (_, i) => i), (i) =>
            Effect.gen(function*() {
              const fence = { path: "0", stepCallId: current.stepCallId! }
              // Both to their end: an interrupted query's cancel can reach the next statement of its connection.
              const written = yield* Effect.all([
                Effect.either(store.appendEvents(runId, [{ type: "data-w", call: fence.stepCallId, i }], [fence])),
                Effect.either(store.appendChunks(runId, i % 2 === 0 ? "" : "n", [fence.stepCallId], [fence]))
              ], { concurrency: 2 })
              for (const one of written) if (one._tag === "Left") refusals.push(one.left._tag)
            }), { concurrency: 3 })
        const failures: Array<string> = []
        const others = Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (i) =>
          Effect.all([
            two.heartbeat(id("worker"), i),
            one.putStep(runId, { path: `x${i % 3}`, stepId: "x", status: "success", output: i }),
            two.appendEvent(runId, { type: "data-plain", i })
          ].map((write) => Effect.catchAll(write, (e) => Effect.sync(() => failures.push(e.message))))), { concurrency: 2 })
        yield* Effect.all([claims, writer(one), writer(two), others], { concurrency: "unbounded" })

        const events = (yield* one.readEvents(runId, 0, 10_000)).events as unknown as ReadonlyArray<
          { readonly type: string; readonly call?: string }
        >
        let claim = ""
        const misplaced = events.filter((e) => {
          if (e.type === "data-start") claim = e.call!
          return e.type === "data-w" && e.call !== claim
        })
        expect(misplaced).toEqual([])
        expect(events.filter((e) => e.type === "data-start")).toHaveLength(9)
        expect(failures).toEqual([])
        expect(winners).toEqual([1, 1, 1, 1, 1, 1, 1, 1])
        expect(refusals.length).toBeGreaterThan(0)
        expect(new Set(refusals)).toEqual(new Set(["StepFencedError"]))
      }).pipe(Effect.scoped))

    /** The statements prepared in the session of a one-connection store, after it ran a few and the app one. */
    const preparedAfterUse = (preparedStatements: boolean) =>
      Effect.gen(function*() {
        const store = yield* RunStore.RunStore
        const sql = yield* SqlClient.SqlClient
        yield* fresh
        yield* store.createRun(record("prepared"))
        for (let i = 0; i < 3; i++) yield* store.getRun(id("prepared"))
        yield* sql`SELECT ${1}::int AS n`
        return yield* sql<{ statement: string }>`SELECT statement FROM pg_prepared_statements`
      }).pipe(Effect.provide(Postgres.layer({ url: databaseUrl, maxConnections: 1, preparedStatements })))

    it.live("prepares the store's statements once per connection, and none of the application's on its client", () =>
      Effect.gen(function*() {
        const prepared = (yield* preparedAfterUse(true)).map((row) => row.statement)
        expect(prepared.filter((text) => text.includes("FROM stepwise_runs WHERE run_id"))).toHaveLength(1)
        expect(prepared.filter((text) => !text.includes("stepwise_"))).toEqual([])
        expect(yield* preparedAfterUse(false)).toEqual([])
      }))
  })
}

describe("RunStore.layerSql upgrades", () => {
  it.effect("opens a SQLite database an earlier release created: its runs keep their steps and start counting", () =>
    Effect.gen(function*() {
      const filename = tempSqliteFile()
      // As the release before step versions left it: the first migration, a run and one step record.
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* SqlStore.migrateThrough("1_stepwise_init")
        yield* sql`INSERT INTO stepwise_runs (run_id, workflow_id, status, input, created_at, updated_at)
          VALUES ('old', 'wf', 'running', '{"v":1}', 1, 1)`
        yield* sql`INSERT INTO stepwise_steps (run_id, path, data)
          VALUES ('old', '0', '{"v":{"path":"0","stepId":"s","status":"success","output":2}}')`
      }).pipe(Effect.provide(SqliteClient.layer({ filename })), Effect.scoped)

      yield* Effect.gen(function*() {
        const store = yield* RunStore.RunStore
        expect((yield* store.getRun("old"))?.stepsVersion).toBe(0)
        expect(yield* store.getSteps("old")).toEqual({
          steps: [{ path: "0", stepId: "s", status: "success", output: 2 }],
          version: 0
        })
        expect(yield* store.putStep("old", { path: "1", stepId: "t", status: "running" })).toBe(1)
        expect(yield* store.putStep("old", { path: "0", stepId: "s", status: "success", output: 3 })).toBe(2)
        expect((yield* store.getRun("old"))?.stepsVersion).toBe(2)
        const read = yield* store.getSteps("old")
        expect(read.version).toBe(2)
        expect(read.steps.find((s) => s.path === "0")?.output).toBe(3)
        expect((yield* store.getSteps("old", 1)).steps).toEqual([{ path: "0", stepId: "s", status: "success", output: 3 }])
      }).pipe(Effect.provide(Sqlite.layer({ filename })), Effect.scoped)
    }))

  it.effect("opens a SQLite database of a release before claims: a step it left running can be claimed and fenced, a corrupt row notwithstanding", () =>
    Effect.gen(function*() {
      const filename = tempSqliteFile()
      const dispatched: RunStore.StepRecord = { path: "0", stepId: "s", status: "running", attempt: 1 }
      const executing: RunStore.StepRecord = { path: "1", stepId: "t", status: "running", stepCallId: "old-call", attempt: 2 }
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* SqlStore.migrateThrough("4_stepwise_workers")
        yield* sql`INSERT INTO stepwise_runs (run_id, workflow_id, status, input, created_at, updated_at, steps_version)
          VALUES ('old', 'wf', 'running', '{"v":1}', 1, 1, 2)`
        yield* sql`INSERT INTO stepwise_steps (run_id, path, data, version)
          VALUES ('old', '0', ${JSON.stringify({ v: dispatched })}, 1), ('old', '1', ${JSON.stringify({ v: executing })}, 2),
            ('old', '2', '{"v":{"path":"2", not json', 2)`
      }).pipe(Effect.provide(SqliteClient.layer({ filename })), Effect.scoped)

      yield* Effect.gen(function*() {
        const store = yield* RunStore.RunStore
        // The step still executing under its old call id keeps its fence.
        expect(yield* store.appendChunks("old", "", ["x"], [{ path: "1", stepCallId: "old-call" }])).toBe(0)
        const claim: RunStore.StepRecord = { ...dispatched, stepCallId: "new", attempt: 2 }
        expect(yield* store.claimStep("old", { ...claim, stepCallId: "other" }, { ...dispatched, attempt: 0 })).toBeUndefined()
        expect(yield* store.claimStep("old", claim, dispatched)).toBe(3)
        expect(yield* store.claimStep("old", { ...claim, stepCallId: "late" }, dispatched)).toBeUndefined()
        // The corrupt row still fails its run's reads, saying which row, as before the migration.
        const corrupt = yield* Effect.flip(store.getSteps("old"))
        expect(corrupt.message).toContain("the step result at path 2 of run old is corrupt")
      }).pipe(Effect.provide(Sqlite.layer({ filename })), Effect.scoped)
    }))

  it.effect("writes a SQLite step record and its event in one statement, leaving the event in the log only", () =>
    Effect.gen(function*() {
      const filename = tempSqliteFile()
      yield* Effect.gen(function*() {
        const store = yield* RunStore.RunStore
        const sql = yield* SqlClient.SqlClient
        const started = { type: "data-start", i: 0 } as unknown as WorkflowEvent.WorkflowEvent
        const ended = { type: "data-end", i: 1 } as unknown as WorkflowEvent.WorkflowEvent
        yield* store.createRun({ runId: "r", workflowId: "wf", status: "running", input: 1, createdAt: 1, updatedAt: 1 })
        yield* store.appendEvent("r", { type: "data-before" } as unknown as WorkflowEvent.WorkflowEvent)
        const running: RunStore.StepRecord = { path: "0", stepId: "s", status: "running", stepCallId: "c", attempt: 1 }
        expect(yield* store.claimStep("r", running, undefined, started)).toBe(1)
        // A lost claim and a fenced-off write append nothing.
        expect(yield* store.claimStep("r", { ...running, stepCallId: "d" }, undefined, started)).toBeUndefined()
        yield* Effect.flip(store.putStep("r", { ...running, status: "success", output: 2 }, ended, { path: "0", stepCallId: "d" }))
        expect(yield* store.putStep("r", { ...running, status: "success", output: 2 }, ended, { path: "0", stepCallId: "c" }))
          .toBe(2)
        expect((yield* store.readEvents("r", 0, 10)).events.map((e) => e.type)).toEqual(["data-before", "data-start", "data-end"])
        expect(yield* sql`SELECT event FROM stepwise_steps WHERE run_id = 'r'`).toEqual([{ event: null }])
        // No run, no step row and no event.
        yield* Effect.flip(store.putStep("none", running, started))
        expect(yield* sql`SELECT COUNT(*) AS n FROM stepwise_events WHERE run_id = 'none'`).toEqual([{ n: 0 }])
      }).pipe(Effect.provide(Sqlite.layer({ filename })), Effect.scoped)
    }))

  it.effect("creates and finishes a SQLite run with its events in one statement each, leaving them in the log only", () =>
    Effect.gen(function*() {
      const filename = tempSqliteFile()
      yield* Effect.gen(function*() {
        const store = yield* RunStore.RunStore
        const sql = yield* SqlClient.SqlClient
        const event = (type: string) => ({ type }) as unknown as WorkflowEvent.WorkflowEvent
        expect(yield* store.createRun({ runId: "r", workflowId: "wf", status: "running", input: 1, createdAt: 1, updatedAt: 1 }, event("start")))
          .toBe(true)
        expect(yield* store.createRun({ runId: "r", workflowId: "wf", status: "running", input: 1, createdAt: 1, updatedAt: 1 }, event("again")))
          .toBe(false)
        yield* store.updateRun("r", { status: "success", output: 2 }, [event("a"), event("b")])
        expect((yield* store.readEvents("r", 0, 10)).events.map((e) => e.type)).toEqual(["start", "a", "b"])
        expect(yield* sql`SELECT events FROM stepwise_runs WHERE run_id = 'r'`).toEqual([{ events: null }])
      }).pipe(Effect.provide(Sqlite.layer({ filename })), Effect.scoped)
    }))

  it.effect("stores a Buffer, and a value whose toJSON answers bytes, as bytes", () =>
    Effect.gen(function*() {
      const store = yield* RunStore.RunStore
      yield* store.createRun({ runId: "r", workflowId: "wf", status: "running", input: 1, createdAt: 1, updatedAt: 1 })
      yield* store.appendChunks("r", "", [Buffer.from([8, 9]), { toJSON: () => ({ b: new Uint8Array([1]) }) }])
      const [buffer, viaToJson] = (yield* store.readChunks("r", "", 0, 10)).chunks as [unknown, { b: unknown }]
      expect(buffer).toBeInstanceOf(Uint8Array)
      expect(Array.from(buffer as Uint8Array)).toEqual([8, 9])
      expect(viaToJson.b).toBeInstanceOf(Uint8Array)
    }).pipe(Effect.provide(Sqlite.layer({ filename: ":memory:" })), Effect.scoped))

  it.effect("refuses to migrate through a migration that does not exist", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(SqlStore.migrateThrough("9_nothing"))
      expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain(`There is no migration named "9_nothing"`)
    }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:" })), Effect.scoped))
})

describe("RunStore.layerMemory retention", () => {
  it.effect("drops the oldest finished runs beyond maxFinishedRuns, never a run in progress", () =>
    Effect.gen(function*() {
      const store = yield* RunStore.RunStore
      yield* store.createRun(record("live"))
      for (const name of ["a", "b", "c", "d", "e"]) {
        yield* store.createRun(record(name))
        yield* TestClock.adjust("1 second")
        yield* store.updateRun(id(name), { status: "success" })
      }
      const left = (yield* store.listRuns({})).map((r) => r.runId).sort()
      expect(left).toEqual(["c", "d", "e", "live"].map(id))
    }).pipe(Effect.provide(RunStore.layerMemoryWith({ maxFinishedRuns: 3 }))))

  it.effect("never drops a run by its own finishing: with maxFinishedRuns 0 it goes when the next run starts", () =>
    Effect.gen(function*() {
      const store = yield* RunStore.RunStore
      yield* store.createRun(record("a"))
      yield* store.updateRun(id("a"), { status: "success" })
      // its last event can still be written, and its record read
      yield* store.appendEvent(id("a"), { type: "workflow-finish", runId: id("a"), from: "WORKFLOW", payload: { workflowStatus: "success" } })
      expect((yield* store.getRun(id("a")))?.status).toBe("success")
      yield* store.createRun(record("b"))
      expect(yield* store.getRun(id("a"))).toBeUndefined()
      yield* store.updateRun(id("b"), { status: "failed" })
      expect((yield* store.getRun(id("b")))?.status).toBe("failed")
    }).pipe(Effect.provide(RunStore.layerMemoryWith({ maxFinishedRuns: 0 }))))

  it.effect("drops finished runs older than the retention period", () =>
    Effect.gen(function*() {
      const store = yield* RunStore.RunStore
      yield* store.createRun(record("old"))
      yield* store.updateRun(id("old"), { status: "failed" })
      yield* TestClock.adjust("2 hours")
      yield* store.createRun(record("new"))
      expect(yield* store.getRun(id("old"))).toBeUndefined()
      expect(yield* store.getRun(id("new"))).toBeDefined()
    }).pipe(Effect.provide(RunStore.layerMemoryWith({ retention: "1 hour" }))))

  it.effect("refuses a negative bound with a clear message", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Layer.build(RunStore.layerMemoryWith({ maxFinishedRuns: -1 })).pipe(Effect.scoped))
      expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain("retention and maxFinishedRuns must be non-negative")
    }))
})
