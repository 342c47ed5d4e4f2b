/**
 * The one step executor. Both engines run every piece of user code through the four entry points below (execute,
 * evaluateCondition, resolveSleep, resolveSleepUntil), and every one of them builds the user-facing context, writer
 * included, in `makeContext`. Parity between engines is therefore structural: there is no second place that could
 * forget the writer.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as ParseResult from "effect/ParseResult"
import type * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Sink from "effect/Sink"
import * as Tracer from "effect/Tracer"
import * as EventBus from "../../EventBus.js"
import type { RunWritable } from "../../RunContext.js"
import { RunContext } from "../../RunContext.js"
import type * as RunStore from "../../RunStore.js"
import type * as Step from "../../Step.js"
import * as ToolStream from "../../ToolStream.js"
import type { Node } from "../../Workflow.js"
import { StepFencedError, StreamClosedError } from "../../WorkflowError.js"
import type { SerializedError, WorkflowEvent } from "../../WorkflowEvent.js"
import * as Codec from "../codec.js"
import { randomId } from "../ids.js"
import type { Memo } from "./memo.js"
import * as Mutex from "./mutex.js"
import * as Tracing from "./tracing.js"
import { wallNow } from "../wallClock.js"

/** A step (or a nested workflow, or a map) failed: the run fails with it. */
export class StepFailure extends Data.TaggedError("StepFailure")<{
  readonly stepId: string
  readonly path: string
  readonly cause: Cause.Cause<unknown>
}> {}

/** One or more steps suspended: the run waits for `resume`. */
export class Suspension extends Data.TaggedError("Suspension")<{
  readonly suspended: ReadonlyArray<RunStore.SuspendedStep>
}> {}

/**
 * The walk cannot go further now: steps are dispatched to other handlers, or sleeps have not woken. The evented
 * engine's walks meet it, and inline walks that park long sleeps. `waitingOnly`: nothing but sleeps is pending (the
 * run's status is then `waiting`).
 */
export class Pending extends Data.TaggedError("Pending")<{ readonly waitingOnly: boolean }> {}

/**
 * This execution of a step does not hold the step (any more): another execution claimed it first, or claimed it
 * since and this one's writes were refused. It stops and reports nothing (the other one reports the step); a walk
 * that meets it records nothing of the run either.
 */
export class StepFenced extends Data.TaggedError("StepFenced")<{
  readonly runId: string
  readonly stepId: string
  readonly path: string
  /** The attempt this execution ran, or was a copy of (a command delivered twice). */
  readonly attempt: number
}> {
  override get message(): string {
    return `Run ${this.runId}: step "${this.stepId}" (path ${this.path}) is claimed by another execution; this ` +
      `execution (attempt ${this.attempt}) stops, and what it writes is refused.`
  }
}

/** How a walk of the graph stops short of its end. */
export type Halt = StepFailure | Suspension | Pending | StepFenced

/**
 * An execution's claim on a step, as this process holds it: the fence (path and call id) that what the execution
 * writes is made under. Once the store refuses a write under it, `fenced` is set and `stop` called, once.
 */
export interface Claim extends RunStore.StepFence {
  readonly runId: string
  readonly stepId: string
  attempt: number
  fenced: boolean
  readonly stop: (() => void) | undefined
}

/** Marks a claim fenced off (a write under it was refused) and stops its execution, once. */
const fenceOff = (claim: Claim): void => {
  if (claim.fenced) return
  claim.fenced = true
  claim.stop?.()
}

/** What a write of a fenced-off execution does: it dies, so that user code stops there (no retry catches a defect). */
const refused = (claim: Claim): Effect.Effect<never> =>
  Effect.die(new StepFenced({ runId: claim.runId, stepId: claim.stepId, path: claim.path, attempt: claim.attempt }))

/**
 * The claim of the step whose code the current fiber runs (its forks inherit it), so that a run stream's writable
 * obtained there writes under it.
 *
 * A cell, not the claim itself: setting a fiber ref copies the fiber's whole table of fiber refs, and the claim
 * changes on every step. Each fiber that runs user code gets a cell of its own once (`runUser` installs it), and
 * then writes the claim into it; a fork gets a copy of its parent's cell, holding the claim of the moment (a step's
 * forks keep writing under that step's claim, and parallel branches never share one). The initial cell is never
 * written.
 */
const noCell: { claim: Claim | undefined } = { claim: undefined }
const claimCell: FiberRef.FiberRef<{ claim: Claim | undefined }> = FiberRef.unsafeMake(noCell, {
  fork: (cell) => ({ claim: cell.claim }),
  join: (parent) => parent
})

/**
 * How a walk treats work that has not happened yet.
 * - `Inline` (default engine): executes everything, in fibers of this walk.
 * - `Dispatch` (evented engine, on every transition): evaluates conditions and sleeps, and hands each ready step to
 *   `dispatch` (which publishes `workflow.step.run`) instead of executing it.
 * - `Execute` (evented engine, on `workflow.step.run`): executes the one node at `path`; anything else not yet done
 *   is pending.
 */
export type Mode =
  | {
    readonly _tag: "Inline"
    readonly park?: Park
    /** Called when a step's claim is lost to another process, which has taken the run over: this walk must stop. */
    readonly fenced?: () => void
  }
  | {
    readonly _tag: "Dispatch"
    readonly dispatch: (path: string) => Effect.Effect<void>
    readonly wakeAt: (path: string, until: number) => Effect.Effect<void>
    /**
     * Which steps recorded `running` lost their executor (it stopped, or the message never reached one), and are
     * sent again; without it, a step recorded `running` is left to whoever executes it.
     */
    readonly redispatch?: ((record: RunStore.StepRecord) => boolean) | undefined
  }
  | {
    readonly _tag: "Execute"
    readonly path: string
    /** This engine instance, named in the `running` record of the step it executes. */
    readonly worker: string
    /** Called when the step's claim is lost to another execution while it runs: this execution must stop. */
    readonly fenced?: () => void
    /** Told of the step's record each time this execution claims it (first attempt) or records a retry under it. */
    readonly claimed?: (record: RunStore.StepRecord) => void
    /** The call id of a claim on the step that a stopping instance gave up with the command: it may be taken over. */
    readonly released?: string | undefined
    /** The walk's fiber already has the run's user context (the evented engine sets it once): not provided again. */
    readonly inUserContext?: boolean
  }

/**
 * How an inline walk treats long sleeps: one of at least `after` milliseconds asks `wakeAt` for a wake-up and halts
 * the walk (`Pending`), so that a waiting run holds no fiber; a new walk replays the run once it is due.
 */
export interface Park {
  readonly after: number
  readonly wakeAt: (path: string, until: number) => Effect.Effect<void>
}

/** Everything the executor needs to know about the run it executes in. */
export interface RunEnv {
  readonly runId: string
  readonly workflowId: string
  readonly store: RunStore.RunStore["Type"]
  readonly bus: EventBus.EventBus["Type"]
  /** The services the workflow's user code requires, captured from whoever started or registered it. */
  readonly services: Context.Context<never>
  readonly runContext: RunContext["Type"]
  /** The services plus `RunContext`: everything user code is given, built once per run. */
  readonly userContext: Context.Context<RunContext>
  /** What the store already knows of this run's graph, by path. */
  readonly memo: Memo
  readonly mode: Mode
  /** The exact cause of a failure recorded at `path` by this process, when it still has it (else rebuilt). */
  readonly failureCause: (path: string, record: RunStore.StepRecord) => Cause.Cause<unknown>
  /** Told of every failure this process records, with its exact cause. */
  readonly onFailure?: ((path: string, cause: Cause.Cause<unknown>) => void) | undefined
  /**
   * Records an event in the run's log (with a step record, atomically) and publishes it on the run channel, after
   * every event written before it.
   */
  readonly emit: (event: WorkflowEvent, step?: RunStore.StepRecord) => Effect.Effect<void>
  /**
   * As `emit`, with the step record written under `claim` (the record's path is the claim's): answers `false`, having
   * written nothing and marked the claim fenced off, when the store refuses it.
   */
  readonly emitUnder: (claim: Claim, step: RunStore.StepRecord, event?: WorkflowEvent) => Effect.Effect<boolean>
  /**
   * Claims a step: stores `step` (and records and publishes `event`) only if the record at its path is still
   * `expected`. Answers whether it did.
   */
  readonly claim: (
    step: RunStore.StepRecord,
    expected: RunStore.StepRecord | undefined,
    event?: WorkflowEvent
  ) => Effect.Effect<boolean>
  /**
   * A writer's event: buffered, then recorded and published in order with the others (group commit); with `claim`,
   * written under it (a write of a fenced-off execution dies).
   */
  readonly write: (event: WorkflowEvent, claim?: Claim) => Effect.Effect<void>
  /** Makes every event and chunk written in the run so far durable. */
  readonly flushWrites: Effect.Effect<void>
}

/**
 * A workflow being walked: nested workflows get their own. It carries the two functions every user context of it
 * hands out, built once per scope rather than once per context.
 */
export interface WorkflowScope {
  readonly initData: unknown
  readonly results: Map<string, unknown>
  readonly getInitData: <T>() => T
  readonly getStepResult: Step.GetStepResult
}

/** The scope of a workflow walked from `initData`. */
export const makeScope = (initData: unknown): WorkflowScope => {
  const results = new Map<string, unknown>()
  return {
    initData,
    results,
    getInitData: <T>() => initData as T,
    getStepResult: ((step: string | { readonly id: string }) =>
      results.get(typeof step === "string" ? step : step.id)) as Step.GetStepResult
  }
}

/** What `execute` runs: a step, or a map node seen as a step without schemas. */
export interface StepSpec {
  readonly id: string
  readonly inputSchema: Schema.Schema.AnyNoContext | undefined
  readonly outputSchema: Schema.Schema.AnyNoContext | undefined
  readonly suspendSchema: Schema.Schema.AnyNoContext | undefined
  readonly retry: Schedule.Schedule<unknown, unknown> | undefined
  readonly timeout: Duration.DurationInput | undefined
  readonly run: (ctx: Step.StepContext<never, never, unknown>) => Effect.Effect<unknown, unknown, unknown>
}

/** Sees a step definition as a spec (built once per step: walks ask for it on every visit). */
export const stepSpec = (step: Step.Any): StepSpec => {
  let spec = specs.get(step)
  if (spec === undefined) {
    spec = {
      id: step.id,
      inputSchema: step.inputSchema,
      outputSchema: step.outputSchema,
      suspendSchema: step.suspendSchema,
      retry: step.retry,
      timeout: step.timeout,
      run: step.execute
    }
    specs.set(step, spec)
  }
  return spec
}
const specs = new WeakMap<Step.Any, StepSpec>()

// ---------------------------------------------------------------------------------------------------------------
// the run environment

/** Builds the environment of one run: its emitter and the writables behind `Workflow.getWritable`. */
export const makeRunEnv = (options: {
  readonly runId: string
  readonly workflowId: string
  readonly store: RunStore.RunStore["Type"]
  readonly bus: EventBus.EventBus["Type"]
  readonly services: Context.Context<never>
  readonly memo: Memo
  readonly mode: Mode
  readonly failureCause?: (path: string, record: RunStore.StepRecord) => Cause.Cause<unknown>
  readonly onFailure?: (path: string, cause: Cause.Cause<unknown>) => void
}): RunEnv => {
  const { bus, runId, store } = options
  const log = makeEventLog(store, bus, runId)

  const writables = new Map<string, BufferedWritable>()
  /**
   * A run stream's writable. Asked for in a step's code (`Workflow.getWritable` calls this in the step's fiber), it
   * writes under the step's claim, whichever fiber later writes through it (a Web stream's, say).
   */
  const writable = (namespace: string): RunWritable<unknown> => {
    let existing = writables.get(namespace)
    if (existing === undefined) {
      existing = makeBufferedWritable(store, bus, runId, namespace)
      writables.set(namespace, existing)
    }
    const fiber = Fiber.getCurrentFiber()
    const claim = fiber._tag === "Some" ? fiber.value.getFiberRef(claimCell).claim : undefined
    return claim === undefined ? existing.writable : existing.under(claim)
  }
  /**
   * Makes every event and chunk written so far in this run durable (user code returning waits for this). Most user
   * code wrote nothing still buffered: then this is one check.
   */
  const flushWrites = Effect.suspend(() => {
    if (writables.size === 0) return log.settled() ? Effect.void : log.flush
    return Effect.zipRight(log.flush, Effect.forEach(writables.values(), (w) => w.flush, { discard: true }))
  })

  const runContext = RunContext.of({ runId, workflowId: options.workflowId, writable })
  // The services were taken from whoever started or registered the workflow, with the span that caller was in: the
  // span of user code is the step's, which providing them around it must not replace.
  const services = Context.omit(Tracer.ParentSpan)(options.services) as Context.Context<never>
  return {
    ...options,
    failureCause: options.failureCause ?? rebuildCause,
    emit: log.emit,
    emitUnder: log.emitUnder,
    claim: log.claim,
    write: log.write,
    flushWrites,
    runContext,
    userContext: Context.add(services, RunContext, runContext)
  }
}

/**
 * The environment of one walk over a run's shared environment (its event log, writables and user context): only the
 * memo and the mode are the walk's own.
 */
export const forWalk = (base: RunEnv, memo: Memo, mode: Mode): RunEnv => {
  if (base.memo === memo && base.mode === mode) return base
  const env = Object.create(base) as { -readonly [K in keyof RunEnv]: RunEnv[K] }
  env.memo = memo
  env.mode = mode
  return env
}

/** A failure read back from the store, as a defect carrying the recorded name and message. */
export const rebuildCause = (_path: string, record: RunStore.StepRecord): Cause.Cause<unknown> =>
  Cause.die(Object.assign(new Error(record.error?.message ?? "unknown failure"), { name: record.error?.name ?? "Error" }))

/** How many items a producer may get ahead of the store before its `offer` waits for them. */
const highWater = 1000

/**
 * Group commit, for what user code writes (run streams and writer events). A producer that is busy writing (its last
 * offer returned in this turn of the event loop) has its items buffered, and a background flusher commits whatever has
 * accumulated as one batch, again while more arrives: a producer faster than the store's round trip gets batches. An
 * idle producer's item is committed at once, in its own fiber, which spares it the hop to the flusher: the lowest
 * latency for writers that write now and then. The buffer is bounded: at `highWater` the producer waits for the batch.
 *
 * An item written by a step's code carries the step's claim, and a batch is committed under the claims of its items,
 * in the same statement (`commit` gets them). When the store refuses a batch because some of those claims no longer
 * hold, their executions are fenced off (`fenceOff`), their items dropped, and the rest committed at once: one
 * execution's lost claim never costs another's writes. A fenced-off execution's further writes die (`refused`).
 *
 * A failed commit stops the flushing; `surface` fails with it (and, when `clearOnSurface`, forgets it, so that a
 * retrying producer may try the store again).
 */
export interface GroupCommit<A, E> {
  readonly offer: (item: A, claim: Claim | undefined) => Effect.Effect<void, E>
  /** Commits everything buffered (waiting for a batch in flight first), then fails with a failure met meanwhile. */
  readonly flush: Effect.Effect<void, E>
  /** Commits everything buffered, ignoring failures (they are the producer's to surface). */
  readonly drain: Effect.Effect<void>
  /** Fails with a failure of a commit, if one happened. */
  readonly surface: Effect.Effect<void, E>
  /** Nothing buffered and nothing in flight. */
  readonly idle: () => boolean
  /** Idle, and no failure waiting to be surfaced: `flush` would do nothing. */
  readonly settled: () => boolean
}

export const makeGroupCommit = <A, E>(options: {
  readonly commit: (batch: Array<A>, fences: ReadonlyArray<Claim> | undefined) => Effect.Effect<void, unknown>
  readonly onFailure: (cause: Cause.Cause<unknown>) => Cause.Cause<E>
  readonly clearOnSurface: boolean
}): GroupCommit<A, E> => {
  const { clearOnSurface, commit, onFailure } = options
  const buffer: Array<A> = []
  // The claim each buffered item was written under (`undefined`: none), and whether any item has one.
  const owners: Array<Claim | undefined> = []
  let claimed = false
  const lock = Mutex.make()
  let scheduled = false
  // A batch taken from the buffer and not yet committed.
  let inFlight = false
  let failure: Cause.Cause<E> | undefined

  /** Commits a batch under its items' claims; the items of claims the store refuses are dropped, and the rest retried. */
  const commitUnder = (batch: Array<A>, claims: Array<Claim | undefined> | undefined): Effect.Effect<void, unknown> => {
    if (claims === undefined) return commit(batch, undefined)
    let items = batch
    let itemClaims = claims
    const attempt: Effect.Effect<void, unknown> = Effect.suspend(() => {
      let fences: Array<Claim> | undefined
      let dropped = false
      for (const claim of itemClaims) {
        if (claim === undefined) continue
        if (claim.fenced) dropped = true
        else if (fences === undefined) fences = [claim]
        else if (!fences.includes(claim)) fences.push(claim)
      }
      if (dropped) {
        const kept = items.filter((_, i) => itemClaims[i]?.fenced !== true)
        itemClaims = itemClaims.filter((claim) => claim?.fenced !== true)
        items = kept
      }
      if (items.length === 0) return Effect.void
      return Effect.catchIf(
        commit(items, fences),
        (error): error is StepFencedError => error instanceof StepFencedError,
        (error) => {
          // A claim fenced off meanwhile counts too: another batch (the events', another stream's) may have been
          // refused for it while this one was on its way. Failing here instead handed the refusal to every writer of
          // the batch, and an execution that still held its own claim failed its step with another's (a run failed
          // "the claim on path 1[2] ... no longer holds"; seen in the kill soak under heavy load).
          let refusedOne = false
          for (const fence of error.fences) {
            for (const claim of fences ?? []) {
              if (claim.stepCallId === fence.stepCallId && claim.path === fence.path) {
                if (!claim.fenced) fenceOff(claim)
                refusedOne = true
              }
            }
          }
          // A store that refuses a fence the batch was not written under would have this retry for ever.
          return refusedOne ? attempt : Effect.fail(error)
        }
      )
    })
    return attempt
  }

  const drain: Effect.Effect<void> = lock.withLock(Effect.gen(function*() {
    while (buffer.length > 0 && failure === undefined) {
      const batch = buffer.splice(0, buffer.length)
      const claims = claimed ? owners.splice(0, owners.length) : undefined
      if (claims === undefined) owners.length = 0
      claimed = false
      inFlight = true
      const exit = yield* Effect.exit(commitUnder(batch, claims))
      inFlight = false
      if (Exit.isFailure(exit)) failure = onFailure(exit.cause)
    }
  }))

  const kick: Effect.Effect<void> = Effect.suspend(() => {
    if (scheduled) return Effect.void
    scheduled = true
    return Effect.asVoid(Effect.forkDaemon(Effect.ensuring(
      drain,
      Effect.suspend(() => {
        scheduled = false
        return buffer.length > 0 && failure === undefined ? kick : Effect.void
      })
    )))
  })

  const surface: Effect.Effect<void, E> = Effect.suspend(() => {
    if (failure === undefined) return Effect.void
    const cause = failure
    if (clearOnSurface) failure = undefined
    return Effect.failCause(cause)
  })

  const idle = () => buffer.length === 0 && !inFlight

  // Whether an offer returned in this turn of the event loop: the producer is busy writing.
  let busy = false
  const settle = () => {
    busy = false
  }
  const markBusy = () => {
    if (busy) return
    busy = true
    queueMicrotask(settle)
  }
  const commitNow = Effect.zipRight(Effect.zipRight(drain, Effect.sync(markBusy)), surface)

  const offer = (item: A, claim: Claim | undefined): Effect.Effect<void, E> =>
    Effect.suspend(() => {
      if (claim !== undefined && claim.fenced) return refused(claim)
      if (failure !== undefined) return surface
      const wasIdle = !busy && !scheduled && idle()
      buffer.push(item)
      owners.push(claim)
      if (claim !== undefined) claimed = true
      if (wasIdle || buffer.length >= highWater) {
        // Committed in the producer's fiber: a refusal of its own claim stops it here.
        return claim === undefined
          ? commitNow
          : Effect.zipRight(commitNow, Effect.suspend(() => claim.fenced ? refused(claim) : Effect.void))
      }
      markBusy()
      return scheduled ? Effect.void : kick
    })

  return {
    offer,
    flush: Effect.suspend(() => idle() ? surface : Effect.zipRight(drain, surface)),
    drain,
    surface,
    idle,
    settled: () => failure === undefined && idle()
  }
}

/** A store that stays down (after the store's own retries) is a defect of the step that wrote. */
const asDefect = (cause: Cause.Cause<unknown>): Cause.Cause<never> => Cause.die(Cause.squash(cause))

interface BufferedWritable {
  readonly writable: RunWritable<unknown>
  /** The same stream, written (and closed) under a step's claim. */
  readonly under: (claim: Claim) => RunWritable<unknown>
  /** Resolves once everything written so far is durable; dies if a background append failed. */
  readonly flush: Effect.Effect<void>
}

/**
 * A run stream in this process, with group commit. A write after `close` fails at once, and user code returning waits
 * for the flush, so a step is recorded done only once its chunks are stored. Once an append fails, every write fails.
 * What a step's code writes is written under its claim: once that claim is lost, its writes and its close are refused
 * (and die), and never reach the stream.
 */
const makeBufferedWritable = (
  store: RunStore.RunStore["Type"],
  bus: EventBus.EventBus["Type"],
  runId: string,
  namespace: string
): BufferedWritable => {
  const channel = EventBus.streamChannel(runId)
  let closed = false
  const group = makeGroupCommit<unknown, StreamClosedError>({
    commit: (batch, fences) =>
      Effect.flatMap(
        store.appendChunks(runId, namespace, batch, fences),
        (first) => publishQuietly(bus, channel, { type: "chunk", runId, data: { namespace, index: first + batch.length - 1 } })
      ),
    // Closed meanwhile (by another process): the writer learns it as StreamClosedError.
    onFailure: (cause) => {
      const error = Cause.failureOption(cause)
      return error._tag === "Some" && error.value instanceof StreamClosedError ? Cause.fail(error.value) : asDefect(cause)
    },
    clearOnSurface: false
  })

  const flush = Effect.orDie(group.flush)
  const announceClose = publishQuietly(bus, channel, { type: "close", runId, data: { namespace } })

  const view = (claim: Claim | undefined): RunWritable<unknown> => {
    const write = (chunk: unknown): Effect.Effect<void, StreamClosedError> =>
      Effect.suspend(() => closed ? Effect.fail(new StreamClosedError({ runId, namespace })) : group.offer(chunk, claim))
    const close = Effect.suspend(() => {
      if (closed) return Effect.void
      if (claim === undefined) {
        closed = true
        return flush.pipe(Effect.zipRight(Effect.orDie(store.closeStream(runId, namespace))), Effect.zipRight(announceClose))
      }
      if (claim.fenced) return refused(claim)
      closed = true
      const refuse = Effect.suspend(() => {
        // Not closed after all: the stream is the execution's that holds the step now.
        closed = false
        fenceOff(claim)
        return refused(claim)
      })
      return flush.pipe(
        Effect.zipRight(Effect.suspend(() => claim.fenced ? refuse : store.closeStream(runId, namespace, claim))),
        Effect.catchAll((error) => error instanceof StepFencedError ? refuse : Effect.die(error)),
        Effect.zipRight(announceClose)
      )
    })
    return {
      namespace,
      write,
      close,
      sink: Sink.forEach((chunk: unknown) => Effect.orDie(write(chunk))),
      toWritableStream: () =>
        new WritableStream<unknown>({
          write: (chunk) => Effect.runPromise(write(chunk)),
          close: () => Effect.runPromise(close)
        })
    }
  }

  const views = new WeakMap<Claim, RunWritable<unknown>>()
  return {
    flush,
    writable: view(undefined),
    under: (claim) => {
      let existing = views.get(claim)
      if (existing === undefined) {
        existing = view(claim)
        views.set(claim, existing)
      }
      return existing
    }
  }
}

/**
 * The run's event log as this process writes it. Writers' events get group commit, like run streams: one store call
 * and one publish per batch. Lifecycle events (`emit`) are written once every buffered event is, so the log keeps the
 * order in which things happened, and a step is recorded done only after everything it wrote. A store that stays down
 * fails the next `write` (or the step's end) with a defect, once; the events of that batch are lost, and the step
 * fails saying why.
 */
const makeEventLog = (store: RunStore.RunStore["Type"], bus: EventBus.EventBus["Type"], runId: string) => {
  const channel = EventBus.runChannel(runId)
  const direct = makeEmit(store, bus, runId)
  const group = makeGroupCommit<WorkflowEvent, never>({
    commit: (batch, fences) =>
      Effect.flatMap(store.appendEvents(runId, batch, fences), () => {
        const envelopes: Array<EventBus.BusEvent> = new Array(batch.length)
        for (let i = 0; i < batch.length; i++) envelopes[i] = { type: "watch", runId, data: batch[i] }
        return publishAllQuietly(bus, channel, envelopes)
      }),
    onFailure: asDefect,
    clearOnSurface: true
  })

  const publish = (event: WorkflowEvent) => publishQuietly(bus, channel, { type: "watch", runId, data: event })
  // A failure of the buffered events is the writing step's (its writer or its end surfaces it), not the log's.
  const afterBuffered = <A>(effect: () => Effect.Effect<A>): Effect.Effect<A> =>
    Effect.suspend(() => group.idle() ? effect() : Effect.zipRight(group.drain, Effect.suspend(effect)))
  const emit = (event: WorkflowEvent, step?: RunStore.StepRecord): Effect.Effect<void> =>
    afterBuffered(() => direct(event, step))

  const emitUnder = (claim: Claim, step: RunStore.StepRecord, event?: WorkflowEvent): Effect.Effect<boolean> =>
    afterBuffered(() => {
      if (claim.fenced) return Effect.succeed(false)
      return Effect.matchEffect(store.putStep(runId, step, event, claim), {
        onFailure: (error) => {
          if (!(error instanceof StepFencedError)) return Effect.die(error)
          fenceOff(claim)
          return Effect.succeed(false)
        },
        onSuccess: () => event === undefined ? Effect.succeed(true) : Effect.as(publish(event), true)
      })
    })

  const claim = (
    step: RunStore.StepRecord,
    expected: RunStore.StepRecord | undefined,
    event?: WorkflowEvent
  ): Effect.Effect<boolean> =>
    afterBuffered(() =>
      Effect.matchEffect(store.claimStep(runId, step, expected, event), {
        onFailure: Effect.die,
        onSuccess: (version) =>
          version === undefined ? Effect.succeed(false) : event === undefined ? Effect.succeed(true) : Effect.as(publish(event), true)
      })
    )

  return { write: group.offer, emit, emitUnder, claim, flush: group.flush, settled: group.settled }
}

/**
 * Records an event in the run's log (with `step`, together with that step record, atomically), then publishes it on
 * the run channel as a watch envelope.
 */
export const makeEmit = (
  store: RunStore.RunStore["Type"],
  bus: EventBus.EventBus["Type"],
  runId: string
): (event: WorkflowEvent, step?: RunStore.StepRecord) => Effect.Effect<void> => {
  const channel = EventBus.runChannel(runId)
  return (event, step) =>
    Effect.zipRight(
      step === undefined ? store.appendEvent(runId, event) : store.putStep(runId, step, event),
      publishQuietly(bus, channel, { type: "watch", runId, data: event })
    ).pipe(Effect.orDie)
}

/** `publishQuietly` for several events on one channel, in one publish. */
export const publishAllQuietly = (
  bus: EventBus.EventBus["Type"],
  channel: string,
  events: ReadonlyArray<EventBus.BusEvent>
): Effect.Effect<void> =>
  Effect.catchAllCause(
    EventBus.publishAll(bus, channel, events),
    (cause) => Effect.logWarning(`Could not publish on "${channel}"`, cause)
  )

/** The bus is for delivery only: a failed publish is logged, never fatal (readers fall back on the store). */
export const publishQuietly = (
  bus: EventBus.EventBus["Type"],
  channel: string,
  event: EventBus.BusEvent
): Effect.Effect<void> =>
  Effect.catchAllCause(
    bus.publish(channel, event),
    (cause) => Effect.logWarning(`Could not publish on "${channel}"`, cause)
  )

// ---------------------------------------------------------------------------------------------------------------
// the context of user code

/**
 * THE place where user-facing contexts are built, for all four entry points. The writer is built when the code first
 * reads it (a getter of the context, an own property, so that spreading the context copies it): most steps never
 * write, and a writer is a dozen objects.
 */
export const makeContext = (
  env: RunEnv,
  scope: WorkflowScope,
  name: string,
  callId: string,
  inputData: unknown,
  attempt?: () => number,
  claim?: Claim
): Step.BaseContext<never> => {
  let writer: ToolStream.ToolStream | undefined
  return {
    inputData: inputData as never,
    runId: env.runId,
    workflowId: env.workflowId,
    getInitData: scope.getInitData,
    getStepResult: scope.getStepResult,
    get writer() {
      return writer ??= ToolStream.make(
        attempt === undefined ? { callId, name, runId: env.runId } : { callId, name, runId: env.runId, attempt },
        claim === undefined ? env.write : (event) => env.write(event, claim)
      )
    }
  }
}

/**
 * A step's context: the context `makeContext` built (its writer still built on first read, and then the one of every
 * attempt), plus what only steps get (one object literal, one shape).
 */
const stepContext = (
  base: Step.BaseContext<never>,
  resumeData: unknown,
  suspend: (payload: unknown) => Effect.Effect<never>,
  attempt: number
): Step.StepContext<never, never, unknown> => ({
  inputData: base.inputData,
  runId: base.runId,
  workflowId: base.workflowId,
  getInitData: base.getInitData,
  getStepResult: base.getStepResult,
  get writer() {
    return base.writer
  },
  resumeData: resumeData as never,
  suspend,
  attempt
})

/**
 * Runs user code, capturing every failure, defect and throw, and makes what it wrote durable. It runs with the run's
 * services and `RunContext`: an inline walk has them as its context (the default engine sets `env.userContext` as the
 * context of the fiber it forks for the walk); the evented engine's walks, which mostly run no user code at all, get them here,
 * around the user code alone (providing a context costs a few microseconds, `npm run bench:micro`).
 */
const runUser = <A>(
  env: RunEnv,
  effect: Effect.Effect<A, unknown, unknown> | (() => Effect.Effect<A, unknown, unknown>),
  claim?: Claim
): Effect.Effect<Exit.Exit<A, unknown>> => {
  const user = (typeof effect === "function" ? Effect.suspend(effect) : effect) as Effect.Effect<A, unknown>
  const provided = env.mode._tag === "Inline" || (env.mode._tag === "Execute" && env.mode.inUserContext === true)
    ? user
    : Effect.provide(user, env.userContext)
  // What the code wrote is durable before its outcome is known. Inline, as a continuation of the code, not a
  // finalizer (which masks interruption: four fiber operations more on every step): a walk interrupted while user code
  // runs (a cancel, a shutdown) is flushed by the default engine once it has stopped, before the run is recorded.
  const guarded = Effect.exit(
    env.mode._tag === "Inline"
      ? Effect.matchCauseEffect(provided, {
        onSuccess: (a) => Effect.as(env.flushWrites, a),
        onFailure: (cause) =>
          Effect.matchCauseEffect(env.flushWrites, {
            onSuccess: () => Effect.failCause(cause),
            onFailure: (flushed) => Effect.failCause(Cause.sequential(cause, flushed))
          })
      })
      : Effect.ensuring(provided, env.flushWrites)
  )
  // The claim of the step (none for other user code), for the run streams the code asks for (`claimCell`). Written,
  // not scoped with `Effect.locally`, which costs a few fiber operations more on every step: only user code reads it,
  // and every piece of user code runs through here, which writes it first.
  return Effect.withFiberRuntime((fiber) => {
    const cell = fiber.getFiberRef(claimCell)
    if (cell === noCell) return Effect.zipRight(FiberRef.set(claimCell, { claim }), guarded)
    cell.claim = claim
    return guarded
  })
}

// ---------------------------------------------------------------------------------------------------------------
// entry point 1: execute

/**
 * Executes a step at a path: replays its stored result when it already succeeded, stays suspended when it is
 * suspended and not being resumed, and otherwise runs it (with retries and timeout), validates its output, records
 * the result and emits `workflow-step-start` / `workflow-step-result`.
 */
export const execute = (
  env: RunEnv,
  scope: WorkflowScope,
  spec: StepSpec,
  input: unknown,
  path: string
): Effect.Effect<unknown, Halt> =>
  Effect.suspend(() => {
    const known = env.memo.get(path)
    if (known !== undefined) {
      switch (known.status) {
        case "success":
          return replay(env, scope, spec, known, path)
        case "failed":
          return Effect.fail(new StepFailure({ stepId: spec.id, path, cause: env.failureCause(path, known) }))
        case "suspended":
          if (known.resumeData === undefined) {
            return Effect.fail(new Suspension({ suspended: [{ step: spec.id, path, payload: known.suspendPayload }] }))
          }
      }
    }
    const mode = env.mode
    switch (mode._tag) {
      case "Inline":
        return run(env, scope, spec, input, path, known)
      case "Execute":
        return mode.path === path ? run(env, scope, spec, input, path, known) : pending
      case "Dispatch": {
        if (known?.status === "running" && !redispatches(mode, known)) return pending
        // Recorded only if the record is still the one this walk read, and sent only then: a step that another walk
        // dispatched meanwhile, or whose executor claimed it or finished it, is not sent a second time. Its call id is
        // the token its executor claims it by.
        const record: RunStore.StepRecord = {
          path,
          stepId: spec.id,
          status: "running",
          stepCallId: randomId(),
          dispatchedAt: wallNow(),
          ...(known?.resumeData === undefined ? {} : { resumeData: known.resumeData }),
          ...(known?.attempt === undefined ? {} : { attempt: known.attempt })
        }
        return env.claim(record, known).pipe(
          Effect.flatMap((dispatched) => {
            if (!dispatched) return Effect.void
            env.memo.set(path, record)
            return mode.dispatch(path)
          }),
          Effect.zipRight(pending)
        )
      }
    }
  })

/** The halt of a node that a later walk will take up (it is immutable, so one instance serves every walk). */
export const notNow = new Pending({ waitingOnly: false })
const pending = Effect.fail(notNow)
const stillRunning: Either.Either<never, Halt> = Either.left(notNow)

/**
 * What `execute` answers for the step at `path` when its record alone decides it, without going through Effect: the
 * output of a success already decoded once (replayed: `getStepResult` sees it too), or, in a dispatching walk, a step
 * still running (pending). `undefined` when `execute` must run. Walks that visit many finished or running branches
 * (a large foreach in the evented engine, walked after every step's end) take this path for nearly all of them.
 */
export const settledNow = (
  env: RunEnv,
  scope: WorkflowScope,
  stepId: string,
  outputSchema: Schema.Schema.AnyNoContext | undefined,
  path: string
): Either.Either<unknown, Halt> | undefined => {
  const known = env.memo.get(path)
  if (known === undefined) return undefined
  if (known.status === "success") {
    const replayed = replayedNow(env, scope, stepId, outputSchema, path)
    return replayed === undefined ? undefined : Either.right(replayed.value)
  }
  const mode = env.mode
  return known.status === "running" && mode._tag === "Dispatch" && !redispatches(mode, known) ? stillRunning : undefined
}

/** Whether a dispatching walk sends a step recorded `running` again. */
const redispatches = (mode: Extract<Mode, { readonly _tag: "Dispatch" }>, record: RunStore.StepRecord): boolean =>
  mode.redispatch !== undefined && mode.redispatch(record)

/**
 * The output of the node at `path` when it succeeded and its output needs no decoding (decoded once already, or
 * recorded without a schema), without going through Effect; it becomes `getStepResult`'s answer for `stepId`, if one
 * is given. `undefined` when the record does not settle it so cheaply.
 */
export const replayedNow = (
  env: RunEnv,
  scope: WorkflowScope,
  stepId: string | undefined,
  outputSchema: Schema.Schema.AnyNoContext | undefined,
  path: string
): { readonly value: unknown } | undefined => {
  const known = env.memo.get(path)
  if (known?.status !== "success") return undefined
  const replayed = outputSchema === undefined
    ? { value: known.output }
    : decodedOutputs.has(known)
    ? { value: decodedOutputs.get(known) }
    : undefined
  if (replayed !== undefined && stepId !== undefined) scope.results.set(stepId, replayed.value)
  return replayed
}

// Records are immutable: a record object the store hands out again (the memory store does) need not be decoded
// again. Walks that replay a run's history on every transition (the evented engine) depend on this.
const decodedOutputs = new WeakMap<RunStore.StepRecord, unknown>()

/**
 * Forgets the decoded outputs of records no walk is about to replay (a run that settled or only waits). A memory store
 * keeps its records: otherwise each waiting run would keep an entry here and a decoded copy of each output.
 */
export const forgetDecoded = (records: Iterable<RunStore.StepRecord>): void => {
  for (const record of records) decodedOutputs.delete(record)
}

const replay = (env: RunEnv, scope: WorkflowScope, spec: StepSpec, known: RunStore.StepRecord, path: string) => {
  const now = replayedNow(env, scope, spec.id, spec.outputSchema, path)
  if (now !== undefined) return Effect.succeed(now.value)
  return Effect.map(decodeStored(spec.id, path, spec.outputSchema, known.output), (output) => {
    decodedOutputs.set(known, output)
    scope.results.set(spec.id, output)
    return output
  })
}

/** Decodes a value the store holds; a value that no longer decodes fails the step with a message naming the row. */
export const decodeStored = (
  stepId: string,
  path: string,
  schema: Schema.Schema.AnyNoContext | undefined,
  value: unknown
): Effect.Effect<unknown, StepFailure> =>
  schema === undefined
    ? Effect.succeed(value)
    : Effect.mapError(
      Codec.decode(schema, value),
      (error) =>
        new StepFailure({
          stepId,
          path,
          cause: Cause.die(
            new Error(`The stored result of step "${stepId}" (path ${path}) no longer decodes: ${error.message}`)
          )
        })
    )

/**
 * A step's record that an execution may claim: none yet, a record its claimer read `running` or resumed. An executing
 * walk (evented engine) claims only a dispatched record, which names no instance yet, or a claim that a stopping
 * instance gave up with the command: a step another instance claimed is that instance's, until the run's owner finds
 * it silent and dispatches the step again (a new record to claim).
 */
const claimable = (mode: Mode, known: RunStore.StepRecord | undefined): boolean =>
  known === undefined || mode._tag !== "Execute" || known.status !== "running" || known.worker === undefined ||
  (mode.released !== undefined && known.stepCallId === mode.released)

/** This execution lost the step to another one, or never got it: it does nothing more, and says so quietly. */
const stepFenced = (env: RunEnv, stepId: string, path: string, attempt: number): Effect.Effect<never, StepFenced> => {
  const fenced = new StepFenced({ runId: env.runId, stepId, path, attempt })
  return Effect.zipRight(Effect.logDebug(fenced.message), Effect.fail(fenced))
}

const run = (
  env: RunEnv,
  scope: WorkflowScope,
  spec: StepSpec,
  input: unknown,
  path: string,
  known: RunStore.StepRecord | undefined
): Effect.Effect<unknown, Halt> =>
  Effect.gen(function*() {
    const mode = env.mode
    const previousAttempts = known?.attempt ?? 0
    // A copy of the attempt another execution holds.
    if (!claimable(mode, known)) return yield* stepFenced(env, spec.id, path, previousAttempts)
    const stepCallId = randomId()
    // Without Effect when the synchronous parser accepts the value; through Effect's parser otherwise, for its error.
    const encodedInput = spec.inputSchema === undefined
      ? Exit.succeed(input)
      : Codec.encodeNow(spec.inputSchema, input) ?? (yield* Effect.exit(Codec.encode(spec.inputSchema, input)))
    // A resumed step starts counting attempts again; a step re-run after a crash counts on.
    const resumeData = known?.resumeData
    let attempt = resumeData === undefined ? known?.attempt ?? 0 : 0
    const firstAttempt = attempt + 1
    // Each attempt is recorded `running` before it starts, so that after a crash the next execution counts on from
    // it. An executing walk names its instance and the attempt's start (wall clock), so that the run's owner can tell
    // a step whose executor went silent.
    const running = (n: number): RunStore.StepRecord =>
      resumeData === undefined && mode._tag !== "Execute"
        // The common shape as one literal (a spread builds a slower object, and two throwaway ones on the way).
        ? { path, stepId: spec.id, status: "running", stepCallId, attempt: n }
        : {
          path,
          stepId: spec.id,
          status: "running",
          stepCallId,
          attempt: n,
          ...(resumeData === undefined ? {} : { resumeData }),
          ...(mode._tag === "Execute" ? { worker: mode.worker, startedAt: wallNow() } : {})
        }
    // The first attempt's record is the claim (with the start event, in one write): it lands only if the record is
    // still the one read, so of two executions of one step (a command delivered twice, say) exactly one goes on.
    // Everything the execution writes from here on is written under the claim, and refused once another execution
    // has claimed the step since.
    const claim: Claim = {
      runId: env.runId,
      path,
      stepCallId,
      stepId: spec.id,
      attempt: firstAttempt,
      fenced: false,
      stop: mode._tag === "Dispatch" ? undefined : mode.fenced
    }
    const claimed = yield* withNow((startedAt) =>
      env.claim(running(firstAttempt), known, {
        type: "workflow-step-start",
        runId: env.runId,
        from: "WORKFLOW",
        payload: {
          id: spec.id,
          stepCallId,
          status: "running",
          payload: Exit.isSuccess(encodedInput) ? encodedInput.value : input,
          startedAt
        }
      }))
    if (!claimed) {
      // Inline, the claim is lost only to another process that took the run over: the whole walk stops.
      if (mode._tag === "Inline") mode.fenced?.()
      return yield* stepFenced(env, spec.id, path, firstAttempt)
    }
    if (mode._tag === "Execute") mode.claimed?.(running(firstAttempt))
    if (Exit.isFailure(encodedInput)) {
      return yield* fail(env, spec.id, path, stepCallId, previousAttempts, Cause.die(new Error(
        `Step "${spec.id}" received input that does not match its inputSchema: ${parseMessage(encodedInput.cause)}`
      )), claim)
    }

    const base = makeContext(env, scope, spec.id, stepCallId, input, () => attempt, claim)
    let suspended: { readonly payload: unknown } | undefined
    // The span of the attempt running now.
    let attemptSpan: Tracer.Span | undefined
    const suspend = (payload: unknown): Effect.Effect<never> =>
      Effect.suspend(() => {
        if (spec.suspendSchema !== undefined) {
          const checked = Schema.validateEither(spec.suspendSchema)(payload)
          if (checked._tag === "Left") {
            return Effect.dieMessage(
              `Step "${spec.id}" called suspend with a payload that does not match its suspendSchema: ` +
                checked.left.message
            )
          }
        }
        suspended = { payload }
        attemptSpan?.attribute(Tracing.attributes.suspended, true)
        return Effect.interrupt
      })
    // Each attempt is a span of its own, the parent of what the step's code traces.
    const traced = (effect: Effect.Effect<unknown, unknown, unknown>) =>
      Tracing.ifTracing(effect, () =>
        Tracing.useSpan(
          Tracing.stepSpanName(spec.id),
          {
            [Tracing.attributes.runId]: env.runId,
            [Tracing.attributes.workflowId]: env.workflowId,
            [Tracing.attributes.stepId]: spec.id,
            [Tracing.attributes.path]: path,
            [Tracing.attributes.attempt]: attempt
          },
          (span) => {
            attemptSpan = span
            return Effect.withParentSpan(effect, span)
          }
        ))
    const once = Effect.suspend(() => {
      attempt++
      const attemptEffect = spec.run(stepContext(base, resumeData, suspend, attempt))
      const timed = traced(spec.timeout === undefined ? attemptEffect : Effect.timeout(attemptEffect, spec.timeout))
      if (attempt === firstAttempt) return timed
      claim.attempt = attempt
      // A retry's record is written under the claim: a fenced-off execution stops here (a defect is not retried).
      const record = running(attempt)
      return Effect.flatMap(env.emitUnder(claim, record), (ok) => {
        if (!ok) return refused(claim)
        if (mode._tag === "Execute") mode.claimed?.(record)
        return timed
      })
    })
    // `once` is lazy already: no thunk for `runUser` to suspend.
    const exit = yield* runUser(env, spec.retry === undefined ? once : Effect.retry(once, spec.retry), claim)
    // Another execution claimed the step meanwhile: it reports the step, and this one nothing.
    if (claim.fenced) return yield* stepFenced(env, spec.id, path, attempt)

    if (suspended !== undefined && Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)) {
      const payload = suspended.payload
      const record: RunStore.StepRecord = {
        path,
        stepId: spec.id,
        status: "suspended",
        suspendPayload: payload,
        attempt,
        stepCallId
      }
      const recorded = yield* env.emitUnder(claim, record, yield* stepResult(env, spec.id, stepCallId, { status: "suspended" }))
      if (!recorded) return yield* stepFenced(env, spec.id, path, attempt)
      env.memo.set(path, record)
      yield* env.emit({
        type: "workflow-step-suspended",
        runId: env.runId,
        from: "WORKFLOW",
        payload: { id: spec.id, suspendPayload: payload }
      })
      return yield* new Suspension({ suspended: [{ step: spec.id, path, payload }] })
    }
    if (Exit.isFailure(exit)) return yield* fail(env, spec.id, path, stepCallId, attempt, exit.cause, claim)

    const encodedOutput = spec.outputSchema === undefined
      ? Exit.succeed(exit.value)
      : Codec.encodeNow(spec.outputSchema, exit.value) ?? (yield* Effect.exit(Codec.encode(spec.outputSchema, exit.value)))
    if (Exit.isFailure(encodedOutput)) {
      return yield* fail(env, spec.id, path, stepCallId, attempt, Cause.die(new Error(
        `Step "${spec.id}" returned output that does not match its outputSchema: ${parseMessage(encodedOutput.cause)}`
      )), claim)
    }
    const notJson = Codec.unstorable(encodedOutput.value)
    if (notJson !== undefined) {
      return yield* fail(env, spec.id, path, stepCallId, attempt, Cause.die(new Error(
        `Step "${spec.id}" returned output that cannot be stored: ${notJson.replace("the value", "its encoded output")}`
      )), claim)
    }
    return yield* succeed(env, scope, spec.id, path, stepCallId, attempt, exit.value, encodedOutput.value, claim)
  })

/**
 * How an outcome is recorded: under a step execution's claim (refused once another execution claimed the step: then
 * nothing is recorded and the walk halts with `StepFenced`), or, for a nested workflow, only if its record is still
 * the `running` one the walk read (two walks of a run may both come to its end; the one that records it emits its
 * result, and the other goes on from the same outcome).
 */
export type Under = Claim | { readonly expected: RunStore.StepRecord }

/**
 * Records an outcome (with its `workflow-step-result` event, ended now) as `under` says, then goes on with `then`; a
 * fenced-off execution (its write refused) halts with `StepFenced` instead. One chain, no generator: it is on every
 * step's path.
 */
const recordOutcome = <A, E>(
  env: RunEnv,
  under: Under,
  record: RunStore.StepRecord,
  outcome: Parameters<typeof stepResultAt>[3],
  then: () => Effect.Effect<A, E>
): Effect.Effect<A, E | StepFenced> =>
  withNow((endedAt) => {
    const event = stepResultAt(env, record.stepId, record.stepCallId!, outcome, endedAt)
    if ("expected" in under) {
      return Effect.flatMap(env.claim(record, under.expected, event), (recorded): Effect.Effect<A, E | StepFenced> => {
        if (recorded) env.memo.set(record.path, record)
        return then()
      })
    }
    return Effect.flatMap(env.emitUnder(under, record, event), (recorded): Effect.Effect<A, E | StepFenced> => {
      if (!recorded) return stepFenced(env, record.stepId, record.path, record.attempt ?? 0)
      env.memo.set(record.path, record)
      return then()
    })
  })

/** Records a step's (or nested workflow's) success: stored result, `getStepResult`, and the `workflow-step-result` event. */
export const succeed = (
  env: RunEnv,
  scope: WorkflowScope,
  stepId: string,
  path: string,
  stepCallId: string,
  attempt: number,
  output: unknown,
  encoded: unknown,
  under: Under
): Effect.Effect<unknown, StepFenced> => {
  const record: RunStore.StepRecord = { path, stepId, status: "success", output: encoded, attempt, stepCallId }
  return recordOutcome(env, under, record, { status: "success", output: encoded }, () => {
    scope.results.set(stepId, output)
    return Effect.succeed(output)
  })
}

/** Records a step's (or nested workflow's) failure, as `succeed`, and halts the walk with it. */
export const fail = (
  env: RunEnv,
  stepId: string,
  path: string,
  stepCallId: string,
  attempt: number,
  cause: Cause.Cause<unknown>,
  under: Under
): Effect.Effect<never, StepFailure | StepFenced> =>
  Effect.suspend(() => {
    const error = serializeCause(cause)
    const record: RunStore.StepRecord = { path, stepId, status: "failed", error, attempt, stepCallId }
    env.onFailure?.(path, cause)
    return recordOutcome(env, under, record, { status: "failed", error }, () => Effect.fail(new StepFailure({ stepId, path, cause })))
  })

/** The `workflow-step-result` event of a step (or nested workflow, or sleep), ended now. */
export const stepResult = (
  env: RunEnv,
  id: string,
  stepCallId: string,
  outcome: StepOutcome
): Effect.Effect<WorkflowEvent> => withNow((endedAt) => Effect.succeed(stepResultAt(env, id, stepCallId, outcome, endedAt)))

/** How a step (or nested workflow, or sleep) ended, as its `workflow-step-result` event says. */
type StepOutcome =
  | { readonly status: "success"; readonly output?: unknown }
  | { readonly status: "failed"; readonly error: SerializedError }
  | { readonly status: "suspended" }

/** The `workflow-step-result` event of a step (or nested workflow, or sleep) that ended at `endedAt`. */
const stepResultAt = (env: RunEnv, id: string, stepCallId: string, outcome: StepOutcome, endedAt: number): WorkflowEvent => ({
  type: "workflow-step-result",
  runId: env.runId,
  from: "WORKFLOW",
  // Each shape spelled out rather than spread from `outcome`: an object built by a spread keeps only 4 of its fields
  // in itself and the rest in a separate array (40 B more in every run's log).
  payload: outcome.status === "failed"
    ? { id, stepCallId, status: outcome.status, error: outcome.error, endedAt }
    : outcome.status === "success" && "output" in outcome
    ? { id, stepCallId, status: outcome.status, output: outcome.output, endedAt }
    : { id, stepCallId, status: outcome.status, endedAt }
})

/**
 * `f` of the clock's time now (epoch ms, the app's clock, so a test clock too): one fiber operation, where reading
 * `Clock.currentTimeMillis` and mapping it take four. It is read two or three times on every step's path.
 */
const withNow = <A, E>(f: (now: number) => Effect.Effect<A, E>): Effect.Effect<A, E> =>
  Effect.clockWith((clock) => f(clock.unsafeCurrentTimeMillis()))

/** Emits the `workflow-step-start` of something that is not user code (a nested workflow, a sleep). */
export const emitStepStart = (
  env: RunEnv,
  id: string,
  stepCallId: string,
  payload: unknown,
  record: RunStore.StepRecord
): Effect.Effect<void> =>
  withNow((startedAt) =>
    env.emit({
      type: "workflow-step-start",
      runId: env.runId,
      from: "WORKFLOW",
      payload: { id, stepCallId, status: "running", payload, startedAt }
    }, record))

// ---------------------------------------------------------------------------------------------------------------
// entry points 2-4: conditions and sleeps (and maps' context, through execute)

type GraphFn = Extract<Node, { readonly _tag: "Map" }>["fn"]

/**
 * Runs a function of the graph (not a step) once per path: its answer is recorded, so a resumed or recovered run
 * never evaluates it again (and its writer events are never emitted twice). With `spanName`, the evaluation is a span.
 */
const evaluate = <A>(
  env: RunEnv,
  scope: WorkflowScope,
  fn: GraphFn,
  input: unknown,
  nodeId: string,
  path: string,
  check: (value: unknown) => A | string,
  spanName?: string
): Effect.Effect<A, StepFailure | Pending> =>
  Effect.gen(function*() {
    const known = env.memo.get(path)
    if (known !== undefined && known.status === "success") return known.output as A
    // Executing one dispatched step evaluates nothing else: the dispatching walk does that, once.
    if (env.mode._tag === "Execute") return yield* pending
    const ctx = makeContext(env, scope, nodeId, randomId(), input)
    const exit = yield* runUser(env, () =>
      spanName === undefined ? fn(ctx) : Tracing.ifTracing(fn(ctx), () =>
        Tracing.useSpan(
          spanName,
          {
            [Tracing.attributes.runId]: env.runId,
            [Tracing.attributes.workflowId]: env.workflowId,
            [Tracing.attributes.stepId]: nodeId,
            [Tracing.attributes.path]: path
          },
          (span) => Effect.withParentSpan(fn(ctx), span)
        )))
    if (Exit.isFailure(exit)) return yield* new StepFailure({ stepId: nodeId, path, cause: exit.cause })
    const checked = check(exit.value)
    if (typeof checked === "string") {
      return yield* new StepFailure({ stepId: nodeId, path, cause: Cause.die(new TypeError(checked)) })
    }
    const record: RunStore.StepRecord = { path, stepId: nodeId, status: "success", output: checked }
    // Recorded once: a walk in another process that read the run before this answer was stored evaluates it again,
    // and its answer must not replace the one the run went on with (nor, for a sleep, announce a second wait).
    if (!(yield* env.claim(record, undefined))) {
      const stored = (yield* Effect.orDie(env.store.getSteps(env.runId))).steps.find((step) => step.path === path)
      if (stored?.status === "success") {
        env.memo.set(path, stored)
        return stored.output as A
      }
    }
    recordedNow.add(record)
    env.memo.set(path, record)
    return checked
  })

/**
 * The records of conditions' answers and sleeps' wake-up times that the walk holding them stored itself (it was the
 * first to evaluate them), as opposed to records another walk stored first. A sleep announces its wait only then.
 */
export const recordedNow = new WeakSet<RunStore.StepRecord>()

/** Entry point 2: a branch or loop condition. */
export const evaluateCondition = (
  env: RunEnv,
  scope: WorkflowScope,
  fn: GraphFn,
  input: unknown,
  nodeId: string,
  path: string
): Effect.Effect<boolean, StepFailure | Pending> =>
  evaluate(
    env,
    scope,
    fn,
    input,
    nodeId,
    path,
    (value) =>
      typeof value === "boolean"
        ? value
        : `The condition of "${nodeId}" must produce a boolean, but produced ${typeof value}.`,
    Tracing.conditionSpanName(nodeId)
  )

/**
 * Entry point 3: the wake-up time of a sleep (epoch ms), from its duration or duration function. Recorded, so a
 * recovered run sleeps only for what remains.
 */
export const resolveSleep = (
  env: RunEnv,
  scope: WorkflowScope,
  duration: Duration.DurationInput | GraphFn,
  input: unknown,
  nodeId: string,
  path: string
): Effect.Effect<number, StepFailure | Pending> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    evaluate(env, scope, typeof duration === "function" ? duration : () => Effect.succeed(duration), input, nodeId, path, (value) => {
      const decoded = Duration.decodeUnknown(value)
      if (decoded._tag === "None") {
        return `The sleep "${nodeId}" needs a duration (a number of milliseconds, a Duration or a string such as ` +
          `"1 second"), but got ${JSON.stringify(value)}.`
      }
      const millis = Duration.toMillis(decoded.value)
      if (!Number.isFinite(millis)) return `The sleep "${nodeId}" got an infinite duration.`
      return now + Math.max(0, millis)
    }))

/** Entry point 4: the wake-up time of a sleepUntil (epoch ms), from its date or date function. */
export const resolveSleepUntil = (
  env: RunEnv,
  scope: WorkflowScope,
  date: Date | GraphFn,
  input: unknown,
  nodeId: string,
  path: string
): Effect.Effect<number, StepFailure | Pending> =>
  evaluate(env, scope, typeof date === "function" ? date : () => Effect.succeed(date), input, nodeId, path, (value) =>
    value instanceof Date && !Number.isNaN(value.getTime())
      ? value.getTime()
      : `The sleepUntil "${nodeId}" needs a valid Date, but got ${
        value instanceof Date ? "an invalid Date" : JSON.stringify(value)
      }.`)

// ---------------------------------------------------------------------------------------------------------------
// helpers

export const parseMessage = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (failure._tag === "Some" && ParseResult.isParseError(failure.value)) return failure.value.message
  return Cause.pretty(cause)
}

/** Turns a cause into the `{ name, message }` that events and the store carry. */
export const serializeCause = (cause: Cause.Cause<unknown>): SerializedError => {
  const failure = Cause.failureOption(cause)
  const value = failure._tag === "Some" ? failure.value : Cause.dieOption(cause).pipe((d) => d._tag === "Some" ? d.value : undefined)
  if (value instanceof Error) return { name: value.name, message: value.message }
  if (typeof value === "object" && value !== null) {
    const name = "_tag" in value && typeof value._tag === "string" ? value._tag : "Error"
    const message = "message" in value && typeof value.message === "string" ? value.message : safeJson(value)
    return { name, message }
  }
  if (value !== undefined) return { name: "Error", message: String(value) }
  return { name: Cause.isInterruptedOnly(cause) ? "Interrupted" : "Error", message: Cause.pretty(cause) }
}

const safeJson = (value: unknown): string => {
  try {
    return JSON.stringify(value)
  } catch {
    return String(value)
  }
}
