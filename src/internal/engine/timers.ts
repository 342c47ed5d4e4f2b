/**
 * One timer for every parked sleep of an engine. A run waiting in a long sleep holds no fiber: it holds an entry
 * here (a few dozen bytes), and one fiber sleeps until the earliest entry is due. Times are the app's clock, so a
 * test clock drives wake-ups as it drives `Effect.sleep`. With no entry left, no timer is left either.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"

/** A timer queue keyed by run and path. */
export interface Timers {
  /**
   * Fires the queue's `fire(runId, path)` (in its own fiber of the engine's scope) once the app's clock reaches `at`.
   * A second entry for the same run and path is ignored while the first is pending.
   */
  readonly schedule: (runId: string, path: string, at: number) => Effect.Effect<void>
  /** Drops every pending entry of a run. */
  readonly cancel: (runId: string) => void
  /** Whether a run has a pending entry. */
  readonly has: (runId: string) => boolean
  /** How many entries are pending. */
  readonly size: () => number
}

interface Entry {
  readonly at: number
  readonly seq: number
  readonly runId: string
  readonly path: string
  live: boolean
  /** The run's next pending entry: a run's entries are a list from `byRun`, most often of one. */
  next: Entry | undefined
}

const before = (a: Entry, b: Entry) => a.at < b.at || (a.at === b.at && a.seq < b.seq)

/** A binary min-heap of entries by time (then by arrival), with canceled entries dropped lazily. */
class Heap {
  items: Array<Entry> = []
  push(entry: Entry) {
    const items = this.items
    items.push(entry)
    let i = items.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!before(items[i]!, items[parent]!)) break
      ;[items[i], items[parent]] = [items[parent]!, items[i]!]
      i = parent
    }
  }
  peek(): Entry | undefined {
    return this.items[0]
  }
  pop(): Entry | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (items.length > 0 && last !== undefined) {
      items[0] = last
      let i = 0
      while (true) {
        const l = 2 * i + 1
        const r = l + 1
        let m = i
        if (l < items.length && before(items[l]!, items[m]!)) m = l
        if (r < items.length && before(items[r]!, items[m]!)) m = r
        if (m === i) break
        ;[items[i], items[m]] = [items[m]!, items[i]!]
        i = m
      }
    }
    return top
  }
  /** Rebuilds the heap from its live entries only. */
  compact() {
    const live = this.items.filter((e) => e.live)
    this.items = []
    for (const e of live) this.push(e)
  }
}

/** Builds a timer queue whose fiber lives in the current scope; `fire` is what a due entry does. */
export const make = (
  fire: (runId: string, path: string) => Effect.Effect<void>
): Effect.Effect<Timers, never, Scope.Scope> => Effect.gen(function*() {
  const scope = yield* Effect.scope
  const heap = new Heap()
  // Each run's first pending entry (the others follow by `next`): no collection per run, which for a run waiting in
  // one sleep would cost more than its entry.
  const byRun = new Map<string, Entry>()
  let live = 0
  let seq = 0
  // When the earliest entry changes, the loop is told to look again.
  let signal = yield* Deferred.make<void>()
  // The time the loop sleeps until (Infinity: it waits for a signal only).
  let target = Number.POSITIVE_INFINITY

  const poke = () => {
    Deferred.unsafeDone(signal, Effect.void)
  }

  const remove = (entry: Entry) => {
    if (!entry.live) return
    entry.live = false
    live--
    const first = byRun.get(entry.runId)
    if (first === entry) {
      if (entry.next === undefined) byRun.delete(entry.runId)
      else byRun.set(entry.runId, entry.next)
    } else {
      let previous = first
      while (previous !== undefined && previous.next !== entry) previous = previous.next
      if (previous !== undefined) previous.next = entry.next
    }
    entry.next = undefined
  }

  const schedule = (runId: string, path: string, at: number) =>
    Effect.sync(() => {
      const first = byRun.get(runId)
      for (let e = first; e !== undefined; e = e.next) if (e.path === path) return
      const entry: Entry = { at, seq: seq++, runId, path, live: true, next: first }
      byRun.set(runId, entry)
      heap.push(entry)
      live++
      if (at < target) poke()
    })

  const cancel = (runId: string) => {
    const first = byRun.get(runId)
    if (first === undefined) return
    for (let e: Entry | undefined = first; e !== undefined;) {
      const next: Entry | undefined = e.next
      remove(e)
      e = next
    }
    // Stale entries are dropped when they reach the top; rebuild once they outnumber the live ones.
    if (heap.items.length > 64 && heap.items.length > 2 * live) heap.compact()
    // Nothing left: stop the sleeping timer, so that no timer outlives the last entry.
    if (live === 0) poke()
  }

  const loop = Effect.gen(function*() {
    while (true) {
      while (heap.peek()?.live === false) heap.pop()
      const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      const due: Array<Entry> = []
      while (true) {
        const top = heap.peek()
        if (top === undefined || top.at > now) break
        heap.pop()
        if (!top.live) continue
        remove(top)
        due.push(top)
      }
      for (const entry of due) yield* Effect.forkIn(fire(entry.runId, entry.path), scope)
      while (heap.peek()?.live === false) heap.pop()
      const next = heap.peek()
      const waitFor = signal
      target = next === undefined ? Number.POSITIVE_INFINITY : next.at
      if (due.length > 0) continue
      yield* next === undefined
        ? Deferred.await(waitFor)
        : Effect.raceFirst(Effect.sleep(Math.max(0, next.at - now)), Deferred.await(waitFor))
      if (signal === waitFor && (yield* Deferred.isDone(waitFor))) signal = yield* Deferred.make<void>()
    }
  })
  yield* Effect.forkIn(loop, scope)

  return {
    schedule,
    cancel,
    has: (runId) => byRun.has(runId),
    size: () => live
  }
})
