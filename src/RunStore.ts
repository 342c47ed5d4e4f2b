/**
 * The durable record of runs: their status, input and output, the result of every step by its path in the graph,
 * the event log of each run and the chunks of each of its streams, all densely indexed from 0.
 *
 * The store is the truth; the `EventBus` only tells readers that something new is there.
 *
 * @since 0.1.0
 */
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
  // A memory store has no outage to ride out (its failures name a run it does not hold): it is used as it is, one
  // fiber operation less on each of its calls.
  if (memoryStores.has(store)) return store
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

/** The stores `makeMemory` built. */
const memoryStores = new WeakSet<RunStore["Type"]>()

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

/**
 * Below this many events, a run's log is copied to a new array of the exact size at each append. An array that grows
 * by `push` gets room for 16 more elements at once: for the few events of a run that waits (4 in a sleep), two
 * thirds of its log would be empty slots, held for as long as the run waits (see bench/README.md, figure 5).
 */
const exactEvents = 16

/** Below this many paths, a run's step records are a list searched in order; past it, a `Map` by path. */
const listedSteps = 8

interface StepEntry {
  readonly record: StepRecord
  readonly version: number
}

/** What the memory store holds of one run. */
class MemoryRun {
  /** Replaced, not grown, while short (see `exactEvents`). */
  events: Array<WorkflowEvent>
  /**
   * Each path's record, with the version of the write that stored it. Most runs have a few (a run waiting in a sleep
   * has two): a list of record and version, one after the other, costs a fifth of a `Map` of them (whose smallest
   * table alone takes 152 bytes); past `listedSteps` paths, a `Map`.
   */
  private steps: Array<StepRecord | number> | Map<string, StepEntry> = []
  stepsVersion = 0
  /** Made by the run's first stream: most runs have none. */
  streams: Map<string, { readonly chunks: Array<unknown>; closed: boolean }> | undefined = undefined
  constructor(
    /** Its `stepsVersion` may lag behind `stepsVersion` above: `getRun` brings it up to date (a step write need not). */
    public record: RunRecord,
    event: WorkflowEvent | undefined
  ) {
    this.events = event === undefined ? [] : [event]
  }

  /** Appends events to the log; answers the index of the first. */
  appendEvents(events: ReadonlyArray<WorkflowEvent>): number {
    const first = this.events.length
    if (first + events.length <= exactEvents) this.events = this.events.concat(events)
    else for (const event of events) this.events.push(event)
    return first
  }

  /** The record at a path, with the version of its write. */
  step(path: string): StepEntry | undefined {
    const steps = this.steps
    if (!Array.isArray(steps)) return steps.get(path)
    for (let i = 0; i < steps.length; i += 2) {
      const record = steps[i] as StepRecord
      if (record.path === path) return { record, version: steps[i + 1] as number }
    }
    return undefined
  }

  /** Stores a step record (and its event): the one write every step write comes to. Answers its version. */
  writeStep(record: StepRecord, event: WorkflowEvent | undefined): number {
    const version = ++this.stepsVersion
    if (event !== undefined) this.appendEvents([event])
    const steps = this.steps
    if (!Array.isArray(steps)) {
      steps.set(record.path, { record, version })
      return version
    }
    for (let i = 0; i < steps.length; i += 2) {
      if ((steps[i] as StepRecord).path === record.path) {
        steps[i] = record
        steps[i + 1] = version
        return version
      }
    }
    if (steps.length < 2 * listedSteps) {
      // Exact-sized, as the event log.
      this.steps = steps.concat(record, version)
      return version
    }
    const map = new Map<string, StepEntry>()
    for (let i = 0; i < steps.length; i += 2) {
      const listed = steps[i] as StepRecord
      map.set(listed.path, { record: listed, version: steps[i + 1] as number })
    }
    map.set(record.path, { record, version })
    this.steps = map
    return version
  }

  /** The records written after version `since`, in the order their paths were first written. */
  stepsSince(since: number): Array<StepRecord> {
    const out: Array<StepRecord> = []
    const steps = this.steps
    if (!Array.isArray(steps)) {
      for (const { record, version } of steps.values()) if (version > since) out.push(record)
    } else {
      for (let i = 0; i < steps.length; i += 2) if ((steps[i + 1] as number) > since) out.push(steps[i] as StepRecord)
    }
    return out
  }
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
        const current = run.step(fence.path)
        if (current === undefined || fenceOf(current.record) !== fence.stepCallId) (out ??= []).push(fence)
      }
      return out ?? noFences
    }
    const fenced = (runId: string, fences: ReadonlyArray<StepFence>) =>
      new StepFencedError({ runId, fences: fences.map(({ path, stepCallId }) => ({ path, stepCallId })) })

    const stream = (run: MemoryRun, namespace: string) => {
      const streams = run.streams ??= new Map()
      let s = streams.get(namespace)
      if (s === undefined) {
        s = { chunks: [], closed: false }
        streams.set(namespace, s)
      }
      return s
    }

    const store = RunStore.of({
      createRun: (record, event) =>
        Effect.clockWith((clock) => {
          const now = clock.unsafeCurrentTimeMillis()
          evict(now)
          if (runs.has(record.runId)) return Effect.succeed(false)
          runs.set(record.runId, new MemoryRun({ ...record, stepsVersion: 0 }, event))
          return Effect.succeed(true)
        }),
      getRun: (runId) =>
        Effect.sync(() => {
          const run = runs.get(runId)
          return run === undefined ? undefined : current(run)
        }),
      updateRun: (runId, patch, events) =>
        Effect.clockWith((clock) =>
          withRun("update run", runId, (run) => {
            const now = clock.unsafeCurrentTimeMillis()
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
      appendEvent: (runId, event) => withRun("append event", runId, (run) => run.appendEvents([event])),
      appendEvents: (runId, events, fences) =>
        withRunEffect("append events", runId, (run) => {
          const refused = broken(run, fences)
          if (refused.length > 0) return Effect.fail(fenced(runId, refused))
          return Effect.succeed(run.appendEvents(events))
        }),
      readEvents: (runId, from, max) =>
        Effect.sync(() => {
          const run = runs.get(runId)
          if (run === undefined) return emptyEvents
          return { events: run.events.slice(from, from + max), size: run.events.length }
        }),
      putStep: (runId, step, event, fence) =>
        fence === undefined
          ? withRun("store step result", runId, (run) => run.writeStep(step, event))
          : withRunEffect("store step result", runId, (run) => {
            const current = run.step(fence.path)
            if (current?.record === step) return Effect.succeed(current.version)
            // Replaced only while the claim is live: an outcome, once recorded, is not written over.
            if (
              fence.path !== step.path || current === undefined || current.record.status !== "running" ||
              fenceOf(current.record) !== fence.stepCallId
            ) {
              return Effect.fail(fenced(runId, [fence]))
            }
            return Effect.succeed(run.writeStep(step, event))
          }),
      claimStep: (runId, step, expected, event) =>
        withRun("claim step", runId, (run) => {
          const current = run.step(step.path)
          if (current?.record === step) return current.version
          if (expected === undefined ? current !== undefined : current === undefined) return undefined
          if (expected !== undefined) {
            const key = claimKey(expected)
            if (key === null || claimKey(current!.record) !== key) return undefined
          }
          return run.writeStep(step, event)
        }),
      getSteps: (runId, since = 0) =>
        Effect.sync(() => {
          const run = runs.get(runId)
          if (run === undefined) return noSteps
          return { steps: run.stepsSince(since), version: run.stepsVersion }
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
          const s = runs.get(runId)?.streams?.get(namespace)
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
    memoryStores.add(store)
    return store
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
