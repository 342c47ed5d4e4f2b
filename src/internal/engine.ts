/**
 * What every engine shares: the registry of workflows this process can execute, the runs it executes now, run
 * handles, and how a run settles (store, events, waiters). The default engine walks the graph in a fiber per run.
 */
import * as Cause from "effect/Cause"
import type * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as EventBus from "../EventBus.js"
import type { Run } from "../Run.js"
import * as RunStore from "../RunStore.js"
import type * as Step from "../Step.js"
import type * as Workflow from "../Workflow.js"
import {
  RunCanceledError,
  RunNotFoundError,
  RunResumeError,
  RunSuspendedError,
  StepFailedError,
  WorkflowInputError
} from "../WorkflowError.js"
import * as Executor from "./executor.js"
import * as Interpreter from "./interpreter.js"
import type * as WorkflowEvent from "../WorkflowEvent.js"
import * as Reader from "./reader.js"

/** How a run (or one generation of it, between suspensions) settled. */
export type Outcome =
  | { readonly _tag: "Success"; readonly output: unknown }
  | { readonly _tag: "Failed"; readonly error: StepFailedError<unknown> }
  | { readonly _tag: "Canceled" }
  | { readonly _tag: "Suspended"; readonly suspended: ReadonlyArray<RunStore.SuspendedStep> }

interface Registered {
  readonly workflow: Workflow.Any
  readonly services: Context.Context<never>
}

interface Live {
  fiber: Fiber.RuntimeFiber<void> | undefined
  canceling: boolean
  readonly settled: Deferred.Deferred<Outcome>
}

/** The shape of the engine service (see `WorkflowEngine.ts` for the public documentation). */
export interface EngineShape {
  readonly start: <I, O, E, R>(
    workflow: Workflow.Workflow<string, I, O, E, R>,
    input: I,
    options?: { readonly runId?: string }
  ) => Effect.Effect<Run<O, E>, WorkflowInputError, R>
  readonly getRun: (runId: string) => Effect.Effect<Run<unknown, unknown>, RunNotFoundError>
  readonly register: (
    workflows: ReadonlyArray<Workflow.Any>,
    services: Context.Context<never>
  ) => Effect.Effect<void>
}

const parseMessage = (error: { readonly message: string }) => error.message

/** Finds a step definition by id anywhere in a workflow, nested workflows included. */
const findStep = (workflow: Workflow.Any, stepId: string): Step.Any | undefined => {
  const visit = (step: Workflow.StepLike): Step.Any | undefined =>
    step._tag === "Step" ? (step.id === stepId ? step : undefined) : findIn(step)
  const findIn = (wf: Workflow.Any): Step.Any | undefined => {
    for (const node of wf.nodes) {
      const candidates: ReadonlyArray<Workflow.StepLike> = node._tag === "Step" || node._tag === "Loop" ||
          node._tag === "Foreach"
        ? [node.step]
        : node._tag === "Parallel"
        ? node.steps
        : node._tag === "Branch"
        ? node.branches.map(([, s]) => s)
        : []
      for (const candidate of candidates) {
        const found = visit(candidate)
        if (found !== undefined) return found
      }
    }
    return undefined
  }
  return findIn(workflow)
}

/** Builds the default engine over the store and bus of the context, with its runs living in `scope`. */
export const makeDefault = Effect.gen(function*() {
  const store = yield* RunStore.RunStore
  const bus = yield* EventBus.EventBus
  const scope: Scope.Scope = yield* Effect.scope
  const registry = new Map<string, Registered>()
  const live = new Map<string, Live>()
  const transitions = yield* Effect.makeSemaphore(1)

  const emitFor = (runId: string, workflowId: string) =>
    Executor.makeRunEnv({
      runId,
      workflowId,
      store,
      bus,
      services: registry.get(workflowId)?.services ?? (undefined as never),
      memo: new Map(),
      resume: new Map()
    }).emit

  const announceEnd = (runId: string) =>
    Executor.publishQuietly(bus, EventBus.streamChannel(runId), { type: "run-end", runId, data: null })

  /** Runs one generation of a run (from start or resume until it settles) in a fiber of the engine's scope. */
  const launch = (
    runId: string,
    registered: Registered,
    input: unknown,
    resume: ReadonlyMap<string, unknown>
  ): Effect.Effect<void> =>
    Effect.gen(function*() {
      const { services, workflow } = registered
      const steps = yield* Effect.orDie(store.getSteps(runId))
      const env = Executor.makeRunEnv({
        runId,
        workflowId: workflow.id,
        store,
        bus,
        services,
        memo: new Map(steps.map((s) => [s.path, s])),
        resume
      })
      const entry: Live = { fiber: undefined, canceling: false, settled: yield* Deferred.make<Outcome>() }
      live.set(runId, entry)
      const ready = yield* Deferred.make<void>()
      let sleeping = 0
      const waits: Interpreter.WaitTracker = {
        enter: Effect.suspend(() => ++sleeping === 1 ? setStatus(runId, "waiting") : Effect.void),
        leave: Effect.suspend(() => --sleeping === 0 ? setStatus(runId, "running") : Effect.void)
      }
      const generation = Deferred.await(ready).pipe(
        Effect.zipRight(Effect.exit(Interpreter.runWorkflow(env, waits, workflow, input, ""))),
        Effect.flatMap((exit) => settle(env, workflow, exit)),
        Effect.flatMap((outcome) => Deferred.succeed(entry.settled, outcome)),
        Effect.onInterrupt(() =>
          entry.canceling
            ? Effect.flatMap(recordCanceled(runId, env.emit), () => Deferred.succeed(entry.settled, { _tag: "Canceled" }))
            : Deferred.interrupt(entry.settled)
        ),
        Effect.catchAllCause((cause) =>
          // Only a bug of ours (or a store that died) gets here: fail this run, never the engine.
          Effect.zipRight(
            Effect.logError(`Run ${runId} failed inside the engine`, cause),
            Effect.ignore(Effect.flatMap(
              settle(env, workflow, Exit.failCause(Cause.die(Cause.squash(cause)))),
              (outcome) => Deferred.succeed(entry.settled, outcome)
            ))
          )
        ),
        Effect.ensuring(Effect.sync(() => {
          if (live.get(runId) === entry) live.delete(runId)
        })),
        Effect.asVoid
      )
      entry.fiber = yield* Effect.forkIn(generation, scope)
      yield* Deferred.succeed(ready, undefined)
    })

  const setStatus = (runId: string, status: RunStore.RunStatus) => Effect.orDie(store.updateRun(runId, { status }))

  /** Records how a generation ended, emits `workflow-finish` when the run is over, and answers the outcome. */
  const settle = (
    env: Executor.RunEnv,
    workflow: Workflow.Any,
    exit: Exit.Exit<unknown, Executor.Halt>
  ): Effect.Effect<Outcome> =>
    Effect.gen(function*() {
      const { runId } = env
      let failure: Executor.StepFailure
      if (Exit.isSuccess(exit)) {
        const encoded = yield* Effect.either(Schema.encodeUnknown(workflow.outputSchema)(exit.value))
        if (encoded._tag === "Right") {
          yield* setRun(runId, { status: "success", output: encoded.right })
          yield* env.emit(finish(runId, { workflowStatus: "success", output: encoded.right }))
          yield* announceEnd(runId)
          return { _tag: "Success", output: exit.value }
        }
        failure = new Executor.StepFailure({
          stepId: workflow.id,
          path: "",
          cause: Cause.die(
            new Error(`Workflow "${workflow.id}" produced output that does not match its outputSchema: ${encoded.left.message}`)
          )
        })
      } else {
        const halt = Cause.failureOption(exit.cause)
        if (halt._tag === "Some" && halt.value._tag === "Suspension") {
          yield* setRun(runId, { status: "suspended", suspended: halt.value.suspended })
          return { _tag: "Suspended", suspended: halt.value.suspended }
        }
        failure = halt._tag === "Some" && halt.value._tag === "StepFailure"
          ? halt.value
          : new Executor.StepFailure({ stepId: workflow.id, path: "", cause: exit.cause })
      }
      const error = Executor.serializeCause(failure.cause)
      yield* setRun(runId, { status: "failed", error, failedStep: failure.stepId })
      yield* env.emit(finish(runId, { workflowStatus: "failed", error }))
      yield* announceEnd(runId)
      return {
        _tag: "Failed",
        error: new StepFailedError({ runId, stepId: failure.stepId, cause: failure.cause })
      }
    })

  const setRun = (runId: string, patch: RunStore.RunPatch) => Effect.orDie(store.updateRun(runId, patch))

  const finish = (
    runId: string,
    payload: typeof WorkflowEvent.WorkflowFinish.Type["payload"]
  ) => ({ type: "workflow-finish" as const, runId, from: "WORKFLOW" as const, payload })

  const recordCanceled = (runId: string, emit: Executor.RunEnv["emit"]) =>
    Effect.gen(function*() {
      yield* setRun(runId, { status: "canceled" })
      yield* emit({ type: "workflow-canceled", runId, from: "WORKFLOW", payload: {} })
      yield* emit(finish(runId, { workflowStatus: "canceled" }))
      yield* announceEnd(runId)
    })

  // -------------------------------------------------------------------------------------------------------------
  // run handles

  const outcomeFromStore = (runId: string): Effect.Effect<Outcome | undefined> =>
    Effect.gen(function*() {
      const record = yield* Effect.orDie(store.getRun(runId))
      if (record === undefined) return yield* Effect.die(new RunNotFoundError({ runId }))
      switch (record.status) {
        case "success": {
          const schema = registry.get(record.workflowId)?.workflow.outputSchema
          const output = schema === undefined
            ? record.output
            : yield* Effect.orDie(Schema.decodeUnknown(schema)(record.output))
          return { _tag: "Success", output }
        }
        case "failed": {
          const error = Object.assign(new Error(record.error?.message ?? "unknown failure"), {
            name: record.error?.name ?? "Error"
          })
          return {
            _tag: "Failed",
            error: new StepFailedError({ runId, stepId: record.failedStep ?? record.workflowId, cause: Cause.die(error) })
          }
        }
        case "canceled":
          return { _tag: "Canceled" }
        case "suspended":
          return { _tag: "Suspended", suspended: record.suspended ?? [] }
        default:
          return undefined
      }
    })

  /** Waits until the run settles: through the live fiber when it runs here, else by watching the store. */
  const awaitOutcome = (runId: string): Effect.Effect<Outcome> =>
    Effect.suspend(() => {
      const entry = live.get(runId)
      if (entry !== undefined) return Deferred.await(entry.settled)
      return Effect.scoped(Effect.gen(function*() {
        const notes = yield* Effect.orDie(bus.subscribe(EventBus.runChannel(runId)))
        const wake = yield* Stream.toPull(notes)
        while (true) {
          const local = live.get(runId)
          if (local !== undefined) return yield* Deferred.await(local.settled)
          const outcome = yield* outcomeFromStore(runId)
          if (outcome !== undefined) return outcome
          // Another process runs it: its events wake us; the timeout covers a status change with no event.
          yield* Effect.ignore(Effect.timeout(wake, "200 millis"))
        }
      }))
    })

  const toResult = <O, E>(runId: string) =>
  (outcome: Outcome): Effect.Effect<O, StepFailedError<E> | RunCanceledError | RunSuspendedError> => {
    switch (outcome._tag) {
      case "Success":
        return Effect.succeed(outcome.output as O)
      case "Failed":
        return Effect.fail(outcome.error as StepFailedError<E>)
      case "Canceled":
        return Effect.fail(new RunCanceledError({ runId }))
      case "Suspended":
        return Effect.fail(new RunSuspendedError({ runId, suspended: outcome.suspended }))
    }
  }

  const cancel = (runId: string): Effect.Effect<void> =>
    transitions.withPermits(1)(Effect.gen(function*() {
      const entry = live.get(runId)
      if (entry?.fiber !== undefined) {
        entry.canceling = true
        return yield* Fiber.interrupt(entry.fiber)
      }
      const record = yield* Effect.orDie(store.getRun(runId))
      if (record === undefined || RunStore.isTerminal(record.status)) return
      yield* recordCanceled(runId, emitFor(runId, record.workflowId))
    }))

  const resume = (runId: string, step: string, resumeData: unknown): Effect.Effect<void, RunResumeError> =>
    transitions.withPermits(1)(Effect.gen(function*() {
      const refuse = (reason: string) => new RunResumeError({ runId, step, reason })
      const record = yield* Effect.orDie(store.getRun(runId))
      if (record === undefined) return yield* refuse("no such run exists in the run store")
      if (record.status !== "suspended" || live.has(runId)) {
        return yield* refuse(`the run is ${record.status}, not suspended`)
      }
      const suspended = record.suspended ?? []
      const byPath = suspended.filter((s) => s.path === step)
      const matches = byPath.length > 0 ? byPath : suspended.filter((s) => s.step === step)
      if (matches.length === 0) {
        return yield* refuse(
          `no step "${step}" is suspended; suspended: ${suspended.map((s) => `"${s.step}"`).join(", ") || "none"}`
        )
      }
      if (matches.length > 1) {
        return yield* refuse(
          `step "${step}" is suspended at several paths (${matches.map((s) => s.path).join(", ")}); ` +
            `pass the path as \`step\` to choose one`
        )
      }
      const registered = registry.get(record.workflowId)
      if (registered === undefined) {
        return yield* refuse(
          `workflow "${record.workflowId}" is not registered in this process; add WorkflowEngine.register(workflow)`
        )
      }
      const target = matches[0]!
      const definition = findStep(registered.workflow, target.step)
      const schema = definition?.resumeSchema
      const data = schema === undefined
        ? resumeData
        : yield* Effect.mapError(
          Schema.decodeUnknown(schema)(resumeData),
          (e) => refuse(`resumeData does not match the step's resumeSchema: ${parseMessage(e)}`)
        )
      const input = yield* Schema.decodeUnknown(registered.workflow.inputSchema)(record.input).pipe(Effect.orDie)
      yield* setRun(runId, { status: "running", suspended: [] })
      yield* launch(runId, registered, input, new Map([[target.path, data]]))
    }))

  const handle = <O, E>(runId: string, workflowId: string): Run<O, E> => ({
    runId,
    workflowId,
    result: Effect.flatMap(awaitOutcome(runId), toResult<O, E>(runId)),
    status: Effect.flatMap(Effect.orDie(store.getRun(runId)), (record) =>
      record === undefined ? Effect.die(new RunNotFoundError({ runId })) : Effect.succeed(record.status)),
    events: (options) => Reader.events(store, bus, runId, options?.startIndex),
    readable: <A>(options?: { readonly namespace?: string; readonly startIndex?: number }) =>
      Reader.chunks<A>(store, bus, runId, options?.namespace ?? "", options?.startIndex),
    streamSize: (options) =>
      Effect.mapError(
        Effect.map(store.readChunks(runId, options?.namespace ?? "", 0, 0), (page) => page.size),
        (e) => Reader.streamError(runId, e)
      ),
    cancel: cancel(runId),
    resume: ({ resumeData, step }) => resume(runId, step, resumeData)
  })

  // -------------------------------------------------------------------------------------------------------------
  // the service

  const register = (workflows: ReadonlyArray<Workflow.Any>, services: Context.Context<never>) =>
    Effect.forEach(workflows, (workflow) =>
      Effect.gen(function*() {
        registry.set(workflow.id, { workflow, services })
        // Runs of this workflow left running or waiting with nobody executing them (their process died).
        const orphans = yield* Effect.orDie(store.listRuns({ workflowId: workflow.id, statuses: ["running", "waiting"] }))
        for (const record of orphans) {
          if (live.has(record.runId)) continue
          const input = yield* Effect.orDie(Schema.decodeUnknown(workflow.inputSchema)(record.input))
          yield* launch(record.runId, { workflow, services }, input, new Map())
        }
      }), { discard: true })

  const start = <I, O, E, R>(
    workflow: Workflow.Workflow<string, I, O, E, R>,
    input: I,
    options?: { readonly runId?: string }
  ): Effect.Effect<Run<O, E>, WorkflowInputError, R> =>
    Effect.gen(function*() {
      const services = (yield* Effect.context<R>()) as Context.Context<never>
      const workflowId = workflow.id
      const encoded = yield* Effect.mapError(
        Schema.encodeUnknown(workflow.inputSchema)(input),
        (e) => new WorkflowInputError({ workflowId, reason: `input does not match inputSchema: ${e.message}` })
      )
      const runId = options?.runId ?? crypto.randomUUID()
      if (typeof runId !== "string" || runId.length === 0) {
        return yield* new WorkflowInputError({ workflowId, reason: "runId must be a non-empty string" })
      }
      const registered: Registered = { workflow: workflow as unknown as Workflow.Any, services }
      registry.set(workflowId, registered)
      const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      const created = yield* Effect.orDie(store.createRun({
        runId,
        workflowId,
        status: "running",
        input: encoded,
        createdAt: now,
        updatedAt: now
      }))
      if (!created) {
        const existing = yield* Effect.orDie(store.getRun(runId))
        if (existing !== undefined && existing.workflowId === workflowId) return handle<O, E>(runId, workflowId)
        return yield* new WorkflowInputError({
          workflowId,
          reason: `runId "${runId}" already belongs to a run of workflow "${existing?.workflowId}"`
        })
      }
      yield* emitFor(runId, workflowId)({ type: "workflow-start", runId, from: "WORKFLOW", payload: { workflowId } })
      yield* launch(runId, registered, input, new Map())
      return handle<O, E>(runId, workflowId)
    })

  const getRun = (runId: string) =>
    Effect.flatMap(Effect.orDie(store.getRun(runId)), (record) =>
      record === undefined
        ? Effect.fail(new RunNotFoundError({ runId }))
        : Effect.succeed(handle<unknown, unknown>(runId, record.workflowId)))

  return { start, getRun, register } satisfies EngineShape
})
