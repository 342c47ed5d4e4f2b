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
import type * as SqlClient from "@effect/sql/SqlClient"
import { claimKey, fenceOf, isTerminal } from "./internal/store/model.js"
import type {
  EventPage,
  RunRecord,
  Shape,
  StepFence,
  StepRecord,
  StepRecords
} from "./internal/store/model.js"
import type { WorkflowEvent } from "./WorkflowEvent.js"
import { outage } from "./internal/retry.js"
import * as SqlStore from "./internal/store/sql.js"
import { RunStoreError, StepFencedError, StreamClosedError } from "./WorkflowError.js"

export {
  /**
   * @since 0.1.0
   * @category errors
   */
  RunStoreError,
  /**
   * @since 0.1.0
   * @category errors
   */
  StepFencedError
} from "./WorkflowError.js"

export {
  /**
   * @since 0.1.0
   * @category models
   */
  claimKey,
  /**
   * @since 0.1.0
   * @category models
   */
  fenceOf,
  /**
   * @since 0.1.0
   * @category predicates
   */
  isTerminal
} from "./internal/store/model.js"

export type {
  ChunkPage,
  EventPage,
  RunFilter,
  RunPatch,
  RunRecord,
  RunStatus,
  Shape,
  StepFence,
  StepRecord,
  StepRecords,
  SuspendedStep,
  TraceContext
} from "./internal/store/model.js"

/**
 * The run store service (its shape: `Shape`).
 *
 * @since 0.1.0
 * @category tags
 */
export class RunStore extends Context.Tag("stepwise/RunStore")<RunStore, Shape>() {}

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
  const transient = (error: unknown) => error instanceof RunStoreError && isTransient(error)
  // The schedule is only set up once a call has failed: the common path stays one call (it is the per-event path).
  const retry = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
    Effect.catchIf(effect, transient, (first) =>
      Effect.zipRight(
        Effect.logWarning("The run store failed; retrying", (first as { readonly message?: string }).message),
        Effect.retry(effect, { schedule: outage, while: transient })
      ))
  return {
    createRun: (record, event) => retry(store.createRun(record, event)),
    getRun: (runId) => retry(store.getRun(runId)),
    updateRun: (runId, patch, events) => retry(store.updateRun(runId, patch, events)),
    listRuns: (filter) => retry(store.listRuns(filter)),
    appendEvent: (runId, event) => retry(store.appendEvent(runId, event)),
    appendEvents: (runId, events, fences) => retry(store.appendEvents(runId, events, fences)),
    readEvents: (runId, from, max) => retry(store.readEvents(runId, from, max)),
    putStep: (runId, record, event, fence) => retry(store.putStep(runId, record, event, fence)),
    claimStep: (runId, record, expected, event) => retry(store.claimStep(runId, record, expected, event)),
    getSteps: (runId, since) => retry(store.getSteps(runId, since)),
    appendChunks: (runId, namespace, chunks, fences) => retry(store.appendChunks(runId, namespace, chunks, fences)),
    closeStream: (runId, namespace, fence) => retry(store.closeStream(runId, namespace, fence)),
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
const noFences: ReadonlyArray<StepFence> = []
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
    /** `withRun` for an operation that may fail on its own (a fence that does not hold, a closed stream). */
    const withRunEffect = <A, E>(operation: string, runId: string, f: (run: MemoryRun) => Effect.Effect<A, E>) =>
      Effect.suspend((): Effect.Effect<A, E | RunStoreError> => {
        const run = runs.get(runId)
        return run === undefined ? Effect.fail(missing(operation, runId)) : f(run)
      })

    /** The run's record with its `stepsVersion` up to date. */
    const current = (run: MemoryRun): RunRecord => {
      if (run.record.stepsVersion !== run.stepsVersion) run.record = { ...run.record, stepsVersion: run.stepsVersion }
      return run.record
    }

    /** The fences that no longer hold: the record at each one's path is not `running` under its call id. */
    const broken = (run: MemoryRun, fences: ReadonlyArray<StepFence> | undefined): ReadonlyArray<StepFence> => {
      if (fences === undefined || fences.length === 0) return noFences
      let out: Array<StepFence> | undefined
      for (const fence of fences) {
        const current = run.steps.get(fence.path)
        if (current === undefined || fenceOf(current.record) !== fence.stepCallId) (out ??= []).push(fence)
      }
      return out ?? noFences
    }
    const fenced = (runId: string, fences: ReadonlyArray<StepFence>) =>
      new StepFencedError({ runId, fences: fences.map(({ path, stepCallId }) => ({ path, stepCallId })) })

    /** Stores a step record (and its event): the one write every step write comes to. */
    const writeStep = (run: MemoryRun, step: StepRecord, event: WorkflowEvent | undefined) => {
      const version = ++run.stepsVersion
      run.steps.set(step.path, { record: step, version })
      if (event !== undefined) run.events.push(event)
      return version
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
      createRun: (record, event) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          evict(now)
          if (runs.has(record.runId)) return false
          runs.set(record.runId, {
            record: { ...record, stepsVersion: 0 },
            events: event === undefined ? [] : [event],
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
      updateRun: (runId, patch, events) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          withRun("update run", runId, (run) => {
            if (events !== undefined) for (const event of events) run.events.push(event)
            // A finished run stays as it is (see `updateRun`).
            if (isTerminal(run.record.status)) return
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
          // Insertion order is creation order, and the sort is stable: runs created in the same millisecond keep it.
          out.sort((a, b) => a.createdAt - b.createdAt)
          if (filter.order === "newest-first") out.reverse()
          return filter.limit === undefined ? out : out.slice(0, Math.max(0, filter.limit))
        }),
      appendEvent: (runId, event) => withRun("append event", runId, (run) => run.events.push(event) - 1),
      appendEvents: (runId, events, fences) =>
        withRunEffect("append events", runId, (run) => {
          const refused = broken(run, fences)
          if (refused.length > 0) return Effect.fail(fenced(runId, refused))
          const first = run.events.length
          for (const event of events) run.events.push(event)
          return Effect.succeed(first)
        }),
      readEvents: (runId, from, max) =>
        Effect.sync(() => {
          const run = runs.get(runId)
          if (run === undefined) return emptyEvents
          return { events: run.events.slice(from, from + max), size: run.events.length }
        }),
      putStep: (runId, step, event, fence) =>
        fence === undefined
          ? withRun("store step result", runId, (run) => writeStep(run, step, event))
          : withRunEffect("store step result", runId, (run) => {
            const current = run.steps.get(fence.path)
            if (current?.record === step) return Effect.succeed(current.version)
            // Replaced only while the claim is live: an outcome, once recorded, is not written over.
            if (
              fence.path !== step.path || current === undefined || current.record.status !== "running" ||
              fenceOf(current.record) !== fence.stepCallId
            ) {
              return Effect.fail(fenced(runId, [fence]))
            }
            return Effect.succeed(writeStep(run, step, event))
          }),
      claimStep: (runId, step, expected, event) =>
        withRun("claim step", runId, (run) => {
          const current = run.steps.get(step.path)
          if (current?.record === step) return current.version
          if (expected === undefined ? current !== undefined : current === undefined) return undefined
          if (expected !== undefined) {
            const key = claimKey(expected)
            if (key === null || claimKey(current!.record) !== key) return undefined
          }
          return writeStep(run, step, event)
        }),
      getSteps: (runId, since = 0) =>
        Effect.sync(() => {
          const run = runs.get(runId)
          if (run === undefined) return noSteps
          const steps: Array<StepRecord> = []
          for (const { record, version } of run.steps.values()) if (version > since) steps.push(record)
          return { steps, version: run.stepsVersion }
        }),
      appendChunks: (runId, namespace, chunks, fences) =>
        withRunEffect("append chunks", runId, (run): Effect.Effect<number, StreamClosedError | StepFencedError> => {
          const refused = broken(run, fences)
          if (refused.length > 0) return Effect.fail(fenced(runId, refused))
          const s = stream(run, namespace)
          if (s.closed) return Effect.fail(new StreamClosedError({ runId, namespace }))
          const first = s.chunks.length
          for (const chunk of chunks) s.chunks.push(chunk)
          return Effect.succeed(first)
        }),
      closeStream: (runId, namespace, fence) =>
        withRunEffect("close stream", runId, (run) => {
          const refused = broken(run, fence === undefined ? undefined : [fence])
          if (refused.length > 0) return Effect.fail(fenced(runId, refused))
          stream(run, namespace).closed = true
          return Effect.void
        }),
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
