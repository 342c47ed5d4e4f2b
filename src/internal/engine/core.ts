/**
 * What every engine shares: the registry of workflows this process can execute, run handles, waiting for a run to
 * settle, and recording how it settled (store, events, waiters). An engine adds a `Driver`: how runs are executed.
 * The default driver walks each run in a fiber of this process.
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Context from "effect/Context"
import * as Either from "effect/Either"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import { constVoid } from "effect/Function"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import * as EventBus from "../../EventBus.js"
import type { Run } from "../../Run.js"
import * as RunStore from "../../RunStore.js"
import type * as Step from "../../Step.js"
import type * as Workflow from "../../Workflow.js"
import {
  RunCanceledError,
  RunNotFoundError,
  RunResumeError,
  RunSuspendedError,
  StepFailedError,
  WorkflowInputError
} from "../../WorkflowError.js"
import type * as WorkflowEvent from "../../WorkflowEvent.js"
import * as Codec from "../codec.js"
import * as Executor from "./executor.js"
import { randomId } from "../ids.js"
import * as Interpreter from "./interpreter.js"
import * as Memo from "./memo.js"
import * as Reader from "../bus/reader.js"
import * as Timers from "./timers.js"
import * as Tracing from "./tracing.js"
import { wallNow, wallSleep } from "../wallClock.js"

/** How a run (or one generation of it, between suspensions) settled. */
export type Outcome =
  | { readonly _tag: "Success"; readonly output: unknown }
  | { readonly _tag: "Failed"; readonly error: StepFailedError<unknown> }
  | { readonly _tag: "Canceled" }
  | { readonly _tag: "Suspended"; readonly suspended: ReadonlyArray<RunStore.SuspendedStep> }

/** A workflow this process can execute, with the services its user code needs. */
export interface Registered {
  readonly workflow: Workflow.Any
  readonly services: Context.Context<never>
}

/** What a walk of a whole run came to, with the output already encoded for the store. */
export type WalkResult =
  | { readonly _tag: "Success"; readonly output: unknown }
  | { readonly _tag: "Failed"; readonly failure: Executor.StepFailure }
  | { readonly _tag: "Suspended"; readonly suspended: ReadonlyArray<RunStore.SuspendedStep> }
  | { readonly _tag: "Pending"; readonly waitingOnly: boolean }
  /** A step of the walk is another execution's (another process took the run over): this walk records nothing. */
  | { readonly _tag: "Fenced" }

/** Why a driver is asked to execute a run. */
export type LaunchReason = "start" | "resume" | "recover"

/** Options every engine takes. */
export interface EngineOptions {
  /**
   * This instance's name as a run owner. Default: random per process. Give each worker a stable name and a
   * restarted worker takes its unfinished runs back at once, instead of after the lease.
   */
  readonly workerId?: string
  /**
   * How long an owner may stay silent before other instances take its unfinished runs over (and, in the evented
   * engine, an instance executing a step before the run's owner sends the step again). Default: 10 seconds.
   */
  readonly lease?: Duration.DurationInput
}

/** How an engine executes runs. */
export interface Driver {
  /**
   * Starts executing a run that the store shows ready (just created, resumed, or left without an owner). `parent`:
   * the run's span, under which its walks make their spans (see `tracing.ts`): at `start`, the open span itself;
   * later, the ids the store recorded (none for a run recorded without).
   */
  readonly launch: (
    runId: string,
    registered: Registered,
    input: unknown,
    reason: LaunchReason,
    parent: Tracer.AnySpan | undefined
  ) => Effect.Effect<void>
  /**
   * Whether `launch` at `start` walks the run under the run's open span and ends that span when this walk ends (the
   * default engine). Else `start` ends it once the run is launched.
   */
  readonly endsRunSpan?: boolean
  /** Cancels a run, returning once it is recorded canceled. */
  readonly cancel: (runId: string) => Effect.Effect<void>
  /** The status a new run is created with: `running` when the driver executes it at once, else `pending`. */
  readonly initialStatus: RunStore.RunStatus
  /** Which of a workflow's runs `register` hands to `launch`. */
  readonly orphanStatuses: ReadonlyArray<RunStore.RunStatus>
  /** Whether this process executes the run right now (then `resume` refuses, the run's result not being final). */
  readonly isLive: (runId: string) => boolean
  /**
   * Whether this process carries the run forward, so that the scan for orphaned runs (at `register`, and every half
   * lease) leaves it alone even though the run names this worker as its owner. Launching it again would execute its
   * running steps a second time.
   */
  readonly holds: (runId: string, status: RunStore.RunStatus) => boolean
  /**
   * Given, on every scan, the records of the runs it holds (as the scan read them), so that the driver can look
   * after them without reading the store's run list again.
   */
  readonly watch?: (registered: Registered, held: ReadonlyArray<RunStore.RunRecord>) => Effect.Effect<void>
  /**
   * `false` for a client, which executes nothing: it owns no run (runs it starts or resumes are left without an
   * owner, for the first worker that handles them), sends no heartbeat and takes no run over.
   */
  readonly executes?: boolean
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

/** Finds a step definition by id anywhere in a workflow, nested workflows included. */
const findStep = (workflow: Workflow.Any, stepId: string): Step.Any | undefined => {
  for (const node of workflow.nodes) {
    const candidates: ReadonlyArray<Workflow.StepLike> =
      node._tag === "Step" || node._tag === "Loop" || node._tag === "Foreach"
        ? [node.step]
        : node._tag === "Parallel"
        ? node.steps
        : node._tag === "Branch"
        ? node.branches.map(([, s]) => s)
        : []
    for (const candidate of candidates) {
      const found = candidate._tag === "Step"
        ? (candidate.id === stepId ? candidate as Step.Any : undefined)
        : findStep(candidate, stepId)
      if (found !== undefined) return found
    }
  }
  return undefined
}

/** Interprets the exit of a walk of a whole run, encoding its output with the workflow's schema. */
export const classify = (workflow: Workflow.Any, exit: Exit.Exit<unknown, Executor.Halt>): Effect.Effect<WalkResult> => {
  if (Exit.isSuccess(exit)) {
    const encoded = Codec.encodeNow(workflow.outputSchema, exit.value)
    if (encoded !== undefined && Exit.isSuccess(encoded)) return Effect.succeed({ _tag: "Success", output: encoded.value })
  }
  return classifySlowly(workflow, exit)
}

const classifySlowly = (workflow: Workflow.Any, exit: Exit.Exit<unknown, Executor.Halt>): Effect.Effect<WalkResult> =>
  Effect.gen(function*() {
    if (Exit.isSuccess(exit)) {
      const encoded = yield* Effect.either(Codec.encode(workflow.outputSchema, exit.value))
      if (encoded._tag === "Right") return { _tag: "Success", output: encoded.right }
      return {
        _tag: "Failed",
        failure: new Executor.StepFailure({
          stepId: workflow.id,
          path: "",
          cause: Cause.die(
            new Error(`Workflow "${workflow.id}" produced output that does not match its outputSchema: ${encoded.left.message}`)
          )
        })
      }
    }
    const halt = Cause.failureOption(exit.cause)
    if (halt._tag === "Some") {
      switch (halt.value._tag) {
        case "Suspension":
          return { _tag: "Suspended", suspended: halt.value.suspended }
        case "Pending":
          return { _tag: "Pending", waitingOnly: halt.value.waitingOnly }
        case "StepFailure":
          return { _tag: "Failed", failure: halt.value }
        case "StepFenced":
          return { _tag: "Fenced" }
      }
    }
    // Only a bug of ours (or a store that died) gets here: it fails this run, never the engine.
    yield* Effect.logError(`A walk of workflow "${workflow.id}" died`, exit.cause)
    return { _tag: "Failed", failure: new Executor.StepFailure({ stepId: workflow.id, path: "", cause: exit.cause }) }
  })

const maxRememberedCauses = 1000
const maxCachedEnvs = 1000

/** An engine option's duration in milliseconds; a value that is no duration (or a negative number) is refused. */
const optionMillis = (name: string, input: Duration.DurationInput | undefined, fallback: Duration.DurationInput) =>
  Effect.suspend(() => {
    const decoded = Duration.decodeUnknown(input ?? fallback)
    if (decoded._tag === "None" || (typeof input === "number" && !(input >= 0))) {
      return Effect.dieMessage(`The engine's ${name} must be a duration such as "10 seconds"; got ${String(input)}.`)
    }
    return Effect.succeed(Duration.toMillis(decoded.value))
  })

/**
 * Builds what engines share, over the store and bus of the context. `cacheSteps`: keep runs' step records between
 * walks (see `loadMemo`).
 */
export const makeCore = (options: EngineOptions = {}, cacheSteps = false) => Effect.gen(function*() {
  // Step records of the runs the evented engine walks, kept between its messages (`cacheSteps`); every step write of
  // this process goes through `store` below and keeps them current.
  const memos = Memo.makeCache(maxCachedEnvs)
  const retrying = RunStore.retrying(yield* RunStore.RunStore)
  const store: RunStore.RunStore["Type"] = cacheSteps
    ? {
      ...retrying,
      putStep: (runId, record, event, fence) =>
        Effect.map(retrying.putStep(runId, record, event, fence), (version) => {
          memos.written(runId, record, version)
          return version
        }),
      claimStep: (runId, record, expected, event) =>
        Effect.map(retrying.claimStep(runId, record, expected, event), (version) => {
          if (version !== undefined) memos.written(runId, record, version)
          return version
        })
    }
    : retrying
  const bus = yield* EventBus.EventBus
  const workerId = options.workerId ?? randomId()
  const startedAt = wallNow()
  const leaseMillis = yield* optionMillis("lease", options.lease, "10 seconds")
  if (!(leaseMillis > 0) || !Number.isFinite(leaseMillis)) {
    return yield* Effect.dieMessage(`The engine's lease must be a positive, finite duration; got ${String(options.lease)}.`)
  }

  const registry = new Map<string, Registered>()
  const waiters = new Map<string, Deferred.Deferred<void>>()
  // The exact causes of failures seen in this process (the store keeps only name and message), bounded.
  const causes = new Map<string, Cause.Cause<unknown>>()

  const rememberCause = (key: string, cause: Cause.Cause<unknown>) => {
    causes.delete(key)
    causes.set(key, cause)
    if (causes.size > maxRememberedCauses) causes.delete(causes.keys().next().value!)
  }

  const makeEnv = (runId: string, registered: Registered, memo: Memo.Memo, mode: Executor.Mode) =>
    Executor.makeRunEnv({
      runId,
      workflowId: registered.workflow.id,
      store,
      bus,
      services: registered.services,
      memo,
      mode,
      failureCause: (path, record) => causes.get(`${runId}|${path}`) ?? Executor.rebuildCause(path, record),
      onFailure: (path, cause) => rememberCause(`${runId}|${path}`, cause)
    })

  // The environments of runs the evented engine walks, kept between its messages: one per run, dropped (with the
  // run's cached step records) when the run settles or only waits, and at most `maxCachedEnvs` of them. The memo and
  // the mode are per walk.
  const envs = new Map<string, { readonly registered: Registered; readonly env: Executor.RunEnv }>()
  const cachedEnv = (runId: string, registered: Registered, memo: Memo.Memo, mode: Executor.Mode) => {
    let entry = envs.get(runId)
    if (entry === undefined || entry.registered !== registered) {
      entry = { registered, env: makeEnv(runId, registered, memo, mode) }
      envs.set(runId, entry)
      if (envs.size > maxCachedEnvs) envs.delete(envs.keys().next().value!)
    }
    return Executor.forWalk(entry.env, memo, mode)
  }
  const dropEnv = (runId: string) => {
    envs.delete(runId)
    const records = memos.drop(runId)
    if (records !== undefined) Executor.forgetDecoded(records)
  }

  /**
   * Records a run's end and the events that announce it in one write (a finished run is never found without them),
   * then publishes the events.
   */
  const settle = (runId: string, patch: RunStore.RunPatch, events: ReadonlyArray<WorkflowEvent.WorkflowEvent>) =>
    Effect.zipRight(
      Effect.orDie(store.updateRun(runId, patch, events)),
      Effect.suspend(() =>
        Executor.publishAllQuietly(
          bus,
          EventBus.runChannel(runId),
          events.map((event) => ({ type: "watch", runId, data: event }))
        )
      )
    )

  const setRun = (runId: string, patch: RunStore.RunPatch) => Effect.orDie(store.updateRun(runId, patch))

  const announceEnd = (runId: string) =>
    Executor.publishQuietly(bus, EventBus.streamChannel(runId), { type: "run-end", runId, data: null })

  const finish = (runId: string, payload: typeof WorkflowEvent.WorkflowFinish.Type["payload"]) =>
    ({ type: "workflow-finish" as const, runId, from: "WORKFLOW" as const, payload })

  // How many times waiters were woken (`notify`, the ticker): a wait that read the store unsettled looks again instead
  // of waiting when a wake-up came while it read.
  let notifications = 0

  /** Wakes whoever waits for this run to settle (in this process). */
  const notify = (runId: string) =>
    Effect.suspend(() => {
      notifications++
      const waiter = waiters.get(runId)
      if (waiter === undefined) return Effect.void
      waiters.delete(runId)
      return Deferred.succeed(waiter, undefined)
    })

  const completeRun = (runId: string, output: unknown) =>
    Effect.suspend(() => {
      dropEnv(runId)
      return settle(runId, { status: "success", output }, [finish(runId, { workflowStatus: "success", output })]).pipe(
        Effect.zipRight(announceEnd(runId)),
        Effect.zipRight(notify(runId))
      )
    })

  const failRun = (runId: string, failure: Executor.StepFailure) =>
    Effect.gen(function*() {
      dropEnv(runId)
      const error = Executor.serializeCause(failure.cause)
      rememberCause(runId, failure.cause)
      yield* settle(runId, { status: "failed", error, failedStep: failure.stepId }, [
        finish(runId, { workflowStatus: "failed", error })
      ])
      yield* announceEnd(runId)
      yield* notify(runId)
    })

  const suspendRun = (runId: string, suspended: ReadonlyArray<RunStore.SuspendedStep>) =>
    Effect.gen(function*() {
      dropEnv(runId)
      yield* setRun(runId, { status: "suspended", suspended })
      yield* notify(runId)
    })

  const cancelRun = (runId: string) =>
    Effect.gen(function*() {
      dropEnv(runId)
      yield* settle(runId, { status: "canceled" }, [
        { type: "workflow-canceled", runId, from: "WORKFLOW", payload: {} },
        finish(runId, { workflowStatus: "canceled" })
      ])
      yield* announceEnd(runId)
      yield* notify(runId)
    })

  /**
   * What the store recorded of a run's graph. A row that no longer decodes fails the run, naming the row (answers
   * `undefined` then); a store that stays down fails the effect, and the run is left for lease recovery.
   *
   * With `cacheSteps` and `version` (the run record's `stepsVersion`), the records are cached between walks: a walk
   * of a run whose record shows a version the cache has reached reads nothing, and one that finds another process
   * wrote reads only what it wrote.
   */
  const loadMemo = (runId: string, workflowId: string, version?: number): Effect.Effect<Memo.Memo | undefined> => {
    let read: Effect.Effect<Memo.Memo, RunStore.RunStoreError>
    if (cacheSteps && version !== undefined) {
      const cached = memos.get(runId, version)
      if (cached !== undefined) return Effect.succeed(cached)
      const all = Effect.map(store.getSteps(runId), (records) => memos.put(runId, records))
      // Another process wrote: read what it wrote since the cache's version, not everything.
      const since = memos.version(runId)
      read = since === undefined
        ? all
        : Effect.flatMap(store.getSteps(runId, since), (written) => {
          const memo = memos.update(runId, written, since)
          return memo === undefined ? all : Effect.succeed(memo)
        })
    } else {
      read = Effect.map(store.getSteps(runId), (records) => Memo.fromRecords(records.steps))
    }
    return Effect.catchAll(read, (error) =>
      RunStore.isTransient(error)
        ? Effect.die(error)
        : Effect.as(
          failRun(runId, new Executor.StepFailure({ stepId: workflowId, path: "", cause: Cause.die(error) })),
          undefined
        ))
  }

  /** Applies a walk's result directly (the default engine; the evented one goes through bus commands). */
  const applyWalk = (runId: string, result: WalkResult) => {
    switch (result._tag) {
      case "Success":
        return completeRun(runId, result.output)
      case "Failed":
        return failRun(runId, result.failure)
      case "Suspended":
        return suspendRun(runId, result.suspended)
      case "Pending":
        return Effect.dieMessage(`An inline walk of run ${runId} ended pending`)
      case "Fenced":
        return Effect.logDebug(`Run ${runId}: another process executes it now; this walk stops, recording nothing.`)
    }
  }

  /** A run's stored input, decoded; a run whose input no longer decodes is failed, saying so (answers `undefined`). */
  const storedInput = (registered: Registered, record: RunStore.RunRecord) =>
    Effect.flatMap(
      record.corrupt === undefined
        ? Effect.either(Effect.mapError(Codec.decode(registered.workflow.inputSchema, record.input), (e) => e.message))
        : Effect.succeed(Either.left(record.corrupt) as Either.Either<unknown, string>),
      (input): Effect.Effect<{ readonly value: unknown } | undefined> =>
        input._tag === "Right"
          ? Effect.succeed({ value: input.right })
          : Effect.as(
            failRun(record.runId, new Executor.StepFailure({
              stepId: record.workflowId,
              path: "",
              cause: Cause.die(new Error(`The stored input of run ${record.runId} no longer decodes: ${input.left}`))
            })),
            undefined
          )
    )

  // -------------------------------------------------------------------------------------------------------------
  // run handles

  const outcomeFromStore = (runId: string): Effect.Effect<Outcome | undefined> =>
    Effect.gen(function*() {
      const record = yield* Effect.orDie(store.getRun(runId))
      if (record === undefined) return yield* Effect.die(new RunNotFoundError({ runId }))
      switch (record.status) {
        case "success": {
          if (record.corrupt !== undefined) {
            return yield* Effect.die(new RunStore.RunStoreError({ operation: "decode", runId, reason: record.corrupt }))
          }
          const schema = registry.get(record.workflowId)?.workflow.outputSchema
          const output = schema === undefined
            ? record.output
            : yield* Effect.orDie(Codec.decode(schema, record.output))
          return { _tag: "Success", output }
        }
        case "failed": {
          const cause = causes.get(runId) ??
            Executor.rebuildCause("", { path: "", stepId: "", status: "failed", ...(record.error ? { error: record.error } : {}) })
          return {
            _tag: "Failed",
            error: new StepFailedError({ runId, stepId: record.failedStep ?? record.workflowId, cause })
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

  /** Waits for the next wake-up of the run's waiters (`notify`, or the ticker). */
  const nextNotification = (runId: string) =>
    Effect.suspend(() => {
      let waiter = waiters.get(runId)
      if (waiter === undefined) {
        waiter = Deferred.unsafeMake<void>(FiberId.none)
        waiters.set(runId, waiter)
      }
      return Deferred.await(waiter)
    })

  /**
   * Waits until the run settles. While `walking(runId)` (this process walks the run; it notifies when the walk settles
   * it), it waits before its first read: the store would show the run unsettled. A read that finds the run unsettled
   * waits for the next wake-up, unless one came while it read (no settlement is missed). A waiter is registered only
   * to be waited on: left behind for a run already settled, waiters piled up (one per awaited run) for as long as the
   * ticker did not run, which a process kept busy by short runs put off for good (heap growing by about 0.8 KB a run,
   * seen in the memory soak).
   */
  const awaitOutcome = (
    runId: string,
    until: (outcome: Outcome) => boolean = () => true,
    walking: (runId: string) => boolean = () => false
  ): Effect.Effect<Outcome> =>
    Effect.gen(function*() {
      if (walking(runId)) yield* nextNotification(runId)
      while (true) {
        const seen = notifications
        const outcome = yield* outcomeFromStore(runId)
        if (outcome !== undefined && until(outcome)) return outcome
        // Another process may settle it without telling this one: the engine's ticker wakes every waiter each second.
        if (notifications === seen) yield* nextNotification(runId)
      }
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

  /**
   * Validates a resume request and records it: the resume data goes into the suspended step's record, where the
   * next walk finds it. Answers what the driver needs to continue the run.
   */
  const prepareResume = (runId: string, step: string, resumeData: unknown, isLive: boolean, owns: boolean) =>
    Effect.gen(function*() {
      const refuse = (reason: string) => new RunResumeError({ runId, step, reason })
      const record = yield* Effect.orDie(store.getRun(runId))
      if (record === undefined) return yield* refuse("no such run exists in the run store")
      if (record.status !== "suspended") return yield* refuse(`the run is ${record.status}, not suspended`)
      if (isLive) return yield* refuse("the run is still being executed in this process; wait for run.result")
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
      const input = yield* storedInput(registered, record)
      if (input === undefined) return yield* refuse("the run failed: its stored input no longer decodes (see the run's error)")
      const target = matches[0]!
      const schema = findStep(registered.workflow, target.step)?.resumeSchema
      const data = schema === undefined ? resumeData : yield* Effect.mapError(
        Schema.decodeUnknown(schema)(resumeData),
        (e) => refuse(`resumeData does not match the step's resumeSchema: ${e.message}`)
      )
      const memo = yield* Effect.orDie(loadMemo(runId, record.workflowId))
      if (memo === undefined) {
        return yield* refuse("the run failed: its stored state is corrupt (see the run's error)")
      }
      const suspendedRecord = memo.get(target.path)
      if (suspendedRecord === undefined) return yield* refuse(`the store has no record of path ${target.path}`)
      // A fresh call id: the token the resumed step's claim compares, unlike that of any earlier resume of it.
      yield* Effect.orDie(store.putStep(runId, { ...suspendedRecord, resumeData: data, stepCallId: randomId() }))
      yield* setRun(
        runId,
        owns ? { status: "running", suspended: [], owner: workerId, heartbeatAt: wallNow() } : { status: "running", suspended: [] }
      )
      return { registered, input: input.value, trace: record.trace }
    })

  const withDriver = (driver: Driver, scope: Scope.Scope) => Effect.gen(function*() {
    const transitions = Effect.unsafeMakeSemaphore(1)
    const executes = driver.executes !== false

    /**
     * A run handle holds its ids only; its members are built on access (getters, so that destructuring works too).
     * Apps keep many handles (one per waiting run, say), and each costs a few dozen bytes.
     */
    class Handle<O, E> implements Run<O, E> {
      constructor(readonly runId: string, readonly workflowId: string) {}
      get result() {
        const runId = this.runId
        return Effect.flatMap(awaitOutcome(runId, undefined, driver.isLive), toResult<O, E>(runId))
      }
      get status() {
        const runId = this.runId
        return Effect.flatMap(Effect.orDie(store.getRun(runId)), (record) =>
          record === undefined ? Effect.die(new RunNotFoundError({ runId })) : Effect.succeed(record.status))
      }
      get events(): Run<O, E>["events"] {
        const runId = this.runId
        return (options) => Reader.events(store, bus, runId, options?.startIndex)
      }
      get readable(): Run<O, E>["readable"] {
        const runId = this.runId
        return <A>(options?: { readonly namespace?: string; readonly startIndex?: number }) =>
          Reader.chunks<A>(store, bus, runId, options?.namespace ?? "", options?.startIndex)
      }
      get streamSize(): Run<O, E>["streamSize"] {
        const runId = this.runId
        return (options) =>
          Effect.mapError(
            Effect.map(store.readChunks(runId, options?.namespace ?? "", 0, 0), (page) => page.size),
            (e) => Reader.streamError(runId, e)
          )
      }
      get cancel() {
        return transitions.withPermits(1)(driver.cancel(this.runId))
      }
      get resume(): Run<O, E>["resume"] {
        const runId = this.runId
        return ({ resumeData, step }) =>
          transitions.withPermits(1)(
            Effect.flatMap(
              prepareResume(runId, step, resumeData, driver.isLive(runId), executes),
              ({ input, registered, trace }) => driver.launch(runId, registered, input, "resume", Tracing.parentOf(trace))
            )
          )
      }
    }
    const handle = <O, E>(runId: string, workflowId: string): Run<O, E> => new Handle<O, E>(runId, workflowId)

    /**
     * Takes over the unfinished runs of a registered workflow that nobody executes: never claimed, ours from before
     * a restart, or owned by an instance silent for longer than the lease. The claim is atomic in the store, so of
     * several instances one wins. A run whose input no longer decodes is failed, with the reason. The runs this
     * instance holds go to the driver's `watch`.
     */
    const recover = (registered: Registered) =>
      Effect.gen(function*() {
        const { workflow } = registered
        const records = yield* store.listRuns({ workflowId: workflow.id, statuses: driver.orphanStatuses })
        const held: Array<RunStore.RunRecord> = []
        for (const record of records) {
          if (driver.holds(record.runId, record.status)) {
            held.push(record)
            continue
          }
          const now = wallNow()
          const stale = record.owner === undefined || record.owner === workerId ||
            record.heartbeatAt === undefined || record.heartbeatAt < now - leaseMillis
          if (!stale || !(yield* store.claimRun(record.runId, workerId, now, now - leaseMillis))) continue
          const input = yield* storedInput(registered, record)
          if (input === undefined) continue
          yield* driver.launch(
            record.runId,
            registered,
            input.value,
            record.status === "pending" ? "start" : "recover",
            Tracing.parentOf(record.trace)
          )
        }
        if (held.length > 0 && driver.watch !== undefined) yield* driver.watch(registered, held)
      })

    const recoverAll = Effect.suspend(() =>
      Effect.forEach(registry.values(), (registered) => recover(registered), { discard: true })
    ).pipe(Effect.catchAllCause((cause) => Effect.logWarning("Looking for runs to take over failed; will retry", cause)))

    // Keep our runs ours, and look for runs whose owner went silent.
    // Leases measure whether a process is alive: real time, even under a test clock. Only the timers run on the
    // wall clock; what they launch keeps the app's clock.
    // The first heartbeat at once: it also says that this instance is alive to the owners of runs whose steps it
    // executes (the evented engine).
    if (executes) {
      yield* Effect.gen(function*() {
        yield* Effect.ignore(store.heartbeat(workerId, wallNow()))
        yield* wallSleep(Duration.millis(leaseMillis / 3))
      }).pipe(Effect.forever, Effect.forkIn(scope))
      yield* Effect.gen(function*() {
        yield* wallSleep(Duration.millis(leaseMillis / 2))
        yield* recoverAll
      }).pipe(Effect.forever, Effect.forkIn(scope))
    }
    // Runs settled by another process are noticed within a second: one timer for all waiters, none per wait.
    yield* Effect.gen(function*() {
      yield* wallSleep("1 second")
      notifications++
      if (waiters.size === 0) return
      const all = Array.from(waiters.values())
      waiters.clear()
      for (const waiter of all) Deferred.unsafeDone(waiter, Exit.void)
    }).pipe(Effect.forever, Effect.forkIn(scope))

    const register = (workflows: ReadonlyArray<Workflow.Any>, services: Context.Context<never>) =>
      Effect.forEach(workflows, (workflow) =>
        Effect.gen(function*() {
          const registered = { workflow, services }
          registry.set(workflow.id, registered)
          if (!executes) return
          yield* Effect.catchAll(recover(registered), (error) =>
            Effect.logWarning(`Could not look for unfinished runs of "${workflow.id}" yet; will retry`, error.message))
        }), { discard: true })

    const start = <I, O, E, R>(
      workflow: Workflow.Workflow<string, I, O, E, R>,
      input: I,
      options?: { readonly runId?: string }
    ): Effect.Effect<Run<O, E>, WorkflowInputError, R> =>
      Tracing.ifTracing(startUnder(workflow, input, options, undefined, constVoid), () =>
        Effect.flatMap(
          Tracing.makeRunSpan(workflow.id),
          (span) => {
            // The run's span goes to a driver that ends it (`Driver.endsRunSpan`) with the launch; else it ends here.
            let handedOver = false
            return Effect.onExit(
              startUnder(workflow, input, options, span, () => {
                handedOver = driver.endsRunSpan === true
              }),
              (exit) => handedOver ? Effect.void : Tracing.end(span, exit)
            )
          }
        ))

    const startUnder = <I, O, E, R>(
      workflow: Workflow.Workflow<string, I, O, E, R>,
      input: I,
      options: { readonly runId?: string } | undefined,
      span: Tracer.Span | undefined,
      handOver: () => void
    ): Effect.Effect<Run<O, E>, WorkflowInputError, R> =>
      Effect.gen(function*() {
        const services = (yield* Effect.context<R>()) as Context.Context<never>
        const workflowId = workflow.id
        const encodedNow = Codec.encodeNow(workflow.inputSchema, input)
        const encoded = encodedNow !== undefined && Exit.isSuccess(encodedNow) ? encodedNow.value : yield* Effect.mapError(
          Codec.encode(workflow.inputSchema, input),
          (e) => new WorkflowInputError({ workflowId, reason: `input does not match inputSchema: ${e.message}` })
        )
        const notJson = Codec.unstorable(encoded)
        if (notJson !== undefined) {
          return yield* new WorkflowInputError({
            workflowId,
            reason: `input cannot be stored: ${notJson.replace("the value", "its encoded input")}`
          })
        }
        const runId = options?.runId ?? randomId()
        if (typeof runId !== "string" || runId.length === 0) {
          return yield* new WorkflowInputError({ workflowId, reason: "runId must be a non-empty string" })
        }
        span?.attribute(Tracing.attributes.runId, runId)
        const registered: Registered = { workflow: workflow as unknown as Workflow.Any, services }
        registry.set(workflowId, registered)
        const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
        const started: WorkflowEvent.WorkflowEvent = { type: "workflow-start", runId, from: "WORKFLOW", payload: { workflowId } }
        // Stored with the run: created by a process that died before its first event, a run had none.
        const created = yield* Effect.orDie(store.createRun({
          runId,
          workflowId,
          status: driver.initialStatus,
          input: encoded,
          ...(executes ? { owner: workerId, heartbeatAt: wallNow() } : {}),
          createdAt: now,
          updatedAt: now,
          ...(span === undefined ? {} : { trace: Tracing.contextOf(span) })
        }, started))
        if (!created) {
          const existing = yield* Effect.orDie(store.getRun(runId))
          if (existing !== undefined && existing.workflowId === workflowId) return handle<O, E>(runId, workflowId)
          return yield* new WorkflowInputError({
            workflowId,
            reason: `runId "${runId}" already belongs to a run of workflow "${existing?.workflowId}"`
          })
        }
        yield* Executor.publishQuietly(bus, EventBus.runChannel(runId), { type: "watch", runId, data: started })
        handOver()
        yield* driver.launch(runId, registered, input, "start", span)
        return handle<O, E>(runId, workflowId)
      })

    const getRun = (runId: string) =>
      Effect.flatMap(Effect.orDie(store.getRun(runId)), (record) =>
        record === undefined
          ? Effect.fail(new RunNotFoundError({ runId }))
          : Effect.succeed(handle<unknown, unknown>(runId, record.workflowId)))

    return { start, getRun, register } satisfies EngineShape
  })

  /** Waits until the run is over: succeeded, failed or canceled. */
  const awaitTerminal = (runId: string) => Effect.asVoid(awaitOutcome(runId, (outcome) => outcome._tag !== "Suspended"))

  return {
    store,
    bus,
    workerId,
    leaseMillis,
    /** When this instance started (wall clock): a step its `workerId` claimed earlier was claimed by a former one. */
    startedAt,
    registry,
    loadMemo,
    // (evented) What `loadMemo` answers without reading the store, when the cache holds the run at `version`: taken
    // as it is, the walk after every command spares an effect.
    cachedMemo: (runId: string, version: number | undefined): Memo.Memo | undefined =>
      cacheSteps && version !== undefined ? memos.get(runId, version) : undefined,
    notify,
    awaitTerminal,
    causeAt: (runId: string, path: string): Cause.Cause<unknown> | undefined => causes.get(`${runId}|${path}`),
    makeEnv,
    storedInput,
    cachedEnv,
    dropEnv,
    setRun,
    completeRun,
    failRun,
    suspendRun,
    cancelRun,
    applyWalk,
    withDriver
  }
})

/** Options of the default engine. */
export interface DefaultOptions extends EngineOptions {
  /**
   * Sleeps at least this long park their run: the walk stops, the run holds no fiber while it waits (only an entry
   * in the engine's timer queue), and a new walk replays it from the store when the sleep is due. Shorter sleeps
   * keep their fiber, which resumes at no cost. Default: 1 second.
   */
  readonly parkAfter?: Duration.DurationInput
}

interface LiveRun {
  fiber: Fiber.RuntimeFiber<void> | undefined
  canceling: boolean
  /** A parked sleep fell due while this generation was still walking: walk again once it ends. */
  wakeRequested: boolean
  /** The run's span, parent of the spans of its walks. */
  readonly parent: Tracer.AnySpan | undefined
}

/**
 * The default engine: each run (each generation between suspensions or parked sleeps) is walked inline in a fiber
 * of the scope.
 */
export const makeDefault = (options: DefaultOptions = {}) => Effect.gen(function*() {
  const core = yield* makeCore(options)
  const scope = yield* Effect.scope
  const timers = yield* Timers.make((runId) => wake(runId))
  const parkAfter = yield* optionMillis("parkAfter", options.parkAfter, "1 second")
  const live = new Map<string, LiveRun>()
  // Serializes what moves a run between parked and walking (wake-ups, generations ending parked, cancels).
  const lock = Effect.unsafeMakeSemaphore(1)

  /**
   * Walks a run in a fiber of its own, its spans under `parent`. The run's open span (from `start`) is this walk's to
   * end, once the walk is over and recorded; a recorded one is only a parent.
   */
  const launch = (
    runId: string,
    registered: Registered,
    input: unknown,
    parent: Tracer.AnySpan | undefined,
    created = false
  ): Effect.Effect<void> =>
    Effect.suspend((): Effect.Effect<void> => {
      const open = parent?._tag === "Span" ? parent : undefined
      let outcome: Exit.Exit<unknown, unknown> = Exit.void
      const endOpen = (exit: Exit.Exit<unknown, unknown>) =>
        open === undefined ? Effect.void : Tracing.end(open, Exit.isSuccess(exit) ? outcome : exit)
      // Reserved at once, so that of two launches racing (a wake-up and a recovery, say) one walks.
      if (live.has(runId)) return endOpen(Exit.void)
      const entry: LiveRun = {
        fiber: undefined,
        canceling: false,
        wakeRequested: false,
        parent: open === undefined ? parent : Tracing.parentOf(Tracing.contextOf(open))
      }
      live.set(runId, entry)
      const release = Effect.sync(() => {
        if (live.get(runId) === entry) live.delete(runId)
      })
      return Effect.gen(function*() {
        const { workflow } = registered
        // A run this process has just created has no step records yet: nothing to read. (Were another process to
        // write some meanwhile, the claims of this walk's steps would find them and stop it.)
        const memo = created ? new Map<string, RunStore.StepRecord>() : yield* core.loadMemo(runId, workflow.id)
        if (memo === undefined) return yield* Effect.zipRight(release, endOpen(Exit.void))
        const park: Executor.Park = {
          after: parkAfter,
          wakeAt: (path, until) => timers.schedule(runId, path, until)
        }
        // A step's claim lost to another process: that process took the run over (this one was silent past its
        // lease), so this generation stops, as at an engine's stop, and records nothing more.
        const fenced = () => entry.fiber?.unsafeInterruptAsFork(FiberId.none)
        const env = core.makeEnv(runId, registered, memo, { _tag: "Inline", park, fenced })
        let sleeping = 0
        const waits: Interpreter.WaitTracker = {
          enter: Effect.suspend(() => ++sleeping === 1 ? core.setRun(runId, { status: "waiting" }) : Effect.void),
          leave: Effect.suspend(() => --sleeping === 0 ? core.setRun(runId, { status: "running" }) : Effect.void)
        }
        const generation = Effect.exit(Tracing.under(Interpreter.runWorkflow(env, waits, workflow, input, ""), parent)).pipe(
          Effect.flatMap((exit) => {
            outcome = Tracing.walkExit(exit)
            return classify(workflow, exit)
          }),
          Effect.flatMap((result) =>
            result._tag === "Pending"
              ? parkRun(runId, entry, registered, input)
              // No longer live before anyone hears how it settled: a waiter may resume it at once.
              : Effect.zipRight(release, core.applyWalk(runId, result))
          ),
          Effect.catchAllCause((cause) => Effect.logError(`Run ${runId} could not be recorded`, cause)),
          // One finalizer for all three (each of `onInterrupt`, `ensuring` and `onExit` masks interruption on its own,
          // a few fiber operations apiece on every run). Interrupted without a cancel: the engine is shutting down,
          // and the run stays as the store has it.
          Effect.onExit((exit) => {
            const cleanup = Effect.zipRight(release, endOpen(exit))
            if (Exit.isSuccess(exit) || !Cause.isInterruptedOnly(exit.cause)) return cleanup
            // Interrupted: what the steps that were running wrote is made durable first (an inline walk's user code
            // does not flush in a finalizer of its own, see `Executor.runUser`), then a cancel is recorded.
            const recorded = (effect: Effect.Effect<void>) =>
              Effect.catchAllCause(effect, (cause) => Effect.logError(`Run ${runId} could not be recorded`, cause))
            const flushed = recorded(env.flushWrites)
            return Effect.zipRight(entry.canceling ? Effect.zipRight(flushed, recorded(core.cancelRun(runId))) : flushed, cleanup)
          })
        )
        // The walk's fiber is its own: its context is set once, at its start, to what user code is given (the run's
        // services and `RunContext`), not in the span of the code that launched it (`start`'s caller), so that spans
        // of the walk hang under the run's. Nothing runs in this fiber after the walk, so nothing needs it restored;
        // scoping it (`Effect.provide`, `Effect.mapInputContext`) cost two dozen fiber operations on every run.
        // Effect schedules a forked fiber and never runs it inside `forkIn`: `entry.fiber` is set before the walk begins.
        entry.fiber = yield* Effect.forkIn(Effect.zipRight(FiberRef.set(FiberRef.currentContext, env.userContext), generation), scope)
      }).pipe(Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : Effect.zipRight(release, endOpen(exit))))
    })

  /** A generation ended with only parked sleeps ahead: the run waits, holding nothing but its timer entries. */
  const parkRun = (runId: string, entry: LiveRun, registered: Registered, input: unknown) =>
    Effect.zipRight(
      core.setRun(runId, { status: "waiting" }),
      lock.withPermits(1)(Effect.suspend(() => {
        if (live.get(runId) === entry) live.delete(runId)
        if (!entry.wakeRequested) return Effect.void
        return Effect.zipRight(core.setRun(runId, { status: "running" }), launch(runId, registered, input, entry.parent))
      }))
    )

  /** A parked sleep is due: walk the run again, unless it is walking (then once more at the end) or is over. */
  const wake = (runId: string): Effect.Effect<void> =>
    lock.withPermits(1)(Effect.gen(function*() {
      const walking = live.get(runId)
      if (walking !== undefined) {
        walking.wakeRequested = true
        return
      }
      const record = yield* Effect.orDie(core.store.getRun(runId))
      // Over, resumed, or taken over by another instance (this one was silent past its lease): not ours to walk.
      if (record?.status !== "waiting" || (record.owner !== undefined && record.owner !== core.workerId)) return
      const registered = core.registry.get(record.workflowId)
      if (registered === undefined) return
      const input = yield* core.storedInput(registered, record)
      if (input === undefined) return
      yield* core.setRun(runId, { status: "running" })
      yield* launch(runId, registered, input.value, Tracing.parentOf(record.trace))
    })).pipe(Effect.catchAllCause((cause) => Effect.logError(`Waking run ${runId} failed`, cause)))

  const cancel = (runId: string): Effect.Effect<void> =>
    Effect.gen(function*() {
      timers.cancel(runId)
      const entry = live.get(runId)
      if (entry?.fiber !== undefined) {
        entry.canceling = true
        return yield* Fiber.interrupt(entry.fiber)
      }
      const record = yield* Effect.orDie(core.store.getRun(runId))
      if (record === undefined || RunStore.isTerminal(record.status)) return
      yield* core.cancelRun(runId)
    }).pipe(lock.withPermits(1))

  const isLive = (runId: string) => live.has(runId) || timers.has(runId)

  return yield* core.withDriver({
    launch: (runId, registered, input, reason, parent) => launch(runId, registered, input, parent, reason === "start"),
    endsRunSpan: true,
    cancel,
    initialStatus: "running",
    orphanStatuses: ["running", "waiting"],
    isLive,
    // What this process walks or parks is all it carries.
    holds: isLive
  }, scope)
})
