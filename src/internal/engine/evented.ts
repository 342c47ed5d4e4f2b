/**
 * The evented engine: every transition of a run is a command on the `workflows` channel, handled by whichever engine
 * instance of the consumer group receives it. Handlers keep nothing between messages: each one reads the run from
 * the store, walks its graph with the shared interpreter (replaying what is recorded) and publishes what follows.
 *
 * - `workflow.start` / `workflow.resume` / `workflow.step.end`: a dispatching walk. Ready steps are recorded
 *   `running` and sent as `workflow.step.run`; sleeps ask for a wake-up; a finished walk sends `workflow.end`,
 *   `workflow.fail` or `workflow.suspend`.
 * - `workflow.step.run`: an executing walk that runs that one node through the step executor, then sends
 *   `workflow.step.end`. These run concurrently; everything else for one run is serialized.
 * - `workflow.end` / `workflow.fail` / `workflow.cancel`: record the outcome, emit the run's last events, and
 *   announce it on `workflows-finish`, which every engine instance hears. `workflow.suspend` only announces: the
 *   walk that found the run suspended recorded it, under the run's lock, so that a duplicate cannot undo a resume.
 *
 * Nothing is lost when instances stop: a stopping instance hands the commands it was handling back to the group
 * (`handOver`); a run whose owner went silent is taken over (the engine core's scan); a step whose executing instance
 * went silent is sent again by the run's owner, and a run whose step end never came is walked on (`checkExecutors`);
 * a command for a workflow this instance does not register goes back to the group (`handBack`).
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import type * as Tracer from "effect/Tracer"
import * as EventBus from "../../EventBus.js"
import * as RunStore from "../../RunStore.js"
import { SerializedError } from "../../WorkflowEvent.js"
import * as Codec from "../codec.js"
import { randomId } from "../ids.js"
import { outage } from "../retry.js"
import * as Consume from "../bus/consume.js"
import { classify, type EngineOptions, type LaunchReason, makeCore, type Registered, type WalkResult } from "./core.js"
import * as Executor from "./executor.js"
import * as Interpreter from "./interpreter.js"
import type * as Memo from "./memo.js"
import * as Mutex from "./mutex.js"
import * as Timers from "./timers.js"
import * as Tracing from "./tracing.js"
import { wallNow, wallSleep } from "../wallClock.js"

const noBeats: ReadonlyMap<string, number> = new Map()

/**
 * Whether an instance that claimed something at `claimedAt` has been silent since before `staleBefore`: neither its
 * last heartbeat nor its claim is that recent.
 */
const silent = (beats: ReadonlyMap<string, number>, worker: string, claimedAt: number, staleBefore: number): boolean =>
  Math.max(beats.get(worker) ?? 0, claimedAt) < staleBefore

/** The path of the record that claims a run's settlement: no node of a graph has it (paths are digits and marks). */
const settlementPath = "$settled"

/**
 * A command. `handBacks`: how many times instances that do not register the run's workflow took it and published it
 * again for the others of the group. `trace`: the ids of the run's span, so that the walk the command causes, in
 * whichever instance, makes its spans children of it (commands from before tracing have none).
 */
const command = <T extends string, F extends Schema.Struct.Fields>(type: T, data: F) =>
  Schema.Struct({
    type: Schema.Literal(type),
    runId: Schema.String,
    data: Schema.Struct(data),
    handBacks: Schema.optional(Schema.Number),
    trace: Schema.optional(Tracing.TraceContext)
  })

const Suspended = Schema.Struct({ step: Schema.String, path: Schema.String, payload: Schema.Unknown })

/** The commands of the `workflows` channel. */
export const Command = Schema.Union(
  command("workflow.start", {}),
  // `released`: handed back by an instance that stopped while executing the step under this claim (its call id).
  command("workflow.step.run", { path: Schema.String, released: Schema.optional(Schema.String) }),
  command("workflow.step.end", { path: Schema.String }),
  command("workflow.suspend", { suspended: Schema.Array(Suspended) }),
  command("workflow.resume", { recover: Schema.optional(Schema.Boolean) }),
  command("workflow.cancel", {}),
  command("workflow.end", { output: Schema.Unknown }),
  command("workflow.fail", { stepId: Schema.String, path: Schema.String, error: SerializedError })
)
export type Command = typeof Command.Type

/** What `workflows-finish` carries: how a run settled (`suspended` included, so waiters can wake up). */
export const Finished = command("workflow.finished", {
  status: Schema.Literal("success", "failed", "canceled", "suspended")
})
export type Finished = typeof Finished.Type

type CommandData<T extends Command["type"]> = Extract<Command, { readonly type: T }>["data"]

export const defaultGroup = "stepwise-engine"

/** A command about a run whose workflow this instance does not register: it goes back to the group. */
class Unregistered extends Data.TaggedError("Unregistered")<{ readonly runId: string; readonly workflowId: string }> {}

/** How many times a command goes back to the group before an instance gives up on it (and says so). */
const maxHandBacks = 20

/**
 * Builds an evented engine instance. With `client`, the instance executes nothing: it starts, reads, cancels and
 * resumes runs by sending commands to the group's workers, reads no command, owns no run and takes none over.
 */
export const makeEvented = (options: EngineOptions & { readonly group?: string; readonly client?: boolean } = {}) =>
  Effect.gen(function*() {
    // Walked after every message: the run's step records are cached between walks.
    const core = yield* makeCore(options, true)
    const { bus, store } = core
    const scope = yield* Effect.scope
    /**
     * Where handlers run: closed after the consumers have stopped (it is created before them, and a scope closes
     * what it holds last to first), so that handlers interrupted by this instance's stop hand their commands to the
     * instances still in the group, not to this one's consumer.
     */
    const handlers = yield* Scope.fork(scope, ExecutionStrategy.sequential)
    const group = options.group ?? defaultGroup
    /**
     * This instance, as the executor named in the step records it claims and in its own heartbeats: its worker id and
     * when it started. Named by the worker id alone, a worker restarted under its name within the lease went on
     * heartbeating for the steps its former process was executing when it died, and the runs' owners, taking their
     * executor for alive, never sent them again (runs waited for ever; seen in the kill soak once killed workers came
     * back in a few seconds). Ownership of runs stays by worker id, so a restarted worker still takes its runs back
     * at once.
     */
    const executorId = `${core.workerId}@${core.startedAt}`
    if (options.client !== true) {
      yield* Effect.gen(function*() {
        yield* Effect.ignore(store.heartbeat(executorId, wallNow()))
        yield* wallSleep(Duration.millis(core.leaseMillis / 3))
      }).pipe(Effect.forever, Effect.forkIn(scope))
    }

    // Process-local bookkeeping only: a restart loses none of a run's state.
    const locks = new Map<string, { readonly mutex: Mutex.Mutex; users: number }>()
    const executing = new Map<string, Set<Fiber.RuntimeFiber<void>>>()
    // The dispatching walks (start, resume, step end) of each run, running or waiting for its lock.
    const walking = new Map<string, Set<Fiber.RuntimeFiber<void>>>()
    /**
     * The runs this instance launched (started, resumed or took over) that have not settled. They name this worker as
     * their owner, and between two messages nothing in the process shows they are alive: without this, the periodic
     * scan for orphaned runs took them for runs left by a crash and launched them again, and a step still executing
     * was dispatched, and executed, a second time. Each says when this instance last walked the run (wall clock): a
     * running run not walked here for a lease is checked for steps whose executor went silent (`checkExecutors`).
     */
    const carried = new Map<string, number>()

    // Sleeps not yet due: one timer queue, which sends the sleep's node to be executed once it is.
    const timers = yield* Timers.make((runId, path) => send("workflow.step.run", runId, { path }))

    // Commands this instance built are valid by construction: when the bus hands back the same object (the memory
    // bus does), it is not decoded again.
    const sent = new WeakSet<object>()
    const publishCommand = (message: Command): Effect.Effect<void> => {
      sent.add(message)
      const publish = bus.publish(EventBus.workflowsChannel, message)
      // A broker that is down (restarting) is waited for as long as a store would be: given up after a few quick
      // tries, the command's walk died, and the run was failed for the outage. The retry schedule is only set up
      // once a publish has failed: the common path stays one call.
      return publish.pipe(
        Effect.catchAll((first) =>
          Effect.zipRight(
            Effect.logWarning(`Could not send ${message.type} for run ${message.runId}; retrying`, first.message),
            Effect.retry(publish, outage)
          )
        ),
        Effect.orDie
      )
    }
    const send = <T extends Command["type"]>(
      type: T,
      runId: string,
      data: CommandData<T>,
      trace?: RunStore.TraceContext | undefined
    ): Effect.Effect<void> => publishCommand((trace === undefined ? { type, runId, data } : { type, runId, data, trace }) as Command)

    /**
     * Publishes a command this instance cannot handle (it does not register the run's workflow) again, for another
     * instance of the group, after a pause that doubles each time (10 ms to 1 s). Dropping it would leave the run
     * waiting for ever: its owner is alive, so no takeover walks it again. After `maxHandBacks`, it is dropped,
     * with an error that says what to fix.
     */
    const handBack = (message: Command, missing: Unregistered): Effect.Effect<void> =>
      Effect.suspend(() => {
        const handBacks = (message.handBacks ?? 0) + 1
        const what = `Run ${missing.runId} needs workflow "${missing.workflowId}", which this instance does not register`
        if (handBacks > maxHandBacks) {
          return Effect.logError(
            `${what}; ${message.type} came back ${maxHandBacks} times and is dropped. Register the workflow in every ` +
              `instance of the consumer group "${group}"; the run goes on once an instance that registers it walks it.`
          )
        }
        return Effect.zipRight(
          handBacks === 1
            ? Effect.logWarning(`${what}; handing ${message.type} back to the consumer group "${group}".`)
            : Effect.void,
          Effect.zipRight(wallSleep(Duration.millis(Math.min(1000, 5 * 2 ** handBacks))), publishCommand({ ...message, handBacks }))
        )
      })

    const announce = (runId: string, status: Finished["data"]["status"]) =>
      Executor.publishQuietly(bus, EventBus.workflowsFinishChannel, { type: "workflow.finished", runId, data: { status } })

    /** Serializes the control handlers of one run; step executions are not serialized. */
    const withLock = <A, E>(runId: string, effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
      Effect.suspend(() => {
        let lock = locks.get(runId)
        if (lock === undefined) {
          lock = { mutex: Mutex.make(), users: 0 }
          locks.set(runId, lock)
        }
        const held = lock
        held.users++
        return held.mutex.withLock(effect, () => {
          if (--held.users === 0 && locks.get(runId) === held) locks.delete(runId)
        })
      })

    // A run's input is decoded once per stored value (the memory store hands out the same object every time), until
    // the run only waits (`forgetInput`).
    const decodedInputs = new WeakMap<object, unknown>()
    const forgetInput = (record: RunStore.RunRecord) => {
      if (typeof record.input === "object" && record.input !== null) decodedInputs.delete(record.input)
    }
    /** The run's stored input, decoded; `undefined` when it no longer decodes (the dispatching walk fails the run). */
    const decodeInput = (registered: Registered, record: RunStore.RunRecord) => {
      if (record.corrupt !== undefined) return Effect.succeed(undefined)
      const key = typeof record.input === "object" && record.input !== null ? record.input : undefined
      if (key !== undefined && decodedInputs.has(key)) return Effect.succeed({ value: decodedInputs.get(key) })
      return Effect.match(Codec.decode(registered.workflow.inputSchema, record.input), {
        onFailure: () => undefined,
        onSuccess: (value) => {
          if (key !== undefined) decodedInputs.set(key, value)
          return { value }
        }
      })
    }

    type Loaded =
      | { readonly _tag: "Undecodable"; readonly record: RunStore.RunRecord; readonly registered: Registered }
      | {
        readonly _tag: "Loaded"
        readonly record: RunStore.RunRecord
        readonly registered: Registered
        readonly input: unknown
        readonly memo: Memo.Memo
      }

    /**
     * The run and what it needs to be walked, or nothing when it is over or unknown to this process. A run whose
     * stored input no longer decodes comes back as `Undecodable`: only a handler holding the run's lock fails it.
     * Loaded after every command: its input decoded before and its step records cached (the common case) are taken
     * as they are, not through an effect each.
     */
    const load = (runId: string): Effect.Effect<Loaded | undefined, Unregistered> =>
      Effect.flatMap(Effect.orDie(store.getRun(runId)), (record) => {
        if (record === undefined || RunStore.isTerminal(record.status)) {
          carried.delete(runId)
          return Effect.succeed(undefined)
        }
        const registered = core.registry.get(record.workflowId)
        if (registered === undefined) return Effect.fail(new Unregistered({ runId, workflowId: record.workflowId }))
        const withInput = (input: { readonly value: unknown } | undefined): Effect.Effect<Loaded | undefined> => {
          if (input === undefined) return Effect.succeed({ _tag: "Undecodable", record, registered })
          const loaded = (memo: Memo.Memo | undefined): Loaded | undefined =>
            memo === undefined ? undefined : { _tag: "Loaded", record, registered, input: input.value, memo }
          const cached = core.cachedMemo(runId, record.stepsVersion)
          return cached !== undefined
            ? Effect.succeed(loaded(cached))
            : Effect.map(core.loadMemo(runId, record.workflowId, record.stepsVersion), loaded)
        }
        const key = typeof record.input === "object" && record.input !== null ? record.input : undefined
        return record.corrupt === undefined && key !== undefined && decodedInputs.has(key)
          ? withInput({ value: decodedInputs.get(key) })
          : Effect.flatMap(decodeInput(registered, record), withInput)
      })

    /**
     * Which of a run's steps recorded `running` lost their executor: claimed by an instance that has been silent for
     * the lease (and claimed longer ago than that), claimed under this instance's `workerId` before this instance
     * started (a former process of the same name), or sent longer than the lease ago and claimed by nobody. With
     * `unclaimed`, also every step no instance claimed: after the owner died, the command may have died with it. A
     * step claimed by an instance that is alive is never sent again.
     */
    const lostSteps = (memo: Memo.Memo, unclaimed: boolean) =>
      Effect.gen(function*() {
        const others = new Set<string>()
        for (const record of memo.values()) {
          if (record.status === "running" && record.worker !== undefined && record.worker !== executorId) {
            others.add(record.worker)
          }
        }
        const beats = others.size === 0 ? noBeats : yield* Effect.orDie(store.workerHeartbeats(Array.from(others)))
        const staleBefore = wallNow() - core.leaseMillis
        return (record: RunStore.StepRecord): boolean => {
          const { startedAt = 0, worker } = record
          // Sent, and claimed by nobody for the lease: the instance that took its command may have died before it
          // claimed the step (a broker counts a command handled once it is handed to the engine). Sent again, the
          // step is still executed once: of two copies, one wins the claim.
          if (worker === undefined) return unclaimed || (record.dispatchedAt !== undefined && record.dispatchedAt < staleBefore)
          if (worker === executorId) return false
          // A former process of this worker's name (records from before executor ids carry the name alone).
          if (worker === core.workerId || worker.slice(0, worker.lastIndexOf("@")) === core.workerId) {
            return startedAt < core.startedAt
          }
          // An instance claimed after the heartbeats were read counts as alive: its claim is recent.
          return silent(beats, worker, startedAt, staleBefore)
        }
      })

    /**
     * Walks the run, dispatching what is ready, and sends what the walk came to. `lost`: send steps recorded `running`
     * again when they lost their executor (`lostSteps`), also unclaimed ones when recovering a run whose owner died.
     */
    const advance = (runId: string, lost?: "recover" | "executor", trace?: RunStore.TraceContext) =>
      Effect.flatMap(load(runId), (loaded) => {
        // A suspended run waits for resume (which sets it running first); a late step end has nothing to advance.
        if (loaded === undefined || loaded.record.status === "suspended") return Effect.void
        if (loaded._tag === "Undecodable") {
          // Fails the run, saying why (as the default engine does), and tells every instance.
          return Effect.flatMap(
            core.storedInput(loaded.registered, loaded.record),
            (input) => input === undefined ? announce(runId, "failed") : Effect.void
          )
        }
        return lost === undefined
          ? dispatchWalk(runId, loaded, undefined, trace)
          : Effect.flatMap(lostSteps(loaded.memo, lost === "recover"), (redispatch) =>
            dispatchWalk(runId, loaded, redispatch, trace))
      })

    /** The dispatching walk of a loaded run (see `advance`), and what follows from where it came to. */
    const dispatchWalk = (
      runId: string,
      loaded: Extract<Loaded, { readonly _tag: "Loaded" }>,
      redispatch: ((record: RunStore.StepRecord) => boolean) | undefined,
      trace: RunStore.TraceContext | undefined
    ): Effect.Effect<void> => {
      const { input, memo, record, registered } = loaded
      const parent = trace ?? record.trace
      const env = core.cachedEnv(runId, registered, memo, {
        _tag: "Dispatch",
        dispatch: (path) => send("workflow.step.run", runId, { path }, parent),
        wakeAt: (path, until) => timers.schedule(runId, path, until),
        redispatch
      })
      const settle = (exit: Exit.Exit<unknown, Executor.Halt>) => Effect.flatMap(classify(registered.workflow, exit), afterWalk)
      const afterWalk = (result: WalkResult): Effect.Effect<void> => {
        switch (result._tag) {
          case "Success":
            return send("workflow.end", runId, { output: result.output })
          case "Failed": {
            const { failure } = result
            return send("workflow.fail", runId, {
              stepId: failure.stepId,
              path: failure.path,
              error: Executor.serializeCause(failure.cause)
            })
          }
          case "Suspended":
            // Recorded here, under the run's lock, so a second walk of the same state cannot suspend it again
            // after a resume; the command announces it.
            return Effect.zipRight(
              core.suspendRun(runId, result.suspended),
              send("workflow.suspend", runId, { suspended: result.suspended })
            )
          case "Fenced":
            // A dispatching walk executes no step; a node it met is another execution's, which walks on from it.
            return Effect.void
          case "Pending": {
            if (carried.has(runId)) carried.set(runId, wallNow())
            // A run that only sleeps keeps nothing in this process but its timers.
            if (result.waitingOnly) {
              core.dropEnv(runId)
              forgetInput(record)
            }
            const status = result.waitingOnly ? "waiting" : "running"
            return record.status !== status ? core.setRun(runId, { status }) : Effect.void
          }
        }
      }
      return Effect.matchCauseEffect(
        Tracing.under(Interpreter.runWorkflow(env, Interpreter.noWaits, registered.workflow, input, ""), parent),
        {
          onSuccess: (value) => settle(Exit.succeed(value)),
          onFailure: (cause) => {
            // The walk of nearly every command comes to steps in flight: answered here, not through `classify`.
            const halt = Cause.failureOption(cause)
            return halt._tag === "Some" && halt.value._tag === "Pending"
              ? afterWalk({ _tag: "Pending", waitingOnly: halt.value.waitingOnly })
              : settle(Exit.failCause(cause))
          }
        }
      )
    }

    /**
     * Gives the fiber of an executing walk the run's user context (its services and `RunContext`), for the rest of
     * the fiber's life: the walk's fiber is the command's own, and nothing of the engine in it reads its context
     * (store, bus and scopes are the engine's own values). `Effect.provide` around the step's code, as the executor
     * does for walks without it, cost about 20 fiber operations on every step. The merge of the fiber's context with
     * the run's is kept for the next command: handlers inherit one context from the consumer.
     */
    let mergedFor: { readonly base: Context.Context<never>; readonly user: Context.Context<never>; readonly merged: Context.Context<never> } | undefined
    const enterUserContext = (user: Context.Context<never>) =>
      Effect.flatMap(Effect.context<never>(), (base) => {
        if (mergedFor === undefined || mergedFor.base !== base || mergedFor.user !== user) {
          mergedFor = { base, user, merged: Context.merge(base, user) }
        }
        return FiberRef.set(FiberRef.currentContext, mergedFor.merged)
      })

    /**
     * Executes one dispatched node, then reports its end. A step is claimed in the store before its code runs: an
     * execution that does not get the claim (the command came twice, or the step was sent again meanwhile) does
     * nothing and reports nothing, and one whose claim another execution takes while it runs is stopped (`stop`,
     * which interrupts this handler and keeps it from handing its command back) and reports nothing either. The
     * execution that holds the claim reports the end.
     */
    const executeNode = (
      runId: string,
      path: string,
      released: string | undefined,
      stop: () => void,
      claimed: (record: RunStore.StepRecord) => void,
      trace: RunStore.TraceContext | undefined
    ): Effect.Effect<void, Unregistered> =>
      Effect.flatMap(load(runId), (loaded) => {
        if (loaded === undefined) return Effect.void
        // Not run: the step's end takes the run to a dispatching walk, which fails it under the run's lock.
        if (loaded._tag === "Undecodable") return send("workflow.step.end", runId, { path }, trace)
        const { input, memo, record, registered } = loaded
        const parent = trace ?? record.trace
        const env = core.cachedEnv(runId, registered, memo, {
          _tag: "Execute",
          path,
          worker: executorId,
          fenced: stop,
          claimed,
          released,
          inUserContext: true
        })
        const ended = send("workflow.step.end", runId, { path }, parent)
        // Whatever the walk comes to (the node's own outcome is recorded), the dispatching side takes it from here.
        return Effect.matchCauseEffect(
          Effect.zipRight(
            enterUserContext(env.userContext),
            Tracing.under(Interpreter.runWorkflow(env, Interpreter.noWaits, registered.workflow, input, ""), parent)
          ),
          {
            onSuccess: () => ended,
            onFailure: (cause) => {
              const halt = Cause.failureOption(cause)
              return halt._tag === "Some" && halt.value._tag === "StepFenced" ? Effect.void : ended
            }
          }
        )
      })

    /**
     * The walk after a step ends, or nothing when one is already on its way. A step end that arrives while such a walk
     * has not yet taken the run's lock adds nothing: that walk reads the store once it holds the lock, so it sees the
     * end's record too (each end is sent after its record is stored). The check is made where the message is taken
     * off the bus, before anything is forked, so the step ends of one pull (a foreach of 1,000 in memory ends many
     * steps between two pulls) come to one walk; on Postgres, a parallel of 10 is walked about 5 times in all instead
     * of 11. (Interrupted while waiting, the walk clears the mark; should a newer walk own it by then, the next end
     * merely walks once more.)
     */
    const awaitingWalk = new Set<string>()
    const advanceOnce = (runId: string, trace: RunStore.TraceContext | undefined): Effect.Effect<void, Unregistered> | undefined => {
      if (awaitingWalk.has(runId)) return undefined
      awaitingWalk.add(runId)
      // Interrupted while it waits, the caller clears the mark (see `take`).
      return withLock(
        runId,
        Effect.suspend(() => {
          awaitingWalk.delete(runId)
          return advance(runId, undefined, trace)
        })
      )
    }

    /** Forks `effect` as a fiber of the run's in `fibers` (executing steps, or walking), until it ends. */
    const track = (fibers: Map<string, Set<Fiber.RuntimeFiber<void>>>, runId: string, effect: Effect.Effect<void>) =>
      Effect.map(Effect.forkIn(effect, handlers), (fiber) => {
        let owned = fibers.get(runId)
        if (owned === undefined) {
          owned = new Set()
          fibers.set(runId, owned)
        }
        const set = owned
        set.add(fiber)
        fiber.addObserver(() => {
          set.delete(fiber)
          if (set.size === 0 && fibers.get(runId) === set) fibers.delete(runId)
        })
      })

    /**
     * Interrupts this process's dispatching walks of a run, running or waiting for its lock. A walk runs conditions and
     * sleep functions, user code that may take long (or for ever): a cancel waiting for the lock would wait for it.
     */
    const stopWalks = (runId: string) => interruptFor(runId, walking)

    // How many interruptions of each run's fibers are under way because the run was canceled.
    const canceling = new Map<string, number>()

    /** Interrupts the run's fibers in `fibers` because it was canceled: they do not hand their commands back. */
    const interruptFor = (runId: string, fibers: Map<string, Set<Fiber.RuntimeFiber<void>>>) =>
      Effect.suspend(() => {
        const running = fibers.get(runId)
        if (running === undefined) return Effect.void
        canceling.set(runId, (canceling.get(runId) ?? 0) + 1)
        return Fiber.interruptAll(Array.from(running)).pipe(Effect.ensuring(Effect.sync(() => {
          const left = canceling.get(runId)! - 1
          if (left === 0) canceling.delete(runId)
          else canceling.set(runId, left)
        })))
      })

    /** Stops what this process executes, walks or waits for in a run (finalizers in the steps run). */
    const stopLocal = (runId: string) =>
      Effect.gen(function*() {
        timers.cancel(runId)
        yield* stopWalks(runId)
        yield* interruptFor(runId, executing)
      })

    /**
     * A command whose handling was interrupted for another reason than its run's cancel (this instance is stopping)
     * goes back to the group, so that another instance takes it now: a step command taken off the bus but not yet
     * claimed would otherwise be lost while the run's owner lives, a claimed one would wait for the lease, and a lost
     * step end for the owner's next look at the run.
     */
    const handOver = (message: Command) =>
      Effect.suspend(() =>
        canceling.has(message.runId) ? Effect.void : publishCommand(message).pipe(
          Effect.zipRight(Effect.logDebug(`Run ${message.runId}: this instance stops; ${message.type} handed back to the group.`)),
          Effect.catchAllCause((cause) =>
            Effect.logWarning(`Run ${message.runId}: this instance stops and could not hand ${message.type} back`, cause)
          )
        )
      )

    const settled = (runId: string) =>
      Effect.map(Effect.orDie(store.getRun(runId)), (record) => record === undefined || RunStore.isTerminal(record.status))

    /**
     * Runs a command's handler. A command this instance cannot handle goes back to the group, a failure is logged (the
     * engine goes on with the next command), and an interruption (this instance stops) calls `interrupted`, which
     * hands the command over. One uninterruptible region and one continuation around the handler, where the three
     * wrappers this takes the place of (`Effect.catchTag`, `Effect.catchAllCause`, `Effect.onInterrupt`) cost two
     * regions and three continuations for every command, two commands per step.
     */
    const handled = (
      message: Command,
      effect: Effect.Effect<void, Unregistered>,
      interrupted: () => Effect.Effect<void>
    ): Effect.Effect<void> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.matchCauseEffect(restore(effect), {
          onSuccess: () => Effect.void,
          onFailure: (cause) => {
            if (Cause.isInterruptedOnly(cause)) return interrupted()
            const failure = Cause.failureOption(cause)
            const next = failure._tag === "Some"
              ? handBack(message, failure.value)
              : Effect.logError(`Handling ${message.type} for run ${message.runId} failed`, cause)
            // Handing back waits (and logging may): as interruptible as the handler was.
            return Effect.catchAllCause(restore(next), (after) => Cause.isInterruptedOnly(after) ? interrupted() : Effect.void)
          }
        })
      )

    /**
     * Settles a run once, across instances. The run's lock is per process: two instances handling the run's end (a
     * command delivered twice, a walk on each side coming to the same end, a cancel meeting the end) each found the
     * run unsettled and each recorded its outcome and emitted a second \`workflow-finish\`. Now each first claims the
     * run's settlement in the store (a record at a path no node has, naming the claiming instance); of several, one
     * wins and settles. Should the winner die between its claim and its records (a window of a few statements), the
     * run would wait for ever: an instance that lost the claim looks again every lease, and settles a run that is
     * still unsettled once the winner has been silent for the lease (a winner that is only slow is left to finish).
     */
    const settleOnce = (runId: string, outcome: string, settle: Effect.Effect<void>) =>
      Effect.gen(function*() {
        const claim: RunStore.StepRecord = {
          path: settlementPath,
          stepId: settlementPath,
          status: "success",
          output: outcome,
          stepCallId: randomId(),
          worker: executorId,
          startedAt: wallNow()
        }
        const won = yield* Effect.orDie(store.claimStep(runId, claim, undefined))
        if (won !== undefined) return yield* settle
        yield* Effect.logDebug(`Run ${runId}: another instance settles it; this one's ${outcome} is dropped.`)
        const winnerGone = Effect.gen(function*() {
          if (yield* settled(runId)) return undefined
          const steps = yield* Effect.orDie(store.getSteps(runId))
          const winner = steps.steps.find((step) => step.path === settlementPath)
          if (winner?.worker === undefined) return false
          const beats = yield* Effect.orDie(store.workerHeartbeats([winner.worker]))
          return silent(beats, winner.worker, winner.startedAt ?? 0, wallNow() - core.leaseMillis)
        })
        const watch: Effect.Effect<void> = Effect.zipRight(
          wallSleep(Duration.millis(core.leaseMillis)),
          Effect.flatMap(withLock(runId, Effect.flatMap(winnerGone, (gone) =>
            gone === true
              ? Effect.as(
                Effect.zipRight(
                  Effect.logWarning(`Run ${runId}: the instance that claimed its settlement went silent; settling it here.`),
                  settle
                ),
                true
              )
              : Effect.succeed(gone === undefined))), (done) => done ? Effect.void : watch)
        )
        yield* Effect.forkIn(watch, handlers)
      })

    /** A control command's handler (it runs in a fiber of its own; see `take` for the step commands). */
    const handle = (message: Exclude<Command, { readonly type: "workflow.step.run" | "workflow.step.end" }>) => {
      const { runId } = message
      switch (message.type) {
        case "workflow.start":
          return withLock(
            runId,
            Effect.gen(function*() {
              const record = yield* Effect.orDie(store.getRun(runId))
              if (record?.status === "pending" && core.registry.has(record.workflowId)) {
                // A client started it and owns nothing: the worker that starts it owns it (heartbeats, watches it).
                if (record.owner === undefined) {
                  const now = wallNow()
                  if (yield* Effect.orDie(store.claimRun(runId, core.workerId, now, now - core.leaseMillis))) {
                    carried.set(runId, now)
                  }
                }
                yield* core.setRun(runId, { status: "running" })
              }
              yield* advance(runId, undefined, message.trace)
            })
          )
        case "workflow.resume":
          return withLock(runId, advance(runId, message.data.recover === true ? "recover" : undefined, message.trace))
        case "workflow.end":
          return withLock(
            runId,
            Effect.gen(function*() {
              const record = yield* Effect.orDie(store.getRun(runId))
              if (record === undefined || RunStore.isTerminal(record.status)) return
              yield* settleOnce(runId, "success", Effect.zipRight(
                core.completeRun(runId, message.data.output),
                announce(runId, "success")
              ))
            })
          )
        case "workflow.fail":
          return withLock(
            runId,
            Effect.gen(function*() {
              if (yield* settled(runId)) return
              const { error, path, stepId } = message.data
              const cause = core.causeAt(runId, path) ??
                Executor.rebuildCause(path, { path, stepId, status: "failed", error })
              yield* settleOnce(runId, "failed", Effect.zipRight(
                core.failRun(runId, new Executor.StepFailure({ stepId, path, cause })),
                announce(runId, "failed")
              ))
            })
          )
        case "workflow.suspend":
          return announce(runId, "suspended")
        case "workflow.cancel":
          // The walks first: one that holds the lock may be running a condition that does not end.
          return Effect.zipRight(
            stopWalks(runId),
            withLock(
              runId,
              Effect.gen(function*() {
                if (yield* settled(runId)) return
                yield* stopLocal(runId)
                yield* settleOnce(runId, "canceled", Effect.zipRight(core.cancelRun(runId), announce(runId, "canceled")))
              })
            )
          )
      }
    }

    /**
     * What the consumer does with a command, in its own fiber and before the next pull: a step execution gets a
     * tracked fiber, a step end a walk only when none is on its way, anything else a fiber for its handler. A handler
     * that this instance's stop interrupts hands its command back (`handOver`).
     */
    const take = (message: Command): Effect.Effect<void> => {
      const handedOver = () => handOver(message)
      switch (message.type) {
        case "workflow.step.run": {
          // Interrupted because another execution claimed its step: the command is done with, not handed back.
          // Interrupted because this instance stops: the command is handed back naming the claim it gives up, which
          // only the instance that takes it may take over (lost on the way, the claim still names this instance,
          // whose silence the run's owner notices after the lease).
          let fenced = false
          let held: RunStore.StepRecord | undefined
          const execution = Effect.withFiberRuntime<void, Unregistered>((fiber) =>
            executeNode(message.runId, message.data.path, message.data.released, () => {
              fenced = true
              fiber.unsafeInterruptAsFork(FiberId.none)
            }, (record) => {
              held = record
            }, message.trace)
          )
          return track(
            executing,
            message.runId,
            handled(
              message,
              execution,
              () =>
                fenced
                  ? Effect.void
                  : handOver(held?.stepCallId === undefined ? message : {
                    ...message,
                    data: { path: message.data.path, released: held.stepCallId }
                  })
            )
          )
        }
        case "workflow.step.end": {
          const { runId } = message
          const walk = advanceOnce(runId, message.trace)
          // Interrupted before it took the lock, the walk clears its mark (should a newer walk own it by then, the
          // next end merely walks once more).
          return walk === undefined ? Effect.void : track(
            walking,
            runId,
            handled(message, walk, () => {
              awaitingWalk.delete(runId)
              return handOver(message)
            })
          )
        }
        case "workflow.start":
        case "workflow.resume":
          return track(walking, message.runId, handled(message, handle(message), handedOver))
        default:
          return Effect.forkIn(handled(message, handle(message), handedOver), handlers)
      }
    }

    const decodeCommand = Schema.decodeUnknownEither(Command)
    const decodeFinished = Schema.decodeUnknown(Finished)

    const commands = options.client === true ? undefined : yield* bus.subscribe(EventBus.workflowsChannel, { group })
    if (commands !== undefined) yield* Consume.forEach(commands, (raw) => {
      let message: Command
      // Taken out as it is read: kept, an entry stayed for every command still referenced (a table of 64K slots after
      // 10,000 runs started at once).
      if (sent.delete(raw)) {
        message = raw as unknown as Command
      } else {
        const decoded = decodeCommand(raw)
        if (decoded._tag === "Left") {
          return Effect.logWarning(`Skipping malformed message on channel "${EventBus.workflowsChannel}"`, decoded.left.message)
        }
        message = decoded.right
      }
      return take(message)
    }).pipe(
      Effect.catchAllCause((cause) => Effect.logError("The evented engine stopped reading commands", cause)),
      Effect.forkIn(scope)
    )

    const finishes = yield* bus.subscribe(EventBus.workflowsFinishChannel)
    yield* Consume.forEach(finishes, (raw) =>
      decodeFinished(raw).pipe(
        Effect.flatMap((message) =>
          Effect.suspend(() => {
            carried.delete(message.runId)
            return Effect.zipRight(
              // Another instance canceled it: stop what this one still runs for it.
              message.data.status === "canceled" ? stopLocal(message.runId) : Effect.void,
              core.notify(message.runId)
            )
          })
        ),
        Effect.catchAll((error) =>
          Effect.logWarning(`Skipping malformed message on channel "${EventBus.workflowsFinishChannel}"`, error.message)
        )
      )
    ).pipe(
      Effect.catchAllCause((cause) => Effect.logError("The evented engine stopped reading outcomes", cause)),
      Effect.forkIn(scope)
    )

    const launch = (
      runId: string,
      _registered: Registered,
      _input: unknown,
      reason: LaunchReason,
      parent: Tracer.AnySpan | undefined
    ) =>
      Effect.suspend(() => {
        const trace = parent === undefined ? undefined : Tracing.contextOf(parent)
        if (options.client === true) {
          return reason === "start" ? send("workflow.start", runId, {}, trace) : send("workflow.resume", runId, {}, trace)
        }
        // A run carried here is only walked again (which sets its sleeps' timers again), never redispatched.
        const recover = reason === "recover" && !carried.has(runId)
        carried.set(runId, wallNow())
        return reason === "start"
          ? send("workflow.start", runId, {}, trace)
          : send("workflow.resume", runId, { recover }, trace)
      })

    /**
     * Sends again the steps that lost their executor (another instance, stopped or cut off, was executing them) in
     * the runs this instance holds: their owner is alive, so no takeover recovers them. Given the held runs by each
     * scan for orphaned runs (every half lease), as the scan read them. A run that is not `running` (it only sleeps)
     * or that this instance walked within the lease (it is progressing) is not looked at; for the others, the step
     * records (the cached ones, unless another process wrote since) and the heartbeats of the instances executing
     * their steps are read. A step outlasting the lease on an instance that is alive is left alone; a run with no
     * step executing anywhere is walked (a step's end that never came).
     */
    const checkExecutors = (registered: Registered, held: ReadonlyArray<RunStore.RunRecord>) =>
      Effect.forEach(held, (record) => {
        const { runId } = record
        const walkedAt = carried.get(runId)
        if (record.status !== "running" || walkedAt === undefined || walkedAt >= wallNow() - core.leaseMillis) {
          return Effect.void
        }
        return Effect.gen(function*() {
          const memo = yield* core.loadMemo(runId, registered.workflow.id, record.stepsVersion)
          if (memo === undefined) return
          const lost = yield* lostSteps(memo, false)
          const running: Array<RunStore.StepRecord> = []
          const containers = new Set<string>()
          for (const step of memo.values()) {
            if (step.status === "running") running.push(step)
            for (let i = step.path.indexOf("/"); i !== -1; i = step.path.indexOf("/", i + 1)) {
              containers.add(step.path.slice(0, i))
            }
          }
          const steps = running.filter(lost)
          if (steps.length === 0) {
            // No step is on its way or executing anywhere (a nested workflow's own record does not count: its steps
            // do), and yet the run is `running` and nobody walked it here for a lease: the end of its last step never
            // came (its executor crashed after recording the result, or the bus lost the message). A walk goes on
            // from what is recorded.
            if (running.every((step) => containers.has(step.path))) yield* withLock(runId, advance(runId))
            return
          }
          yield* Effect.logWarning(
            `Run ${runId}: ${
              steps.map((step) => `step "${step.stepId}" (path ${step.path}) on ${step.worker}`).join(", ")
            }, silent for the lease; sending ${steps.length === 1 ? "it" : "them"} again.`
          )
          yield* withLock(runId, advance(runId, "executor"))
        }).pipe(Effect.catchAllCause((cause) =>
          Effect.logWarning(`Looking for lost steps of run ${runId} failed; will retry`, cause)
        ))
      }, { discard: true })

    const cancel = (runId: string) =>
      Effect.gen(function*() {
        if (yield* settled(runId)) return
        yield* send("workflow.cancel", runId, {})
        yield* core.awaitTerminal(runId)
        // In this process, the interrupted steps' finalizers have run once their fibers are gone.
        yield* Fiber.awaitAll(Array.from(executing.get(runId) ?? []))
      })

    return yield* core.withDriver({
      launch,
      cancel,
      initialStatus: "pending",
      orphanStatuses: ["pending", "running", "waiting"],
      // Nothing here owns a run between messages: a handler finishing up never blocks a resume or a takeover.
      isLive: () => false,
      // A waiting run whose timer is not in this process (another instance walked it to its sleep) is walked again
      // by the scan: should that instance be gone, the sleep is not lost.
      holds: (runId, status) => carried.has(runId) && (status !== "waiting" || timers.has(runId)),
      watch: checkExecutors,
      executes: options.client !== true
    }, scope)
  })
