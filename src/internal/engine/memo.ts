/**
 * What a walk knows of a run's step records (its memo), and the cache of those records that the evented engine keeps
 * between walks.
 *
 * The evented engine walks a run after every message, in whichever process receives it, so each walk used to read all
 * of the run's step records: a foreach of n items read n records n times. The cache keeps each run's records as of a
 * store version (`RunRecord.stepsVersion`, which every step write bumps). A walk whose run record shows a version the
 * cache has reached uses the cached records; this process's own writes advance the cache in version order (a write
 * answered out of order waits for the ones before it). A write by another process is a version the cache never sees,
 * so the next walk reads the records written since the cache's version (the store keeps each record's version). The
 * cache is therefore never behind the run record a walk has read.
 *
 * Walks see the cached records live: a record written by this process during a walk may show up in it. That is as if
 * the walk had read the store a little later; a node's record only moves forward (running, then its outcome), and
 * the handlers that could write the same node are serialized by the run's lock.
 */
import type * as RunStore from "../../RunStore.js"

/** A walk's memo: the store's records by path, plus what the walk itself recorded. */
export interface Memo {
  readonly get: (path: string) => RunStore.StepRecord | undefined
  readonly has: (path: string) => boolean
  readonly set: (path: string, record: RunStore.StepRecord) => void
  /** Every record, one per path. */
  readonly values: () => Iterable<RunStore.StepRecord>
}

/** A fresh memo of the store's records (for walks that read the store themselves). */
export const fromRecords = (steps: ReadonlyArray<RunStore.StepRecord>): Map<string, RunStore.StepRecord> => {
  const memo = new Map<string, RunStore.StepRecord>()
  for (const step of steps) memo.set(step.path, step)
  return memo
}

/** A walk's memo over shared records: what the walk records stays its own. */
class View implements Memo {
  private own: Map<string, RunStore.StepRecord> | undefined = undefined
  constructor(private readonly shared: ReadonlyMap<string, RunStore.StepRecord>) {}
  get(path: string) {
    return (this.own !== undefined && this.own.get(path)) || this.shared.get(path)
  }
  has(path: string) {
    return (this.own !== undefined && this.own.has(path)) || this.shared.has(path)
  }
  set(path: string, record: RunStore.StepRecord) {
    ;(this.own ??= new Map()).set(path, record)
  }
  *values() {
    const own = this.own
    for (const [path, record] of this.shared) if (own === undefined || !own.has(path)) yield record
    if (own !== undefined) yield* own.values()
  }
}

interface Entry {
  /** Every write up to this version is in `records`. */
  version: number
  readonly records: Map<string, RunStore.StepRecord>
  /** This process's writes answered with a version past the next one, waiting for the writes before them. */
  readonly ahead: Map<number, RunStore.StepRecord>
}

/** How many out-of-order writes an entry keeps before it gives up (the next walk reads the store). */
const maxAhead = 256

/** The step records of up to `capacity` runs, kept between walks. */
export interface Cache {
  /** A memo for a walk of a run whose record shows `version`, when the cache has reached it. */
  readonly get: (runId: string, version: number) => Memo | undefined
  /** Keeps records just read from the store (unless the cache is further along) and answers a memo over them. */
  readonly put: (runId: string, read: RunStore.StepRecords) => Memo
  /** The version the cache holds a run's records at, if it holds them: what to read the writes since. */
  readonly version: (runId: string) => number | undefined
  /**
   * Brings a run's records up to a read of the writes after `since` (`getSteps(runId, since)`), and answers a memo
   * over them; nothing when the cache no longer holds the run (then read everything).
   */
  readonly update: (runId: string, read: RunStore.StepRecords, since: number) => Memo | undefined
  /** Tells the cache of a step write of this process, with the version the store answered. */
  readonly written: (runId: string, record: RunStore.StepRecord, version: number) => void
  /** Forgets a run (it settled, or waits without anything in this process); answers the records it held. */
  readonly drop: (runId: string) => Iterable<RunStore.StepRecord> | undefined
  /** How many runs are cached (for tests). */
  readonly size: () => number
}

export const makeCache = (capacity: number): Cache => {
  const entries = new Map<string, Entry>()

  const catchUp = (entry: Entry) => {
    let next = entry.ahead.get(entry.version + 1)
    while (next !== undefined) {
      entry.ahead.delete(entry.version + 1)
      entry.records.set(next.path, next)
      entry.version++
      next = entry.ahead.get(entry.version + 1)
    }
  }

  return {
    get: (runId, version) => {
      const entry = entries.get(runId)
      if (entry === undefined) return undefined
      if (entry.version < version) catchUp(entry)
      return entry.version >= version ? new View(entry.records) : undefined
    },
    put: (runId, read) => {
      const current = entries.get(runId)
      if (current !== undefined && current.version >= read.version) return new View(current.records)
      const entry: Entry = { version: read.version, records: fromRecords(read.steps), ahead: new Map() }
      // Writes of this process answered past the read are still to come in order.
      if (current !== undefined) {
        for (const [version, record] of current.ahead) if (version > read.version) entry.ahead.set(version, record)
      }
      catchUp(entry)
      entries.delete(runId)
      entries.set(runId, entry)
      if (entries.size > capacity) entries.delete(entries.keys().next().value!)
      return new View(entry.records)
    },
    version: (runId) => entries.get(runId)?.version,
    update: (runId, read, since) => {
      const entry = entries.get(runId)
      if (entry === undefined || entry.version < since) return undefined
      // The read holds each path's last write up to its version: the entry, at `since` or later, becomes that.
      if (entry.version < read.version) {
        for (const record of read.steps) entry.records.set(record.path, record)
        entry.version = read.version
        for (const version of entry.ahead.keys()) if (version <= read.version) entry.ahead.delete(version)
        catchUp(entry)
      }
      return new View(entry.records)
    },
    written: (runId, record, version) => {
      const entry = entries.get(runId)
      // Not cached, or the records were read after this write (they hold it, or a later write at its path).
      if (entry === undefined || version <= entry.version) return
      if (version === entry.version + 1) {
        entry.records.set(record.path, record)
        entry.version = version
        if (entry.ahead.size > 0) catchUp(entry)
      } else {
        entry.ahead.set(version, record)
        if (entry.ahead.size > maxAhead) entries.delete(runId)
      }
    },
    drop: (runId) => {
      const entry = entries.get(runId)
      if (entry === undefined) return undefined
      entries.delete(runId)
      return entry.records.values()
    },
    size: () => entries.size
  }
}
