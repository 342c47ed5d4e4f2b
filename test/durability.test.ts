import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Deferred, Effect, Layer, Schema, Stream } from "effect"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine, WorkflowEvent } from "stepwise"
import * as Sqlite from "stepwise/sqlite"
import { tempSqliteFile } from "./backends.js"

const N = Schema.Number

/** One engine instance with its own bus (as another process would have) over the SQLite file. */
const instance = (filename: string, ...workflows: ReadonlyArray<Workflow.Any>) =>
  Layer.provideMerge(WorkflowEngine.register(...workflows), WorkflowEngine.layerDefault).pipe(
    Layer.provideMerge(Layer.merge(EventBus.layerMemory, Sqlite.layer({ filename })))
  )

/** How many more writes of the flaky store fail, as a database that is down would. */
const flakyState = { failuresLeft: 0 }

const flakyStore: Layer.Layer<RunStore.RunStore> = Layer.effect(
  RunStore.RunStore,
  Effect.map(RunStore.makeMemory(), (store): RunStore.RunStore["Type"] => {
    const sometimes = <A, E>(operation: string, effect: Effect.Effect<A, E>): Effect.Effect<A, E | RunStore.RunStoreError> =>
      Effect.suspend((): Effect.Effect<A, E | RunStore.RunStoreError> =>
        flakyState.failuresLeft-- > 0
          ? Effect.fail(new RunStore.RunStoreError({ operation, reason: "connection refused (simulated)" }))
          : effect
      )
    return {
      ...store,
      appendEvent: (runId, event) => sometimes("append event", store.appendEvent(runId, event)),
      appendEvents: (runId, events) => sometimes("append events", store.appendEvents(runId, events)),
      putStep: (runId, record, event) => sometimes("store step result", store.putStep(runId, record, event))
    }
  })
)

const engineOf = (context: Context.Context<WorkflowEngine.WorkflowEngine>) =>
  Context.get(context, WorkflowEngine.WorkflowEngine)

/**
 * A run suspended at its `gate` step (after a first step) on a fresh SQLite file, in the current scope, with SQL access
 * so that a test can corrupt its rows.
 */
const suspendedOnSqlite = (id: string) =>
  Effect.gen(function*() {
    const wf = Workflow.make({ id, inputSchema: N, outputSchema: N }).pipe(
      Workflow.then(Step.make({ id: "first", inputSchema: N, outputSchema: N, execute: ({ inputData }) => Effect.succeed(inputData + 1) })),
      Workflow.then(Step.make({
        id: "gate",
        inputSchema: N,
        outputSchema: N,
        execute: ({ inputData, resumeData, suspend }) => resumeData === undefined ? suspend(null) : Effect.succeed(inputData)
      })),
      Workflow.commit
    )
    const context = yield* Layer.build(instance(tempSqliteFile(), wf))
    const engine = engineOf(context)
    const run = yield* engine.start(wf, 1)
    yield* Effect.flip(run.result)
    return { engine, run, sql: Context.get(context, SqlClient.SqlClient) }
  })

describe("durability", () => {
  it.live("a reader in another process follows a run live from the store, and ends when the run ends", () =>
    Effect.gen(function*() {
      const filename = tempSqliteFile()
      const producer = Workflow.make({ id: "producer", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(Step.make({
          id: "tick",
          inputSchema: N,
          outputSchema: N,
          execute: ({ inputData }) =>
            Effect.gen(function*() {
              const out = yield* Workflow.getWritable<number>()
              for (let i = 0; i < inputData; i++) {
                yield* out.write(i)
                yield* Effect.sleep("10 millis")
              }
              return inputData
            })
        })),
        Workflow.commit
      )
      const a = engineOf(yield* Layer.build(instance(filename, producer)))
      const b = engineOf(yield* Layer.build(instance(filename)))
      const run = yield* a.start(producer, 30)
      const remote = yield* b.getRun(run.runId)
      // the stream is not closed: the reader ends because the run ended, which it learns from the store
      const seen = yield* Stream.runCollect(remote.readable<number>())
      expect(Chunk.toArray(seen)).toEqual(Array.from({ length: 30 }, (_, i) => i))
      expect(yield* remote.result).toBe(30)
      const events = Chunk.toArray(yield* Stream.runCollect(remote.events({ startIndex: -1 })))
      expect(events.map((e) => e.type)).toEqual(["workflow-finish"])
      expect(yield* remote.streamSize()).toBe(30)
    }).pipe(Effect.scoped))

  it.effect("a suspended run stays suspended across a restart and is resumed by id from a new instance", () =>
    Effect.gen(function*() {
      const filename = tempSqliteFile()
      const approve = Workflow.make({ id: "approve", inputSchema: N, outputSchema: Schema.String }).pipe(
        Workflow.then(Step.make({
          id: "human",
          inputSchema: N,
          outputSchema: Schema.String,
          resumeSchema: Schema.Struct({ ok: Schema.Boolean }),
          execute: ({ inputData, resumeData, suspend }) =>
            resumeData === undefined ? suspend({ amount: inputData }) : Effect.succeed(resumeData.ok ? "approved" : "no")
        })),
        Workflow.commit
      )
      const runId = yield* Effect.scoped(Effect.gen(function*() {
        const run = yield* engineOf(yield* Layer.build(instance(filename, approve))).start(approve, 100)
        expect((yield* Effect.flip(run.result))._tag).toBe("RunSuspendedError")
        return run.runId
      }))
      yield* Effect.scoped(Effect.gen(function*() {
        const run = yield* engineOf(yield* Layer.build(instance(filename, approve))).getRun(runId)
        expect(yield* run.status).toBe("suspended")
        const suspended = yield* Effect.flip(run.result)
        expect(suspended._tag === "RunSuspendedError" && suspended.suspended[0]?.payload).toEqual({ amount: 100 })
        yield* run.resume({ step: "human", resumeData: { ok: true } })
        expect(yield* run.result).toBe("approved")
      }))
    }))

  it.effect("a step result row that no longer decodes fails its run with a message naming the run and the row", () =>
    Effect.scoped(Effect.gen(function*() {
      const { engine, run, sql } = yield* suspendedOnSqlite("corrupt")
      yield* sql`UPDATE stepwise_steps SET data = ${"{not json"} WHERE run_id = ${run.runId} AND path = ${"0"}`
      const refused = yield* Effect.flip(run.resume({ step: "gate", resumeData: "go" }))
      expect(refused.message).toContain("the run failed: its stored state is corrupt")
      const error = yield* Effect.flip(run.result)
      expect(error.message).toContain(`run ${run.runId}`)
      expect(error.message).toContain("step result at path 0")
      expect(error.message).toContain("is corrupt")
      expect(yield* run.status).toBe("failed")
      // the engine keeps serving other runs
      const other = yield* engine.start(
        Workflow.make({ id: "fine", inputSchema: N, outputSchema: N }).pipe(
          Workflow.map(({ inputData }) => Effect.succeed(inputData * 2)),
          Workflow.commit
        ),
        21
      )
      expect(yield* other.result).toBe(42)
    })))

  it.effect("a suspended run whose stored input no longer decodes: resume refuses, and the run fails saying why", () =>
    Effect.scoped(Effect.gen(function*() {
      const { run, sql } = yield* suspendedOnSqlite("corrupt-input")
      // a well-formed row whose value the workflow's inputSchema (a number) no longer accepts
      yield* sql`UPDATE stepwise_runs SET input = ${JSON.stringify({ v: "one" })} WHERE run_id = ${run.runId}`
      const refused = yield* Effect.flip(run.resume({ step: "gate", resumeData: "go" }))
      expect(refused.message).toContain("its stored input no longer decodes")
      const error = yield* Effect.flip(run.result)
      expect(error.message).toContain(`The stored input of run ${run.runId} no longer decodes`)
      expect(yield* run.status).toBe("failed")
    })))

  it.live("evented engine: a running run whose stored input stops decoding fails saying why, at its next step", () =>
    Effect.scoped(Effect.gen(function*() {
      const entered = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      let afterRan = false
      const wf = Workflow.make({ id: "corrupt-input-evented", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(Step.make({
          id: "slow",
          inputSchema: N,
          outputSchema: N,
          execute: ({ inputData }) =>
            Effect.zipRight(Deferred.succeed(entered, undefined), Effect.as(Deferred.await(release), inputData))
        })),
        Workflow.then(Step.make({
          id: "after",
          inputSchema: N,
          outputSchema: N,
          execute: ({ inputData }) => Effect.sync(() => (afterRan = true, inputData))
        })),
        Workflow.commit
      )
      const context = yield* Layer.build(
        // A long lease: the periodic takeover (which would also fail the run, seconds later) stays out of the test.
        Layer.provideMerge(WorkflowEngine.register(wf), WorkflowEngine.layerEventedWith({ lease: "1 hour" })).pipe(
          Layer.provideMerge(Layer.merge(EventBus.layerMemory, Sqlite.layer({ filename: tempSqliteFile() })))
        )
      )
      const run = yield* engineOf(context).start(wf, 1)
      yield* Deferred.await(entered)
      const sql = Context.get(context, SqlClient.SqlClient)
      // a well-formed row whose value the workflow's inputSchema (a number) no longer accepts
      yield* sql`UPDATE stepwise_runs SET input = ${JSON.stringify({ v: "one" })} WHERE run_id = ${run.runId}`
      yield* Deferred.succeed(release, undefined)
      const error = yield* Effect.flip(run.result).pipe(
        Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("the run never settled") })
      )
      expect(error.message).toContain(`The stored input of run ${run.runId} no longer decodes`)
      expect(yield* run.status).toBe("failed")
      expect(afterRan).toBe(false)
      const types = Chunk.toArray(yield* Stream.runCollect(run.events())).map((e) => e.type)
      expect(types.filter((t) => t === "workflow-finish")).toHaveLength(1)
    })))

  it.effect("a chunk row that no longer decodes fails its readers with a message naming the row", () =>
    Effect.gen(function*() {
      const filename = tempSqliteFile()
      const wf = Workflow.make({ id: "chunks", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(Step.make({
          id: "write",
          inputSchema: N,
          outputSchema: N,
          execute: ({ inputData }) => Effect.as(Effect.flatMap(Workflow.getWritable<string>(), (w) => w.write("ok")), inputData)
        })),
        Workflow.commit
      )
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(instance(filename, wf))
        const run = yield* engineOf(context).start(wf, 1)
        yield* run.result
        yield* Context.get(context, SqlClient.SqlClient)`UPDATE stepwise_chunks SET data = ${"]["} WHERE run_id = ${run.runId}`
        const error = yield* Effect.flip(Stream.runCollect(run.readable()))
        expect(error._tag).toBe("RunStreamError")
        expect(error.message).toContain(`chunk 0 of stream "" of run ${run.runId} is corrupt`)
      }))
    }))

  it.effect("a run started and awaited here reads no step records, and reads the run once, for its result", () =>
    Effect.gen(function*() {
      const calls: Array<string> = []
      const store = yield* RunStore.makeMemory()
      const counting = RunStore.RunStore.of({
        ...store,
        getSteps: (runId, since) => Effect.zipRight(Effect.sync(() => calls.push("getSteps")), store.getSteps(runId, since)),
        getRun: (runId) => Effect.zipRight(Effect.sync(() => calls.push("getRun")), store.getRun(runId))
      })
      const wf = Workflow.make({ id: "reads", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(Step.make({ id: "a", inputSchema: N, outputSchema: N, execute: ({ inputData }) => Effect.succeed(inputData + 1) })),
        Workflow.then(Step.make({ id: "b", inputSchema: N, outputSchema: N, execute: ({ inputData }) => Effect.succeed(inputData * 2) })),
        Workflow.commit
      )
      const context = yield* Layer.build(WorkflowEngine.layerDefault.pipe(
        Layer.provide(Layer.merge(EventBus.layerMemory, Layer.succeed(RunStore.RunStore, counting)))
      ))
      const run = yield* engineOf(context).start(wf, 1)
      expect(yield* run.result).toBe(4)
      expect(calls).toEqual(["getRun"])
      // A second wait for the settled run reads it again.
      expect(yield* run.result).toBe(4)
      expect(calls).toEqual(["getRun", "getRun"])
    }).pipe(Effect.scoped))

  it.live("transient store failures are retried, and the run completes as if nothing happened", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const wf = Workflow.make({ id: "flaky-store", inputSchema: N, outputSchema: N }).pipe(
        Workflow.then(Step.make({ id: "a", inputSchema: N, outputSchema: N, execute: ({ inputData }) => Effect.succeed(inputData + 1) })),
        Workflow.then(Step.make({ id: "b", inputSchema: N, outputSchema: N, execute: ({ inputData }) => Effect.succeed(inputData * 2) })),
        Workflow.commit
      )
      flakyState.failuresLeft = 6
      const run = yield* engine.start(wf, 1)
      expect(yield* run.result).toBe(4)
      expect(flakyState.failuresLeft).toBeLessThan(0)
      const events = Chunk.toArray(yield* Stream.runCollect(run.events()))
      expect(events.filter(WorkflowEvent.is("workflow-step-result")).map((e) => e.payload.id)).toEqual(["a", "b"])
      expect(events.filter((e) => e.type === "workflow-finish")).toHaveLength(1)
    }).pipe(Effect.provide(WorkflowEngine.layerDefault.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, flakyStore))))))
})
