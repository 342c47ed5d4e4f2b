/**
 * The models of the run store and the shape of its service, apart from `RunStore.ts` so that the store backends
 * (`sql.ts`) and the service module do not import each other. `RunStore.ts` re-exports all of it.
 */
import type * as Effect from "effect/Effect"
import type { RunStoreError, StreamClosedError } from "../../WorkflowError.js"
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
  /**
   * How many step records have been written for the run (`putStep` calls), as `getSteps` counts them. Stores set it
   * (a record given to `createRun` leaves it out); an engine holding step records read at this count knows they are
   * current without reading them again.
   */
  readonly stepsVersion?: number
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
  /** The call id of the execution in progress, so its start and result events agree across processes. */
  readonly stepCallId?: string
  readonly attempt?: number
  /**
   * On a `running` record of the evented engine: the engine instance (`workerId`) executing it, and when its attempt
   * started (wall-clock milliseconds). The run's owner sends a step again once that instance has been silent for the
   * lease (see `workerHeartbeats`).
   */
  readonly worker?: string
  readonly startedAt?: number
}

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
  /** Creates a run; answers `false` (and changes nothing) when the id is taken. */
  readonly createRun: (record: RunRecord) => Effect.Effect<boolean, RunStoreError>
  readonly getRun: (runId: string) => Effect.Effect<RunRecord | undefined, RunStoreError>
  readonly updateRun: (runId: string, patch: RunPatch) => Effect.Effect<void, RunStoreError>
  /** The runs that match `filter`, by creation time: oldest first unless it says otherwise. */
  readonly listRuns: (filter: RunFilter) => Effect.Effect<ReadonlyArray<RunRecord>, RunStoreError>
  /** Appends to the run's event log; answers the event's index. */
  readonly appendEvent: (runId: string, event: WorkflowEvent) => Effect.Effect<number, RunStoreError>
  /**
   * Appends several events to the run's log, atomically and in order; answers the index of the first (for an empty
   * batch, the log's size). Writers' events reach the store this way, a batch at a time.
   */
  readonly appendEvents: (runId: string, events: ReadonlyArray<WorkflowEvent>) => Effect.Effect<number, RunStoreError>
  readonly readEvents: (runId: string, from: number, max: number) => Effect.Effect<EventPage, RunStoreError>
  /**
   * Stores a step record (replacing the one at its path) and, with `event`, appends that event to the run's log in
   * the same atomic write: a step's result and the event announcing it are never found one without the other. Answers
   * the run's `stepsVersion` after the write, which counts it: of two writes, the higher version is the later one.
   * Fails (writing nothing) when the run does not exist.
   */
  readonly putStep: (runId: string, record: StepRecord, event?: WorkflowEvent) => Effect.Effect<number, RunStoreError>
  /**
   * The run's step records and the version they reflect, read atomically (no records, version 0, for no run). With
   * `since`, only the records written after the write of that version: applied to the records as of `since`, they
   * give the records as of the version answered.
   */
  readonly getSteps: (runId: string, since?: number) => Effect.Effect<StepRecords, RunStoreError>
  /**
   * Appends chunks to a stream (`""` is the default stream), atomically and in order; answers the index of the first.
   * Fails with `StreamClosedError` (appending nothing) once the stream is closed.
   */
  readonly appendChunks: (
    runId: string,
    namespace: string,
    chunks: ReadonlyArray<unknown>
  ) => Effect.Effect<number, RunStoreError | StreamClosedError>
  /** Closes a stream. Closing a closed stream does nothing. */
  readonly closeStream: (runId: string, namespace: string) => Effect.Effect<void, RunStoreError>
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
