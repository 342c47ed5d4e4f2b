/**
 * The durable record of runs: their status, input and output, the result of every step by its path in the graph,
 * the event log of each run and the chunks of each of its streams, all densely indexed from 0.
 *
 * The store is the truth; the `EventBus` only tells readers that something new is there.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SerializedError, WorkflowEvent } from "./WorkflowEvent.js"
import * as SqlStore from "./internal/sqlStore.js"
import { RunStoreError, StreamClosedError } from "./WorkflowError.js"

export {
  /**
   * @since 0.1.0
   * @category errors
   */
  RunStoreError
} from "./WorkflowError.js"

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
 * The run store service.
 *
 * @since 0.1.0
 * @category tags
 */
export class RunStore extends Context.Tag("stepwise/RunStore")<RunStore, {
  /** Creates a run; answers `false` (and changes nothing) when the id is taken. */
  readonly createRun: (record: RunRecord) => Effect.Effect<boolean, RunStoreError>
  readonly getRun: (runId: string) => Effect.Effect<RunRecord | undefined, RunStoreError>
  readonly updateRun: (runId: string, patch: RunPatch) => Effect.Effect<void, RunStoreError>
  readonly listRuns: (
    filter: { readonly workflowId?: string; readonly statuses?: ReadonlyArray<RunStatus> }
  ) => Effect.Effect<ReadonlyArray<RunRecord>, RunStoreError>
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
}>() {}

/**
 * Whether a store failure may pass by itself (the database is down or busy), as opposed to a row that no longer
 * decodes (operation `"decode"`), which no retry can fix.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isTransient = (error: RunStoreError): boolean => error.operation !== "decode"

/**
 * Wraps a store so that transient failures are retried: exponential backoff from 20 ms, at most 5 s apart, for up to
 * 2 minutes. The engines use their store through this; a run whose store stays down longer is left as it is and
 * taken over by lease recovery once the store is back.
 *
 * @since 0.1.0
 * @category combinators
 */
export const retrying = (store: RunStore["Type"]): RunStore["Type"] => {
  const schedule = Schedule.exponential("20 millis").pipe(
    Schedule.union(Schedule.spaced("5 seconds")),
    Schedule.upTo("2 minutes")
  )
  const transient = (error: unknown) => error instanceof RunStoreError && isTransient(error)
  // The schedule is only set up once a call has failed: the common path stays one call (it is the per-event path).
  const retry = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
    Effect.catchIf(effect, transient, (first) =>
      Effect.zipRight(
        Effect.logWarning("The run store failed; retrying", (first as { readonly message?: string }).message),
        Effect.retry(effect, { schedule, while: transient })
      ))
  return {
    createRun: (record) => retry(store.createRun(record)),
    getRun: (runId) => retry(store.getRun(runId)),
    updateRun: (runId, patch) => retry(store.updateRun(runId, patch)),
    listRuns: (filter) => retry(store.listRuns(filter)),
    appendEvent: (runId, event) => retry(store.appendEvent(runId, event)),
    appendEvents: (runId, events) => retry(store.appendEvents(runId, events)),
    readEvents: (runId, from, max) => retry(store.readEvents(runId, from, max)),
    putStep: (runId, record, event) => retry(store.putStep(runId, record, event)),
    getSteps: (runId, since) => retry(store.getSteps(runId, since)),
    appendChunks: (runId, namespace, chunks) => retry(store.appendChunks(runId, namespace, chunks)),
    closeStream: (runId, namespace) => retry(store.closeStream(runId, namespace)),
    readChunks: (runId, namespace, from, max) => retry(store.readChunks(runId, namespace, from, max)),
    claimRun: (runId, owner, now, staleBefore) => retry(store.claimRun(runId, owner, now, staleBefore)),
    heartbeat: (owner, now) => retry(store.heartbeat(owner, now)),
    workerHeartbeats: (workers) => retry(store.workerHeartbeats(workers))
  }
}

/**
 * How long a finished run stays in the memory store.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryOptions {
  /** Finished runs older than this are dropped. Default: 1 hour. */
  readonly retention?: Duration.DurationInput
  /** At most this many finished runs are kept; the oldest go first. Default: 10,000. */
  readonly maxFinishedRuns?: number
}

interface MemoryRun {
  /** Its `stepsVersion` may lag behind `stepsVersion` below: `getRun` brings it up to date (a step write need not). */
  record: RunRecord
  readonly events: Array<WorkflowEvent>
  /** Each path's record, with the version of the write that stored it. */
  readonly steps: Map<string, { readonly record: StepRecord; readonly version: number }>
  stepsVersion: number
  readonly streams: Map<string, { readonly chunks: Array<unknown>; closed: boolean }>
}

const emptyEvents: EventPage = { events: [], size: 0 }
const noSteps: StepRecords = { steps: [], version: 0 }

/**
 * Builds a memory store. Runs in progress are always kept; finished ones are dropped by the retention bound, so a
 * long-lived process does not grow without end. A run that finishes is dropped at the next eviction at the earliest
 * (another run finishing or starting), never by its own finishing. A run handle reads the store: once its run is
 * dropped, `result` and `status` die with `RunNotFoundError`, and `events()` and `readable()` fail with
 * `RunStreamError`. Keep the bound above the number of runs whose outcome is read well after they finish.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory = (options: MemoryOptions = {}): Effect.Effect<RunStore["Type"]> =>
  Effect.sync(() => {
    const retentionMillis = Duration.toMillis(options.retention ?? "1 hour")
    const maxFinished = options.maxFinishedRuns ?? 10_000
    if (!(maxFinished >= 0) || !(retentionMillis >= 0)) {
      throw new RangeError("RunStore.layerMemory: retention and maxFinishedRuns must be non-negative")
    }
    const runs = new Map<string, MemoryRun>()
    // Insertion-ordered: the oldest finished run is always first.
    const finished = new Map<string, number>()
    // The last heartbeat of each engine instance.
    const workers = new Map<string, number>()

    // `keep`: the run finishing now. Its last events are still to be written (and its outcome to be read), so it
    // goes at the next eviction at the earliest, even with `maxFinishedRuns: 0`.
    const evict = (now: number, keep?: string) => {
      for (const [runId, finishedAt] of finished) {
        if (finished.size <= maxFinished && now - finishedAt <= retentionMillis) break
        if (runId === keep) continue
        finished.delete(runId)
        runs.delete(runId)
      }
    }

    const missing = (operation: string, runId: string) =>
      new RunStoreError({ operation, runId, reason: "no such run (never created, or dropped by retention)" })

    const withRun = <A>(operation: string, runId: string, f: (run: MemoryRun) => A) =>
      Effect.suspend(() => {
        const run = runs.get(runId)
        return run === undefined ? Effect.fail(missing(operation, runId)) : Effect.succeed(f(run))
      })

    /** The run's record with its `stepsVersion` up to date. */
    const current = (run: MemoryRun): RunRecord => {
      if (run.record.stepsVersion !== run.stepsVersion) run.record = { ...run.record, stepsVersion: run.stepsVersion }
      return run.record
    }

    const stream = (run: MemoryRun, namespace: string) => {
      let s = run.streams.get(namespace)
      if (s === undefined) {
        s = { chunks: [], closed: false }
        run.streams.set(namespace, s)
      }
      return s
    }

    return RunStore.of({
      createRun: (record) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          evict(now)
          if (runs.has(record.runId)) return false
          runs.set(record.runId, {
            record: { ...record, stepsVersion: 0 },
            events: [],
            steps: new Map(),
            stepsVersion: 0,
            streams: new Map()
          })
          return true
        }),
      getRun: (runId) =>
        Effect.sync(() => {
          const run = runs.get(runId)
          return run === undefined ? undefined : current(run)
        }),
      updateRun: (runId, patch) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          withRun("update run", runId, (run) => {
            run.record = { ...run.record, ...patch, updatedAt: now }
            if (patch.status !== undefined && isTerminal(patch.status)) {
              finished.delete(runId)
              finished.set(runId, now)
              evict(now, runId)
            } else if (patch.status !== undefined) {
              finished.delete(runId)
            }
          })),
      listRuns: (filter) =>
        Effect.sync(() => {
          const out: Array<RunRecord> = []
          for (const run of runs.values()) {
            const record = current(run)
            if (filter.workflowId !== undefined && record.workflowId !== filter.workflowId) continue
            if (filter.statuses !== undefined && !filter.statuses.includes(record.status)) continue
            out.push(record)
          }
          return out
        }),
      appendEvent: (runId, event) => withRun("append event", runId, (run) => run.events.push(event) - 1),
      appendEvents: (runId, events) =>
        withRun("append events", runId, (run) => {
          const first = run.events.length
          for (const event of events) run.events.push(event)
          return first
        }),
      readEvents: (runId, from, max) =>
        Effect.sync(() => {
          const run = runs.get(runId)
          if (run === undefined) return emptyEvents
          return { events: run.events.slice(from, from + max), size: run.events.length }
        }),
      putStep: (runId, step, event) =>
        withRun("store step result", runId, (run) => {
          const version = ++run.stepsVersion
          run.steps.set(step.path, { record: step, version })
          if (event !== undefined) run.events.push(event)
          return version
        }),
      getSteps: (runId, since = 0) =>
        Effect.sync(() => {
          const run = runs.get(runId)
          if (run === undefined) return noSteps
          const steps: Array<StepRecord> = []
          for (const { record, version } of run.steps.values()) if (version > since) steps.push(record)
          return { steps, version: run.stepsVersion }
        }),
      appendChunks: (runId, namespace, chunks) =>
        Effect.flatMap(withRun("append chunks", runId, (run) => stream(run, namespace)), (s) => {
          if (s.closed) return Effect.fail(new StreamClosedError({ runId, namespace }))
          const first = s.chunks.length
          for (const chunk of chunks) s.chunks.push(chunk)
          return Effect.succeed(first)
        }),
      closeStream: (runId, namespace) => withRun("close stream", runId, (run) => void (stream(run, namespace).closed = true)),
      readChunks: (runId, namespace, from, max) =>
        Effect.sync(() => {
          const s = runs.get(runId)?.streams.get(namespace)
          if (s === undefined) return { chunks: [], size: 0, closed: false }
          return { chunks: s.chunks.slice(from, from + max), size: s.chunks.length, closed: s.closed }
        }),
      claimRun: (runId, owner, now, staleBefore) =>
        withRun("claim run", runId, (run) => {
          const { heartbeatAt, owner: current } = run.record
          if (current !== undefined && current !== owner && heartbeatAt !== undefined && heartbeatAt >= staleBefore) {
            return false
          }
          run.record = { ...run.record, owner, heartbeatAt: now }
          return true
        }),
      heartbeat: (owner, now) =>
        Effect.sync(() => {
          for (const run of runs.values()) {
            if (run.record.owner === owner && !isTerminal(run.record.status) && run.record.status !== "suspended") {
              run.record = { ...run.record, heartbeatAt: now }
            }
          }
          workers.set(owner, now)
          for (const [worker, at] of workers) if (at < now - SqlStore.workerRetentionMillis) workers.delete(worker)
        }),
      workerHeartbeats: (names) =>
        Effect.sync(() => {
          const beats = new Map<string, number>()
          for (const worker of names) {
            const at = workers.get(worker)
            if (at !== undefined) beats.set(worker, at)
          }
          return beats
        })
    })
  })

/**
 * The memory store with default retention (finished runs kept for 1 hour, at most 10,000 of them).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<RunStore> = Layer.effect(RunStore, makeMemory())

/**
 * The memory store with your own retention bound.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemoryWith = (options: MemoryOptions): Layer.Layer<RunStore> =>
  Layer.effect(RunStore, makeMemory(options))

/**
 * The durable store on an `@effect/sql` `SqlClient`: SQLite through `@effect/sql-sqlite-node` (the embedded default:
 * see `stepwise/sqlite`) or Postgres through `@effect/sql-pg` (shared by many workers: see `stepwise/postgres`).
 * Creates its tables with the `@effect/sql` migrator (table `stepwise_migrations`) when built.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerSql: Layer.Layer<RunStore, RunStoreError, SqlClient.SqlClient> = Layer.effect(RunStore, SqlStore.make)
