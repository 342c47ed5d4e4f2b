/**
 * The scenario table: one workflow per behaviour, each with how to drive it and what to expect. The same table runs
 * against every engine (and later every backend); the parity suite also compares the engines with each other.
 */
import { assert, expect } from "@effect/vitest"
import { Cause, Data, Duration, Effect, Exit, ParseResult, Schedule, Schema, Stream, TestClock } from "effect"
import { Step, Workflow, WorkflowEvent } from "stepwise"
import type { Run } from "stepwise"

/** What a scenario run produced, ready to compare. */
export interface Observed {
  readonly runId: string
  readonly exit: Exit.Exit<unknown, unknown>
  readonly events: ReadonlyArray<WorkflowEvent.WorkflowEvent>
  readonly streams: Readonly<Record<string, ReadonlyArray<unknown>>>
  readonly status: string
}

export interface Scenario {
  readonly name: string
  /** Steps run concurrently: engines may interleave their events differently (each step's own order holds). */
  readonly concurrent?: boolean
  readonly workflow: Workflow.Any
  readonly input: unknown
  /** Stream namespaces to read ("" is the default stream). */
  readonly streams?: ReadonlyArray<string>
  /** What to do to the run after it starts (advance the clock, resume, cancel). */
  readonly drive?: (run: Run.Run<unknown, unknown>) => Effect.Effect<void, unknown>
  readonly check: (observed: Observed) => void
}

const Num = Schema.Struct({ n: Schema.Number })
/** `Num`, whose encoding waits for a promise: no synchronous parser can run it. */
const AsyncNum = Schema.Struct({
  n: Schema.transformOrFail(Schema.Number, Schema.Number, {
    strict: true,
    decode: (n) => ParseResult.succeed(n),
    encode: (n) => Effect.promise(() => Promise.resolve(n))
  })
})

const add = (id: string, k: number) =>
  Step.make({
    id,
    inputSchema: Num,
    outputSchema: Num,
    execute: ({ inputData }) => Effect.succeed({ n: inputData.n + k })
  })

const writes = (id: string, count: number) =>
  Step.make({
    id,
    inputSchema: Num,
    outputSchema: Num,
    execute: ({ inputData, writer }) =>
      Effect.gen(function*() {
        for (let i = 0; i < count; i++) yield* writer.write({ step: id, i })
        yield* writer.custom({ type: "data-done", step: id })
        return inputData
      })
  })

const wf = (id: string) => Workflow.make({ id, inputSchema: Num, outputSchema: Schema.Unknown })

/** Resolves once the run is in `status` (polling with yields: no real time passes). */
export const awaitStatus = (run: Run.Run<unknown, unknown>, status: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 100_000; i++) {
      if ((yield* run.status) === status) return
      yield* Effect.yieldNow()
    }
    return yield* Effect.dieMessage(`run never reached ${status}`)
  })

/** Moves the test clock forward step by step until the run settles (each look at the status lets I/O happen). */
const advanceUntilSettled = (run: Run.Run<unknown, unknown>, step: Duration.DurationInput) =>
  Effect.gen(function*() {
    for (let i = 0; i < 10_000; i++) {
      const status = yield* run.status
      if (status !== "running" && status !== "waiting" && status !== "pending") return
      yield* TestClock.adjust(step)
    }
  })

/** Waits until the run's log holds `count` events that `predicate` accepts. */
const awaitEvents = (
  run: Run.Run<unknown, unknown>,
  predicate: (event: WorkflowEvent.WorkflowEvent) => boolean,
  count: number
) =>
  run.events().pipe(
    Stream.filter(predicate),
    Stream.take(count),
    Stream.runDrain
  )

const sleepThrough = (run: Run.Run<unknown, unknown>, duration: Duration.DurationInput) =>
  Effect.zipRight(awaitStatus(run, "waiting"), TestClock.adjust(duration))

const types = (observed: Observed) => observed.events.map((e) => e.type)
const outputs = (observed: Observed) =>
  observed.events.filter(WorkflowEvent.is("workflow-step-output")).map((e) => e.payload.output)
const success = (observed: Observed): unknown => {
  if (Exit.isFailure(observed.exit)) assert.fail(`expected success, got ${Cause.pretty(observed.exit.cause)}`)
  return observed.exit.value
}
const failure = (observed: Observed): { readonly _tag: string; readonly message: string } => {
  if (Exit.isSuccess(observed.exit)) return assert.fail("expected a failure")
  const error = Cause.failureOption(observed.exit.cause)
  if (error._tag === "None") return assert.fail(`expected a typed failure, got ${Cause.pretty(observed.exit.cause)}`)
  return error.value as { readonly _tag: string; readonly message: string }
}

class Boom extends Data.TaggedError("Boom")<{ readonly message: string }> {}

const flaky = (failures: number) => {
  let calls = 0
  return Step.make({
    id: "flaky",
    inputSchema: Num,
    outputSchema: Schema.Struct({ n: Schema.Number, attempt: Schema.Number }),
    retry: Schedule.recurs(failures),
    execute: ({ attempt, inputData, writer }) =>
      Effect.gen(function*() {
        calls++
        yield* writer.write({ attempt })
        if (attempt <= failures) return yield* new Boom({ message: `attempt ${attempt} failed` })
        return { n: inputData.n, attempt }
      })
  })
}

const approval = Step.make({
  id: "approval",
  inputSchema: Num,
  outputSchema: Schema.Struct({ n: Schema.Number, approved: Schema.Boolean }),
  resumeSchema: Schema.Struct({ approved: Schema.Boolean }),
  suspendSchema: Schema.Struct({ question: Schema.String }),
  execute: ({ inputData, resumeData, suspend, writer }) =>
    Effect.gen(function*() {
      yield* writer.write({ resumed: resumeData !== undefined })
      if (resumeData === undefined) return yield* suspend({ question: `approve ${inputData.n}?` })
      return { n: inputData.n, approved: resumeData.approved }
    })
})

const approvalNamed = (id: string) =>
  Step.make({
    id,
    inputSchema: Num,
    outputSchema: Schema.String,
    resumeSchema: Schema.String,
    execute: ({ resumeData, suspend }) => resumeData === undefined ? suspend(id) : Effect.succeed(`${id}:${resumeData}`)
  })

const logLines = Step.make({
  id: "log-lines",
  inputSchema: Num,
  outputSchema: Num,
  execute: ({ inputData }) =>
    Effect.gen(function*() {
      const main = yield* Workflow.getWritable<{ readonly message: string }>()
      const logs = yield* Workflow.getWritable<string>({ namespace: "logs" })
      yield* main.write({ message: "default stream data" })
      yield* logs.write("named stream data")
      yield* logs.write("second line")
      return inputData
    })
})

const closeAll = Step.make({
  id: "close-all",
  inputSchema: Num,
  outputSchema: Num,
  execute: ({ inputData }) =>
    Effect.gen(function*() {
      yield* (yield* Workflow.getWritable()).close
      yield* (yield* Workflow.getWritable({ namespace: "logs" })).close
      return inputData
    })
})

const child = Workflow.make({ id: "child", inputSchema: Num, outputSchema: Num }).pipe(
  Workflow.then(writes("child-writer", 2)),
  Workflow.then(add("child-add", 5)),
  Workflow.commit
)

/** A nested workflow that sleeps, then adds. */
const sleepsThenAdds = (id: string, duration: Duration.DurationInput, k: number) =>
  Workflow.make({ id, inputSchema: Num, outputSchema: Num }).pipe(
    Workflow.sleep(duration),
    Workflow.then(add(`${id}-add`, k)),
    Workflow.commit
  )

/** A step that takes `duration` of the app's clock. */
const slow = (id: string, duration: Duration.DurationInput) =>
  Step.make({
    id,
    inputSchema: Num,
    outputSchema: Num,
    execute: ({ inputData }) => Effect.as(Effect.sleep(duration), inputData)
  })

export const scenarios: ReadonlyArray<Scenario> = [
  {
    name: "then runs steps in order, each on the previous output",
    workflow: wf("linear").pipe(Workflow.then(add("a", 1)), Workflow.then(add("b", 10)), Workflow.commit),
    input: { n: 1 },
    check: (o) => {
      expect(success(o)).toEqual({ n: 12 })
      expect(types(o)).toEqual([
        "workflow-start",
        "workflow-step-start",
        "workflow-step-result",
        "workflow-step-start",
        "workflow-step-result",
        "workflow-finish"
      ])
    }
  },
  {
    name: "parallel outputs a record keyed by step id",
    concurrent: true,
    workflow: wf("parallel").pipe(Workflow.parallel([add("a", 1), add("b", 2)]), Workflow.commit),
    input: { n: 1 },
    check: (o) => expect(success(o)).toEqual({ a: { n: 2 }, b: { n: 3 } })
  },
  {
    name: "parallel writers keep each writer's order and lose nothing",
    concurrent: true,
    workflow: wf("parallel-writers").pipe(
      Workflow.parallel([writes("w1", 50), writes("w2", 50), writes("w3", 50)]),
      Workflow.commit
    ),
    input: { n: 0 },
    check: (o) => {
      for (const id of ["w1", "w2", "w3"]) {
        const mine = outputs(o).filter((x) => (x as { step: string }).step === id).map((x) => (x as { i: number }).i)
        expect(mine).toEqual(Array.from({ length: 50 }, (_, i) => i))
      }
      expect(o.events.filter((e) => e.type === "data-done")).toHaveLength(3)
    }
  },
  {
    name: "branch runs the steps whose condition holds",
    workflow: wf("branch").pipe(
      Workflow.branch([
        [({ inputData }) => Effect.succeed(inputData.n > 10), add("big", 100)],
        [({ inputData }) => Effect.succeed(inputData.n <= 10), add("small", 1)]
      ]),
      Workflow.commit
    ),
    input: { n: 3 },
    check: (o) => expect(success(o)).toEqual({ small: { n: 4 } })
  },
  {
    name: "branch with no condition holding outputs an empty record",
    workflow: wf("branch-none").pipe(
      Workflow.branch([[() => Effect.succeed(false), add("never", 1)]]),
      Workflow.commit
    ),
    input: { n: 3 },
    check: (o) => {
      expect(success(o)).toEqual({})
      expect(types(o)).not.toContain("workflow-step-start")
    }
  },
  {
    name: "branch conditions get a writer and can open run streams",
    workflow: wf("branch-writer").pipe(
      Workflow.branch([
        [({ inputData, writer }) =>
          Effect.gen(function*() {
            yield* writer.write({ checking: inputData.n })
            yield* writer.custom({ type: "data-condition", n: inputData.n })
            yield* (yield* Workflow.getWritable<string>({ namespace: "trace" })).write("condition ran")
            return true
          }), add("picked", 1)]
      ]),
      Workflow.commit
    ),
    input: { n: 7 },
    streams: ["trace"],
    check: (o) => {
      expect(outputs(o)).toEqual([{ checking: 7 }])
      expect(o.events.find((e) => e.type === "data-condition")).toEqual({ type: "data-condition", n: 7 })
      expect(o.streams["trace"]).toEqual(["condition ran"])
    }
  },
  {
    name: "sleep waits the duration, then passes its input through",
    workflow: wf("sleep").pipe(Workflow.sleep("1 hour"), Workflow.then(add("after", 1)), Workflow.commit),
    input: { n: 1 },
    drive: (run) => sleepThrough(run, "1 hour"),
    check: (o) => {
      expect(success(o)).toEqual({ n: 2 })
      const waiting = o.events.find(WorkflowEvent.is("workflow-step-waiting"))
      expect(waiting?.payload.until! - waiting?.payload.startedAt!).toBe(3_600_000)
    }
  },
  {
    name: "a sleep function computes the duration and gets a writer",
    workflow: wf("sleep-fn").pipe(
      Workflow.sleep(({ inputData, writer }) => Effect.as(writer.write({ sleeping: inputData.n }), Duration.seconds(inputData.n))),
      Workflow.commit
    ),
    input: { n: 5 },
    drive: (run) => sleepThrough(run, "5 seconds"),
    check: (o) => {
      expect(success(o)).toEqual({ n: 5 })
      expect(outputs(o)).toEqual([{ sleeping: 5 }])
    }
  },
  {
    name: "sleepUntil waits until the computed date and gets a writer",
    workflow: wf("sleep-until").pipe(
      Workflow.sleepUntil(({ writer }) =>
        Effect.gen(function*() {
          yield* writer.custom({ type: "data-until" })
          const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
          return new Date(now + 60_000)
        })
      ),
      Workflow.commit
    ),
    input: { n: 1 },
    drive: (run) => sleepThrough(run, "1 minute"),
    check: (o) => {
      expect(success(o)).toEqual({ n: 1 })
      expect(o.events.filter((e) => e.type === "data-until")).toHaveLength(1)
    }
  },
  {
    name: "dowhile repeats while the condition holds",
    workflow: wf("dowhile").pipe(
      Workflow.dowhile(add("inc", 1), ({ inputData }) => Effect.succeed(inputData.n < 5)),
      Workflow.commit
    ),
    input: { n: 0 },
    check: (o) => {
      expect(success(o)).toEqual({ n: 5 })
      expect(o.events.filter((e) => e.type === "workflow-step-start")).toHaveLength(5)
    }
  },
  {
    name: "dountil repeats until the condition holds",
    workflow: wf("dountil").pipe(
      Workflow.dountil(add("inc", 2), ({ inputData, writer }) =>
        Effect.as(writer.write({ at: inputData.n }), inputData.n >= 6)),
      Workflow.commit
    ),
    input: { n: 0 },
    check: (o) => {
      expect(success(o)).toEqual({ n: 6 })
      expect(outputs(o)).toEqual([{ at: 2 }, { at: 4 }, { at: 6 }])
    }
  },
  {
    name: "foreach maps a step over an array, keeping input order",
    concurrent: true,
    workflow: Workflow.make({ id: "foreach", inputSchema: Schema.Array(Num), outputSchema: Schema.Unknown }).pipe(
      Workflow.foreach(add("each", 1), { concurrency: 2 }),
      Workflow.commit
    ),
    input: [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }, { n: 5 }],
    check: (o) => expect(success(o)).toEqual([{ n: 2 }, { n: 3 }, { n: 4 }, { n: 5 }, { n: 6 }])
  },
  {
    name: "map transforms the output with a writer in its context",
    workflow: wf("map").pipe(
      Workflow.map(({ inputData, writer }) => Effect.as(writer.write("mapping"), { doubled: inputData.n * 2 })),
      Workflow.commit
    ),
    input: { n: 21 },
    check: (o) => {
      expect(success(o)).toEqual({ doubled: 42 })
      expect(outputs(o)).toEqual(["mapping"])
    }
  },
  {
    name: "a nested workflow runs as a step and its writer events reach the parent run",
    workflow: wf("parent").pipe(Workflow.then(child), Workflow.then(add("after-child", 1)), Workflow.commit),
    input: { n: 1 },
    check: (o) => {
      expect(success(o)).toEqual({ n: 7 })
      expect(outputs(o)).toEqual([{ step: "child-writer", i: 0 }, { step: "child-writer", i: 1 }])
      const ids = o.events.filter(WorkflowEvent.is("workflow-step-start")).map((e) => e.payload.id)
      expect(ids).toEqual(["child", "child-writer", "child-add", "after-child"])
      expect(new Set(o.events.filter(WorkflowEvent.isBuiltin).map((e) => e.runId)).size).toBe(1)
    }
  },
  {
    name: "getStepResult and getInitData see earlier steps and the workflow input",
    workflow: wf("lookups").pipe(
      Workflow.then(add("first", 1)),
      Workflow.then(add("second", 1)),
      Workflow.map(({ getInitData, getStepResult }) =>
        Effect.succeed({ init: getInitData<{ n: number }>().n, first: getStepResult("first") })
      ),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) => expect(success(o)).toEqual({ init: 1, first: { n: 2 } })
  },
  {
    // The evented engine replays the recorded branch, parallel, loop and foreach before the last step without Effect
    // (interpreter.ts: replayedNode); the default engine runs them. Both must give the last step the same lookups.
    name: "getStepResult sees the steps of earlier branches, parallels and loops",
    concurrent: true,
    workflow: wf("lookups-nested").pipe(
      Workflow.branch([
        [({ inputData }) => Effect.succeed(inputData.n > 0), add("taken", 1)],
        [() => Effect.succeed(false), add("skipped", 100)]
      ]),
      Workflow.map(({ inputData }) => Effect.succeed(inputData.taken ?? { n: -1 })),
      Workflow.parallel([add("left", 10), add("right", 20)]),
      Workflow.map(({ inputData }) => Effect.succeed({ n: (inputData.left?.n ?? 0) + (inputData.right?.n ?? 0) })),
      Workflow.dountil(add("again", 1), ({ inputData }) => Effect.succeed(inputData.n >= 36)),
      Workflow.map(({ inputData }) => Effect.succeed([inputData, { n: 0 }])),
      Workflow.foreach(add("item", 1)),
      Workflow.then(Step.make({
        id: "look",
        inputSchema: Schema.Array(Num),
        outputSchema: Schema.Unknown,
        execute: ({ inputData, getStepResult }) =>
          Effect.succeed({
            items: inputData,
            taken: getStepResult("taken"),
            skipped: getStepResult("skipped") ?? null,
            left: getStepResult("left"),
            right: getStepResult("right"),
            again: getStepResult("again")
          })
      })),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) =>
      expect(success(o)).toEqual({
        items: [{ n: 37 }, { n: 1 }],
        taken: { n: 2 },
        skipped: null,
        left: { n: 12 },
        right: { n: 22 },
        again: { n: 36 }
      })
  },
  {
    name: "suspend ends the step as suspended, and resume continues it with resumeData",
    workflow: wf("approve").pipe(Workflow.then(approval), Workflow.commit),
    input: { n: 9 },
    drive: (run) =>
      Effect.gen(function*() {
        const first = yield* Effect.flip(run.result)
        expect(first._tag).toBe("RunSuspendedError")
        expect(yield* run.status).toBe("suspended")
        yield* run.resume({ step: "approval", resumeData: { approved: true } })
      }),
    check: (o) => {
      expect(success(o)).toEqual({ n: 9, approved: true })
      expect(types(o)).toContain("workflow-step-suspended")
      const suspended = o.events.find(WorkflowEvent.is("workflow-step-suspended"))
      expect(suspended?.payload).toEqual({ id: "approval", suspendPayload: { question: "approve 9?" } })
      expect(outputs(o)).toEqual([{ resumed: false }, { resumed: true }])
      expect(types(o).filter((t) => t === "workflow-finish")).toHaveLength(1)
    }
  },
  {
    name: "parallel suspensions are resumed one at a time",
    concurrent: true,
    workflow: wf("approve-two").pipe(
      Workflow.parallel([approvalNamed("left"), approvalNamed("right")]),
      Workflow.commit
    ),
    input: { n: 1 },
    drive: (run) =>
      Effect.gen(function*() {
        const first = yield* Effect.flip(run.result)
        expect(first._tag === "RunSuspendedError" && first.suspended.map((s) => s.step)).toEqual(["left", "right"])
        yield* run.resume({ step: "left", resumeData: "yes" })
        const second = yield* Effect.flip(run.result)
        expect(second._tag === "RunSuspendedError" && second.suspended.map((s) => s.step)).toEqual(["right"])
        yield* run.resume({ step: "right", resumeData: "no" })
      }),
    check: (o) => expect(success(o)).toEqual({ left: "left:yes", right: "right:no" })
  },
  {
    name: "a step's typed failure fails the run with StepFailedError",
    workflow: wf("fails").pipe(
      Workflow.then(Step.make({
        id: "explode",
        inputSchema: Num,
        outputSchema: Num,
        execute: () => new Boom({ message: "no luck" })
      })),
      Workflow.then(add("unreached", 1)),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) => {
      const error = failure(o)
      expect(error._tag).toBe("StepFailedError")
      expect(error.message).toContain(`Step "explode" failed`)
      expect(error.message).toContain("no luck")
      expect(o.status).toBe("failed")
      expect(o.events.at(-1)).toMatchObject({
        type: "workflow-finish",
        payload: { workflowStatus: "failed", error: { name: "Boom", message: "no luck" } }
      })
      expect(o.events.filter(WorkflowEvent.is("workflow-step-start")).map((e) => e.payload.id)).toEqual(["explode"])
    }
  },
  {
    name: "a step that throws fails the run, not the engine",
    workflow: wf("throws").pipe(
      Workflow.then(Step.make({
        id: "thrower",
        inputSchema: Num,
        outputSchema: Num,
        execute: () => {
          throw new Error("thrown synchronously")
        }
      })),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) => {
      expect(failure(o).message).toContain("thrown synchronously")
      expect(o.status).toBe("failed")
    }
  },
  {
    name: "retry re-runs a failing step with attempt counting from 1",
    workflow: wf("retry").pipe(Workflow.then(flaky(2)), Workflow.commit),
    input: { n: 1 },
    check: (o) => {
      expect(success(o)).toEqual({ n: 1, attempt: 3 })
      expect(outputs(o)).toEqual([{ attempt: 1 }, { attempt: 2 }, { attempt: 3 }])
    }
  },
  {
    name: "a step that exhausts its retries fails with its last error",
    workflow: wf("retry-exhausted").pipe(
      Workflow.then(Step.make({
        id: "always-fails",
        inputSchema: Num,
        outputSchema: Num,
        retry: Schedule.recurs(2),
        execute: ({ attempt }) => new Boom({ message: `attempt ${attempt}` })
      })),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) => expect(failure(o).message).toContain("attempt 3")
  },
  {
    name: "a step attempt longer than its timeout fails",
    workflow: wf("timeout").pipe(
      Workflow.then(Step.make({
        id: "slow",
        inputSchema: Num,
        outputSchema: Num,
        timeout: "1 second",
        execute: ({ inputData }) => Effect.as(Effect.sleep("1 minute"), inputData)
      })),
      Workflow.commit
    ),
    input: { n: 1 },
    drive: (run) => advanceUntilSettled(run, "1 second"),
    check: (o) => {
      const error = failure(o)
      expect(error.message).toContain(`Step "slow" failed`)
      expect(error.message).toMatch(/timed out/i)
    }
  },
  {
    name: "cancel interrupts a waiting run and emits workflow-canceled then workflow-finish",
    workflow: wf("cancel").pipe(Workflow.then(add("before", 1)), Workflow.sleep("1 day"), Workflow.then(add("after", 1)), Workflow.commit),
    input: { n: 1 },
    drive: (run) => Effect.zipRight(awaitStatus(run, "waiting"), run.cancel),
    check: (o) => {
      expect(failure(o)._tag).toBe("RunCanceledError")
      expect(o.status).toBe("canceled")
      expect(types(o).slice(-2)).toEqual(["workflow-canceled", "workflow-finish"])
      expect(o.events.at(-1)).toMatchObject({ payload: { workflowStatus: "canceled" } })
    }
  },
  {
    name: "getWritable writes the default and a named stream, and close ends them",
    workflow: wf("streams").pipe(Workflow.then(logLines), Workflow.then(closeAll), Workflow.commit),
    input: { n: 1 },
    streams: ["", "logs"],
    check: (o) => {
      expect(o.streams[""]).toEqual([{ message: "default stream data" }])
      expect(o.streams["logs"]).toEqual(["named stream data", "second line"])
    }
  },
  {
    name: "getWritable works in a sleep function",
    workflow: wf("sleep-stream").pipe(
      Workflow.sleep(() => Effect.as(Effect.flatMap(Workflow.getWritable<Uint8Array>(), (w) => w.write(new Uint8Array([1, 2, 3]))), 1000)),
      Workflow.commit
    ),
    input: { n: 1 },
    streams: [""],
    drive: (run) => sleepThrough(run, "1 second"),
    check: (o) => expect(o.streams[""]).toEqual([new Uint8Array([1, 2, 3])])
  },
  {
    name: "writer.sink writes every element of an Effect stream",
    workflow: wf("sink").pipe(
      Workflow.then(Step.make({
        id: "piper",
        inputSchema: Num,
        outputSchema: Num,
        execute: ({ inputData, writer }) => Effect.as(Stream.run(Stream.range(1, 5), writer.sink), inputData)
      })),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) => expect(outputs(o)).toEqual([1, 2, 3, 4, 5])
  },
  {
    name: "a step output that breaks its outputSchema fails the step, naming the step and the field",
    workflow: wf("bad-output").pipe(
      Workflow.then(Step.make({
        id: "liar",
        inputSchema: Num,
        outputSchema: Schema.Struct({ name: Schema.String }),
        execute: () => Effect.succeed({ name: 42 as unknown as string })
      })),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) => {
      const message = failure(o).message
      expect(message).toContain(`"liar"`)
      expect(message).toContain("outputSchema")
      expect(message).toContain(`["name"]`)
    }
  },
  {
    name: "input that breaks a step's inputSchema fails that step with a message naming it",
    workflow: wf("bad-input").pipe(
      Workflow.map(() => Effect.succeed({ n: "not a number" })),
      Workflow.then(add("strict", 1) as unknown as Step.Step<"strict", { n: string }, { n: number }>),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) => {
      const message = failure(o).message
      expect(message).toContain(`"strict"`)
      expect(message).toContain("inputSchema")
      expect(message).toContain(`["n"]`)
    }
  },
  {
    name: "a failing condition fails the run, naming the branch node",
    workflow: wf("bad-condition").pipe(
      Workflow.branch([[() => new Boom({ message: "cannot decide" }), add("x", 1)]]),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) => {
      const message = failure(o).message
      expect(message).toContain(`"branch-0"`)
      expect(message).toContain("cannot decide")
    }
  },
  {
    name: "parallel sleeps of different lengths each wake at their own time",
    concurrent: true,
    workflow: wf("parallel-sleeps").pipe(
      Workflow.parallel([sleepsThenAdds("short", "1 hour", 1), sleepsThenAdds("long", "3 hours", 2)]),
      Workflow.commit
    ),
    input: { n: 1 },
    // Both sleeps announced, then the clock past the short one (1 hour) and well before the long one (3 hours), and
    // on only once the short arm's step has ended. Advancing in steps regardless of what the engine had done let the
    // long sleep fall due while the short one's wake-up was still on its way through a real broker, and the two ends
    // raced (seen under load, evented on Postgres with its bus).
    drive: (run) =>
      Effect.gen(function*() {
        yield* awaitEvents(run, WorkflowEvent.is("workflow-step-waiting"), 2)
        yield* TestClock.adjust("90 minutes")
        yield* awaitEvents(run, (e) => WorkflowEvent.is("workflow-step-result")(e) && e.payload.id === "short-add", 1)
        yield* advanceUntilSettled(run, "30 minutes")
      }),
    check: (o) => {
      expect(success(o)).toEqual({ short: { n: 2 }, long: { n: 3 } })
      const woke = o.events.filter(WorkflowEvent.is("workflow-step-result")).map((e) => e.payload.id)
      expect(woke.indexOf("short-add")).toBeLessThan(woke.indexOf("long-add"))
      expect(o.events.filter(WorkflowEvent.is("workflow-step-waiting"))).toHaveLength(2)
    }
  },
  {
    name: "a sleep that falls due while a sibling step still runs wakes once that step ends",
    concurrent: true,
    workflow: wf("sleep-beside-step").pipe(
      Workflow.parallel([sleepsThenAdds("napper", "1 hour", 1), slow("worker", "2 hours")]),
      Workflow.then(Step.make({
        id: "join",
        inputSchema: Schema.Record({ key: Schema.String, value: Num }),
        outputSchema: Num,
        execute: ({ inputData }) => Effect.succeed({ n: (inputData["napper"]?.n ?? 0) + (inputData["worker"]?.n ?? 0) })
      })),
      Workflow.commit
    ),
    input: { n: 1 },
    drive: (run) => advanceUntilSettled(run, "20 minutes"),
    check: (o) => {
      expect(success(o)).toEqual({ n: 3 })
      expect(types(o).filter((t) => t === "workflow-step-result")).toHaveLength(5)
    }
  },
  {
    name: "a workflow whose last output breaks its outputSchema fails",
    workflow: Workflow.make({ id: "bad-final", inputSchema: Num, outputSchema: Schema.String }).pipe(
      Workflow.then(add("a", 1) as unknown as Step.Step<"a", { n: number }, string>),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) => expect(failure(o).message).toContain(`Workflow "bad-final" produced output that does not match`)
  },
  {
    name: "a step whose output breaks its outputSchema fails the run, saying which step and why",
    workflow: wf("bad-output").pipe(
      Workflow.then(Step.make({
        id: "liar",
        inputSchema: Num,
        outputSchema: Num,
        execute: () => Effect.succeed({ n: "three" } as unknown as { n: number })
      })),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) => {
      const { message } = failure(o)
      expect(message).toContain(`Step "liar" returned output that does not match its outputSchema`)
      expect(message).toContain("Expected number")
      expect(o.status).toBe("failed")
    }
  },
  {
    name: "a step given input that breaks its inputSchema fails before its code runs",
    workflow: wf("bad-input").pipe(
      Workflow.then(add("a", 1)),
      Workflow.then(Step.make({
        id: "wants-text",
        inputSchema: Schema.String,
        outputSchema: Schema.String,
        execute: () => Effect.dieMessage("never runs")
      }) as unknown as Step.Step<"wants-text", { n: number }, string>),
      Workflow.commit
    ),
    input: { n: 1 },
    check: (o) => {
      const { message } = failure(o)
      expect(message).toContain(`Step "wants-text" received input that does not match its inputSchema`)
      expect(message).not.toContain("never runs")
    }
  },
  {
    name: "a step whose schemas encode asynchronously runs like any other",
    workflow: wf("async-schema").pipe(
      Workflow.then(Step.make({
        id: "async-codec",
        inputSchema: AsyncNum,
        outputSchema: AsyncNum,
        execute: ({ inputData }) => Effect.succeed({ n: inputData.n * 10 })
      })),
      Workflow.then(add("after", 1)),
      Workflow.commit
    ),
    input: { n: 4 },
    check: (o) => {
      expect(success(o)).toEqual({ n: 41 })
      const results = o.events.filter(WorkflowEvent.is("workflow-step-result"))
      expect(results.map((e) => e.payload.output)).toEqual([{ n: 40 }, { n: 41 }])
    }
  }
]
