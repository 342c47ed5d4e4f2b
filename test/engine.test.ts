import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Schema, Stream } from "effect"
import { type Run, Step, Workflow, WorkflowEngine } from "stepwise"
import { engines, observe } from "./engines.js"
import { scenarios } from "./scenarios.js"


/** A user service, given to `start`, that user code reads. */
class Prefix extends Context.Tag("test/Prefix")<Prefix, string>() {}

for (const engine of engines) {
  describe(`${engine.name} engine`, () => {
    for (const scenario of scenarios) {
      it.effect(scenario.name, () =>
        Effect.gen(function*() {
          scenario.check(yield* observe(scenario))
        }).pipe(Effect.provide(engine.layer)))
    }

    it.effect("a defect in one run fails that run only: 100 runs, one throws, 99 succeed", () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const step = Step.make({
          id: "maybe-throw",
          inputSchema: Schema.Number,
          outputSchema: Schema.Number,
          execute: ({ inputData }) =>
            Effect.sync(() => {
              if (inputData === 42) throw new Error("run 42 throws")
              return inputData * 2
            })
        })
        const wf = Workflow.make({ id: "hundred", inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
          Workflow.then(step),
          Workflow.commit
        )
        const runs = yield* Effect.forEach(Array.from({ length: 100 }, (_, i) => i), (i) => engine.start(wf, i))
        const exits = yield* Effect.forEach(runs, (run) => Effect.exit(run.result))
        expect(exits.filter(Exit.isSuccess)).toHaveLength(99)
        const failed = exits.flatMap((exit, i) => Exit.isFailure(exit) ? [i] : [])
        expect(failed).toEqual([42])
        expect(yield* runs[42]!.status).toBe("failed")
        // the engine still serves new runs
        const after = yield* engine.start(wf, 1)
        expect(yield* after.result).toBe(2)
      }).pipe(Effect.provide(engine.layer)))

    it.effect("the services given at start reach all user code: a step, a condition, a sleep function and a map", () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const seen: Array<string> = []
        const record = (site: string) => Effect.map(Prefix, (prefix) => void seen.push(`${prefix}:${site}`))
        const wf = Workflow.make({ id: "uses-a-service", inputSchema: Schema.Number, outputSchema: Schema.String }).pipe(
          Workflow.then(Step.make({
            id: "step",
            inputSchema: Schema.Number,
            outputSchema: Schema.Number,
            execute: ({ inputData }) => Effect.as(record("step"), inputData)
          })),
          Workflow.branch([[
            () => Effect.as(record("condition"), true),
            Step.make({ id: "chosen", inputSchema: Schema.Number, outputSchema: Schema.Number, execute: ({ inputData }) => Effect.succeed(inputData) })
          ]]),
          Workflow.sleep(() => Effect.as(record("sleep"), "0 millis")),
          Workflow.map(() => Effect.flatMap(record("map"), () => Effect.map(Prefix, (prefix) => `${prefix} done`))),
          Workflow.commit
        )
        const run = yield* Effect.provideService(engine.start(wf, 1), Prefix, "svc")
        expect(yield* run.result).toBe("svc done")
        expect(seen).toEqual(["svc:step", "svc:condition", "svc:sleep", "svc:map"])
      }).pipe(Effect.provide(engine.layer)))

    it.effect("start with input that breaks the inputSchema fails with WorkflowInputError and creates no run", () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const wf = Workflow.make({
          id: "typed-input",
          inputSchema: Schema.Struct({ userId: Schema.String }),
          outputSchema: Schema.Unknown
        }).pipe(Workflow.map(({ inputData }) => Effect.succeed(inputData)), Workflow.commit)
        const error = yield* Effect.flip(
          engine.start(wf, { userId: 7 } as unknown as { userId: string }, { runId: "never-created" })
        )
        expect(error._tag).toBe("WorkflowInputError")
        expect(error.message).toContain(`Cannot start workflow "typed-input"`)
        expect(error.message).toContain(`["userId"]`)
        expect(error.message).toContain("No run was created")
        const missing = yield* Effect.flip(engine.getRun("never-created"))
        expect(missing._tag).toBe("RunNotFoundError")
        expect(missing.message).toContain("never-created")
      }).pipe(Effect.provide(engine.layer)))

    it.effect("starting with the runId of an existing run answers that run; another workflow's id is refused", () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const make = (id: string) =>
          Workflow.make({ id, inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
            Workflow.map(({ inputData }) => Effect.succeed(inputData + 1)),
            Workflow.commit
          )
        const first = yield* engine.start(make("one"), 1, { runId: "fixed" })
        expect(yield* first.result).toBe(2)
        const again = yield* engine.start(make("one"), 100, { runId: "fixed" })
        expect(yield* again.result).toBe(2)
        const clash = yield* Effect.flip(engine.start(make("two"), 1, { runId: "fixed" }))
        expect(clash.message).toContain(`runId "fixed" already belongs to a run of workflow "one"`)
      }).pipe(Effect.provide(engine.layer)))

    it.effect("getRun finds a run by id, with its status, events and result", () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const wf = Workflow.make({ id: "found", inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
          Workflow.map(({ inputData }) => Effect.succeed(inputData * 3)),
          Workflow.commit
        )
        const run = yield* engine.start(wf, 5)
        yield* run.result
        const found = yield* engine.getRun(run.runId)
        expect(found.workflowId).toBe("found")
        expect(yield* found.status).toBe("success")
        expect(yield* found.result).toBe(15)
        const events = yield* Stream.runCollect(found.events())
        expect(Array.from(events).at(-1)?.type).toBe("workflow-finish")
      }).pipe(Effect.provide(engine.layer)))

    it.effect("cancel runs the finalizers of the interrupted step", () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        let finalized = false
        let started = false
        const wf = Workflow.make({ id: "finalizers", inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
          Workflow.then(Step.make({
            id: "holds-resource",
            inputSchema: Schema.Number,
            outputSchema: Schema.Number,
            execute: ({ inputData }) =>
              Effect.acquireUseRelease(
                Effect.sync(() => {
                  started = true
                }),
                () => Effect.as(Effect.never, inputData),
                () =>
                  Effect.sync(() => {
                    finalized = true
                  })
              )
          })),
          Workflow.commit
        )
        const run = yield* engine.start(wf, 1)
        while (!started) yield* Effect.yieldNow()
        yield* run.cancel
        expect(finalized).toBe(true)
        expect((yield* Effect.flip(run.result))._tag).toBe("RunCanceledError")
        expect(yield* run.status).toBe("canceled")
        // canceling again, or a finished run, does nothing
        yield* run.cancel
        expect(yield* run.status).toBe("canceled")
      }).pipe(Effect.provide(engine.layer)))

    it.effect("cancel during a parallel interrupts every running branch before the run is recorded canceled", () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const started = new Set<string>()
        // each interrupted branch's finalizer notes the run's status as the store has it then
        const finalized: Array<string> = []
        let handle: Run.Run<unknown, unknown> | undefined
        const holds = (id: string) =>
          Step.make({
            id,
            inputSchema: Schema.Number,
            outputSchema: Schema.Number,
            execute: ({ inputData }) =>
              Effect.acquireUseRelease(
                Effect.sync(() => started.add(id)),
                () => Effect.as(Effect.never, inputData),
                () =>
                  Effect.flatMap(
                    handle === undefined ? Effect.succeed("no handle") : handle.status,
                    (status) => Effect.sync(() => finalized.push(`${id}: ${status}`))
                  )
              )
          })
        const quick = Step.make({
          id: "quick",
          inputSchema: Schema.Number,
          outputSchema: Schema.Number,
          execute: ({ inputData }) => Effect.succeed(inputData)
        })
        const wf = Workflow.make({
          id: "parallel-cancel",
          inputSchema: Schema.Number,
          outputSchema: Schema.Record({ key: Schema.String, value: Schema.Number })
        }).pipe(Workflow.parallel([holds("a"), quick, holds("b")]), Workflow.commit)
        const run = yield* engine.start(wf, 1)
        handle = run
        while (started.size < 2) yield* Effect.yieldNow()
        yield* run.cancel
        // both branches were interrupted before the run was recorded canceled, and before cancel returned
        expect(finalized.sort()).toEqual(["a: running", "b: running"])
        expect((yield* Effect.flip(run.result))._tag).toBe("RunCanceledError")
        const types = Array.from(yield* Stream.runCollect(run.events())).map((e) => e.type)
        expect(types.slice(-2)).toEqual(["workflow-canceled", "workflow-finish"])
        expect(types.filter((t) => t === "workflow-canceled")).toHaveLength(1)
      }).pipe(Effect.provide(engine.layer)))

    it.effect("cancel of a suspended run records it canceled", () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const wf = Workflow.make({ id: "suspend-cancel", inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
          Workflow.then(Step.make({
            id: "wait-for-human",
            inputSchema: Schema.Number,
            outputSchema: Schema.Number,
            execute: ({ suspend }) => suspend("please")
          })),
          Workflow.commit
        )
        const run = yield* engine.start(wf, 1)
        expect((yield* Effect.flip(run.result))._tag).toBe("RunSuspendedError")
        yield* run.cancel
        expect(yield* run.status).toBe("canceled")
        const error = yield* Effect.flip(run.result)
        expect(error.message).toBe(`Run ${run.runId} was canceled before it finished.`)
        const types = Array.from(yield* Stream.runCollect(run.events())).map((e) => e.type)
        expect(types.slice(-2)).toEqual(["workflow-canceled", "workflow-finish"])
      }).pipe(Effect.provide(engine.layer)))

    it.effect("resume refuses what it cannot do, with messages that say why", () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const ask = Step.make({
          id: "ask",
          inputSchema: Schema.Number,
          outputSchema: Schema.Number,
          resumeSchema: Schema.Struct({ answer: Schema.Number }),
          execute: ({ resumeData, suspend }) =>
            resumeData === undefined ? suspend("question") : Effect.succeed(resumeData.answer)
        })
        const wf = Workflow.make({ id: "resume-errors", inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
          Workflow.then(ask),
          Workflow.commit
        )
        const run = yield* engine.start(wf, 1)
        const suspended = yield* Effect.flip(run.result)
        expect(suspended.message).toContain(`suspended at "ask"`)

        const wrongStep = yield* Effect.flip(run.resume({ step: "nope", resumeData: { answer: 1 } }))
        expect(wrongStep.message).toContain(`no step "nope" is suspended; suspended: "ask"`)
        const badData = yield* Effect.flip(run.resume({ step: "ask", resumeData: { answer: "x" } }))
        expect(badData.message).toContain("resumeData does not match the step's resumeSchema")
        expect(badData.message).toContain(`["answer"]`)

        yield* run.resume({ step: "ask", resumeData: { answer: 42 } })
        expect(yield* run.result).toBe(42)
        const notSuspended = yield* Effect.flip(run.resume({ step: "ask", resumeData: { answer: 1 } }))
        expect(notSuspended.message).toContain("the run is success, not suspended")
      }).pipe(Effect.provide(engine.layer)))

    it.effect("a resumed run never re-executes the steps that finished before the suspension", () =>
      Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        let firstRuns = 0
        const first = Step.make({
          id: "first",
          inputSchema: Schema.Number,
          outputSchema: Schema.Number,
          execute: ({ inputData }) =>
            Effect.sync(() => {
              firstRuns++
              return inputData + 1
            })
        })
        const gate = Step.make({
          id: "gate",
          inputSchema: Schema.Number,
          outputSchema: Schema.Number,
          execute: ({ inputData, resumeData, suspend }) =>
            resumeData === undefined ? suspend(null) : Effect.succeed(inputData * 10)
        })
        const wf = Workflow.make({ id: "replay", inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
          Workflow.then(first),
          Workflow.then(gate),
          Workflow.commit
        )
        const run = yield* engine.start(wf, 1)
        yield* Effect.flip(run.result)
        yield* run.resume({ step: "gate", resumeData: "go" })
        expect(yield* run.result).toBe(20)
        expect(firstRuns).toBe(1)
      }).pipe(Effect.provide(engine.layer)))
  })
}
