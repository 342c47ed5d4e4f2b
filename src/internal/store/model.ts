/**
 * The models of the run store and the shape of its service, apart from `RunStore.ts` so that the store backends
 * (`sql.ts`) and the service module do not import each other. `RunStore.ts` re-exports all of it.
 */
import type * as Effect from "effect/Effect"
import type { RunStoreError, StepFencedError, StreamClosedError } from "../../WorkflowError.js"
import type { SerializedError, WorkflowEvent } from "../../WorkflowEvent.js"

/**
 * Where a run is. `pending`: created, waiting for a process that knows its workflow; `waiting`: in a sleep;
 * `suspended`: a step called `suspend` and waits for `resume`. The last three are terminal.
 *
 * @since 0.1.0
 * @category models
 */
export type RunStatus = "pending" | "running" | "waiting" | "suspended" | "success" | "failed" | "canceled"

/**
 * @since 0.1.0
 * @category predicates
 */
export const isTerminal = (status: RunStatus): boolean =>
  status === "success" || status === "failed" || status === "canceled"

/**
 * A step waiting in `suspend`, with the payload it suspended with.
 *
 * @since 0.1.0
 * @category models
 */
export interface SuspendedStep {
  readonly step: string
  readonly path: string
  readonly payload: unknown
}

/**
 * Where spans hang in a run's trace: the ids of the span that stands for the run (or, on a nested workflow's step
 * record, for that nested workflow). Walks of the run in any process, later or elsewhere, make their spans children
 * of it, so that a run is one trace (see the README, "Tracing").
 *
 * @since 0.1.0
 * @category models
 */
export interface TraceContext {
  readonly traceId: string
  readonly spanId: string
  readonly sampled: boolean
}

/**
 * One run. `input` and `output` are stored encoded with the workflow's schemas.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunRecord {
  readonly runId: string
  readonly workflowId: string
  readonly status: RunStatus
  readonly input: unknown
  readonly output?: unknown
  readonly error?: SerializedError
  /** The id of the step (or node) whose failure failed the run. */
  readonly failedStep?: string
  readonly suspended?: ReadonlyArray<SuspendedStep>
  /** The engine instance executing the run, and when it last said so: a silent owner's runs are taken over. */
  readonly owner?: string
  readonly heartbeatAt?: number
  readonly createdAt: number
  readonly updatedAt: number
  /** The run's span, made by `start`, when a tracer was there to make it. Set at creation only. */
  readonly trace?: TraceContext
  /**
   * How many step records have been written for the run (`putStep` calls), as `getSteps` counts them. Stores set it
   * (a record given to `createRun` leaves it out); an engine holding step records read at this count knows they are
   * current without reading them again.
   */
  readonly stepsVersion?: number
  /**
   * Set by a store when a field of the run's row no longer decodes (corrupt JSON): which field and why. The fields
   * that did not decode are left out (`input` is then `undefined`). The engines fail such a run with this reason
   * instead of failing every listing or read that meets the row.
   */
  readonly corrupt?: string
}

/**
 * The fields of a run that change over its life.
 *
 * @since 0.1.0
 * @category models
 */
export type RunPatch = Partial<
  Pick<RunRecord, "status" | "output" | "error" | "failedStep" | "suspended" | "owner" | "heartbeatAt">
>

/**
 * Which runs `listRuns` answers, and in what order: those of one workflow, those in some statuses, newest first (by
 * `createdAt`; the default is oldest first), at most `limit` of them.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunFilter {
  readonly workflowId?: string
  readonly statuses?: ReadonlyArray<RunStatus>
  readonly order?: "oldest-first" | "newest-first"
  readonly limit?: number
}

/**
 * The outcome of one node at one path of a run's graph: a step's result, a condition's answer, a sleep's wake-up
 * time. A path that has a `success` record is never executed again (after a resume or a recovery).
 *
 * @since 0.1.0
 * @category models
 */
export interface StepRecord {
  readonly path: string
  readonly stepId: string
  /** `running`: dispatched or executing (a nested workflow: started). */
  readonly status: "running" | "success" | "failed" | "suspended"
  readonly output?: unknown
  readonly error?: SerializedError
  readonly suspendPayload?: unknown
  /** Set by `resume` on a suspended step: the data its next execution receives. */
  readonly resumeData?: unknown
  /**
   * The execution the record belongs to. A step's execution claims each attempt with a fresh call id (its start and
   * result events carry it, so they agree across processes), keeps it in its retries' records and its outcome's, and
   * what it writes is fenced by it (see `StepFence`). A dispatched step's record, and a resumed one's, carry one too:
   * the token the step's next execution claims it by.
   */
  readonly stepCallId?: string
  readonly attempt?: number
  /**
   * On a `running` record of the evented engine: the engine instance (`workerId`) executing it, and when its attempt
   * started (wall-clock milliseconds). The run's owner sends a step again once that instance has been silent for the
   * lease (see `workerHeartbeats`).
   */
  readonly worker?: string
  readonly startedAt?: number
  /**
   * On a `running` record a dispatching walk of the evented engine wrote: when it sent the step (wall-clock
   * milliseconds). A step that no instance claimed within the lease is sent again (its command may have died with
   * the instance that took it off the bus).
   */
  readonly dispatchedAt?: number
  /** On a nested workflow's record: the span that stands for it, parent of the spans of its steps. */
  readonly trace?: TraceContext
}

/**
 * The claim an execution holds on a step: the step's record at `path` carries this `stepCallId` (the execution runs
 * it, or recorded its outcome: see `fenceOf`). A write made under a fence lands only while the claim holds, checked
 * atomically with the write; once another execution has claimed the step, the store refuses it with
 * `StepFencedError`.
 *
 * @since 0.1.0
 * @category models
 */
export interface StepFence {
  readonly path: string
  readonly stepCallId: string
}

/**
 * What a claim on a step compares: the record's kind, attempt and call id. `null` for a record that cannot be claimed
 * (a step that succeeded, failed, or is suspended and not resumed), which no claim replaces. Stores keep it beside the
 * record, so that a claim is one conditional write.
 *
 * @since 0.1.0
 * @category models
 */
export const claimKey = (record: StepRecord): string | null =>
  record.status === "running"
    ? `running:${record.attempt ?? 0}:${record.stepCallId ?? ""}`
    : record.status === "suspended" && record.resumeData !== undefined
    ? `resumed:${record.attempt ?? 0}:${record.stepCallId ?? ""}`
    : null

/**
 * The call id of the execution whose writes a record admits: its `stepCallId`, that of the execution that holds the
 * step (`running`) or recorded its outcome (a late write of that execution, from a fiber it left behind, still
 * lands); `null` for none. Once another execution claims the step, the record carries that one's.
 *
 * @since 0.1.0
 * @category models
 */
export const fenceOf = (record: StepRecord): string | null => record.stepCallId ?? null

/**
 * A run's step records, as of one moment: `version` is the number of step writes they reflect (the run's
 * `stepsVersion` then).
 *
 * @since 0.1.0
 * @category models
 */
export interface StepRecords {
  readonly steps: ReadonlyArray<StepRecord>
  readonly version: number
}

/**
 * A page of a run's event log.
 *
 * @since 0.1.0
 * @category models
 */
export interface EventPage {
  readonly events: ReadonlyArray<WorkflowEvent>
  /** How many events the log holds in all. */
  readonly size: number
}

/**
 * A page of one run stream.
 *
 * @since 0.1.0
 * @category models
 */
export interface ChunkPage {
  readonly chunks: ReadonlyArray<unknown>
  /** How many chunks the stream holds in all (its tail index). */
  readonly size: number
  readonly closed: boolean
}

/**
 * The run store service's shape.
 *
 * @since 0.1.0
 * @category models
 */
export interface Shape {
  /**
   * Creates a run, with `event` (its `workflow-start`) as event 0 in the same atomic write when given; answers `false`
   * (and changes nothing) when the id is taken.
   */
  readonly createRun: (record: RunRecord, event?: WorkflowEvent) => Effect.Effect<boolean, RunStoreError>
  readonly getRun: (runId: string) => Effect.Effect<RunRecord | undefined, RunStoreError>
  /**
   * Applies `patch` to the run. A finished run (`success`, `failed`, `canceled`) stays as it is: the patch changes
   * nothing, atomically with the check, so that a walk that read the run before another process finished it cannot
   * set it running again. Fails when the run does not exist.
   *
   * With `events` (a run's end: its `workflow-finish`), appends them to the run's log, in order, in the same atomic
   * write: a finished run is never found without the event that says so. They are appended also when the patch
   * changes nothing. A decorator must pass `events` on.
   */
  readonly updateRun: (
    runId: string,
    patch: RunPatch,
    events?: ReadonlyArray<WorkflowEvent>
  ) => Effect.Effect<void, RunStoreError>
  /** The runs that match `filter`, by creation time: oldest first unless it says otherwise. */
  readonly listRuns: (filter: RunFilter) => Effect.Effect<ReadonlyArray<RunRecord>, RunStoreError>
  /** Appends to the run's event log; answers the event's index. */
  readonly appendEvent: (runId: string, event: WorkflowEvent) => Effect.Effect<number, RunStoreError>
  /**
   * Appends several events to the run's log, atomically and in order; answers the index of the first (for an empty
   * batch, the log's size). Writers' events reach the store this way, a batch at a time.
   *
   * With `fences` (the claims of the steps whose code wrote the batch), the batch lands only if every one of them
   * still holds, checked atomically with the append; otherwise nothing is appended and it fails with
   * `StepFencedError`, naming the fences that no longer hold. A decorator must pass `fences` on.
   */
  readonly appendEvents: (
    runId: string,
    events: ReadonlyArray<WorkflowEvent>,
    fences?: ReadonlyArray<StepFence>
  ) => Effect.Effect<number, RunStoreError | StepFencedError>
  readonly readEvents: (runId: string, from: number, max: number) => Effect.Effect<EventPage, RunStoreError>
  /**
   * Stores a step record (replacing the one at its path) and, with `event`, appends that event to the run's log in
   * the same atomic write: a step's result and the event announcing it are never found one without the other. Answers
   * the run's `stepsVersion` after the write, which counts it: of two writes, the higher version is the later one.
   * Fails (writing nothing) when the run does not exist.
   *
   * With `fence` (at the record's path), the write is made under that claim: it lands only while the claim holds and
   * the step is still `running` under it (an outcome, once recorded, is not written over), checked atomically with the
   * write, and otherwise fails with `StepFencedError`, writing nothing. A write that already landed (the record at
   * the path is this very record: a retried call) answers that write's version. A decorator must pass `fence` on.
   */
  readonly putStep: (
    runId: string,
    record: StepRecord,
    event?: WorkflowEvent,
    fence?: StepFence
  ) => Effect.Effect<number, RunStoreError | StepFencedError>
  /**
   * Claims a step: stores `record` (with `event`, in the same atomic write) only if the record at its path is still
   * `expected`, the record the claimer read (`undefined`: none yet), as `claimKey` compares them; a record that cannot
   * be claimed (`claimKey` is `null`: the step succeeded, failed, or is suspended and not resumed) is never replaced.
   * Of several claimers that read the same record, exactly one wins, in any number of processes. Answers the run's new
   * `stepsVersion`, or `undefined` when the claim is lost (nothing is written). A claim that already landed (the
   * record at the path is this very record: a retried call) answers its version.
   *
   * The engines claim each attempt of a step this way, with a `running` record naming a fresh `stepCallId` (the
   * attempt's fence), before its code runs; and a dispatched step's record, and the end of a sleep, so that a
   * command delivered twice does one thing.
   */
  readonly claimStep: (
    runId: string,
    record: StepRecord,
    expected: StepRecord | undefined,
    event?: WorkflowEvent
  ) => Effect.Effect<number | undefined, RunStoreError>
  /**
   * The run's step records and the version they reflect, read atomically (no records, version 0, for no run). With
   * `since`, only the records written after the write of that version: applied to the records as of `since`, they
   * give the records as of the version answered.
   */
  readonly getSteps: (runId: string, since?: number) => Effect.Effect<StepRecords, RunStoreError>
  /**
   * Appends chunks to a stream (`""` is the default stream), atomically and in order; answers the index of the first.
   * Fails with `StreamClosedError` (appending nothing) once the stream is closed. With `fences`, as `appendEvents`:
   * the chunks land only while every fence holds, or fail with `StepFencedError`, appending nothing.
   */
  readonly appendChunks: (
    runId: string,
    namespace: string,
    chunks: ReadonlyArray<unknown>,
    fences?: ReadonlyArray<StepFence>
  ) => Effect.Effect<number, RunStoreError | StreamClosedError | StepFencedError>
  /**
   * Closes a stream. Closing a closed stream does nothing. With `fence`, only while that claim holds (else fails with
   * `StepFencedError`, closing nothing).
   */
  readonly closeStream: (
    runId: string,
    namespace: string,
    fence?: StepFence
  ) => Effect.Effect<void, RunStoreError | StepFencedError>
  readonly readChunks: (
    runId: string,
    namespace: string,
    from: number,
    max: number
  ) => Effect.Effect<ChunkPage, RunStoreError>
  /**
   * Makes `owner` the run's owner if it has none, already is, or the owner's last heartbeat is older than
   * `staleBefore`. Atomic: of two engines claiming a run, one wins.
   */
  readonly claimRun: (runId: string, owner: string, now: number, staleBefore: number) => Effect.Effect<boolean, RunStoreError>
  /**
   * Says that the engine instance `owner` is alive at `now`: marks every unfinished run it owns as still owned, and
   * records the instance's own last heartbeat (answered by `workerHeartbeats`). Stores may forget instances silent
   * for a week.
   */
  readonly heartbeat: (owner: string, now: number) => Effect.Effect<void, RunStoreError>
  /** The last heartbeat of each of these engine instances; an instance the store has no heartbeat of is left out. */
  readonly workerHeartbeats: (
    workers: ReadonlyArray<string>
  ) => Effect.Effect<ReadonlyMap<string, number>, RunStoreError>
}
