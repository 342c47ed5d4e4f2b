/**
 * Measurement helpers shared by every adapter: timing, pacing, latency recording, forced-GC heap
 * readings and a small worker pool for "N runs, C in flight".
 */
import { setImmediate as nextMacrotask, setTimeout as sleepMs } from "node:timers/promises"
import type { LatencySample } from "./types.ts"

type GcFunction = () => void
const gcFunction = (globalThis as { gc?: GcFunction }).gc

/** True when the process runs with --expose-gc (run.mjs always passes it). */
export const canForceGc = gcFunction !== undefined

/** Active timers of the process (setTimeout/setInterval handles), to see whether canceled runs leave theirs behind. */
export const activeTimers = (): number => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length

/** One forced full GC (between measurements, so one contender's garbage is not collected on another's time). */
export const collectGarbage = async (): Promise<void> => {
  gcFunction?.()
  await nextMacrotask()
}

/** Forces full GCs, letting finalizers and pending macrotasks run in between, then reads heapUsed. */
export const settledHeap = async (): Promise<number> => {
  if (gcFunction === undefined) throw new Error("memory figure needs node --expose-gc")
  let last = Number.POSITIVE_INFINITY
  for (let i = 0; i < 6; i++) {
    gcFunction()
    await nextMacrotask()
    const used = process.memoryUsage().heapUsed
    // stop once a further GC frees less than 64 KiB
    if (last - used < 64 * 1024 && i >= 2) return used
    last = used
  }
  return last
}

/** Waits `ms` milliseconds of wall time, letting timers and I/O run. */
export const pause = (ms: number): Promise<void> => sleepMs(ms).then(() => undefined)

/** Yields to the event loop (one macrotask turn). */
export const yieldMacrotask = (): Promise<void> => nextMacrotask().then(() => undefined)

/**
 * Waits until performance.now() reaches `target`, yielding a macrotask at a time so readers on the
 * same event loop keep running. Used to space writes (100 µs is below setTimeout's 1 ms resolution).
 */
export const waitUntil = async (target: number): Promise<void> => {
  while (performance.now() < target) await nextMacrotask()
}

/** Polls `done` every `everyMs` until it holds; throws after `timeoutMs`. */
export const pollUntil = async (
  what: string,
  done: () => boolean | Promise<boolean>,
  timeoutMs = 60_000,
  everyMs = 10
): Promise<void> => {
  const deadline = performance.now() + timeoutMs
  while (!(await done())) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await pause(everyMs)
  }
}

/** Runs `task(i)` for i in [0, total) with at most `concurrency` in flight; resolves when all are done. */
export const runPool = async (
  total: number,
  concurrency: number,
  task: (i: number) => Promise<void>
): Promise<void> => {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < total) {
      const i = next++
      await task(i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker))
}

/** Times an async region. */
export const timed = async (region: () => Promise<void>): Promise<number> => {
  const t0 = performance.now()
  await region()
  return performance.now() - t0
}

/** Collects write-to-receipt latencies of chunks stamped with `t` = performance.now() at the write call. */
export class LatencyRecorder {
  private readonly samples: Float64Array
  private count = 0

  constructor(readonly expected: number) {
    this.samples = new Float64Array(expected)
  }

  /** Records the receipt of a chunk written at `writtenAt`. */
  receive(writtenAt: number): void {
    if (this.count < this.expected) this.samples[this.count] = performance.now() - writtenAt
    this.count++
  }

  get received(): number {
    return this.count
  }

  /** Summarizes; throws if the reader did not get exactly the expected number of chunks. */
  summarize(who: string, totalMs: number): LatencySample {
    if (this.count !== this.expected) throw new Error(`${who}: reader got ${this.count} chunks, expected ${this.expected}`)
    const sorted = this.samples.slice(0, this.count).sort()
    const at = (q: number): number => (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN) * 1000
    return { ms: totalMs, p50Us: at(0.5), p99Us: at(0.99), maxUs: at(1) }
  }
}

/** Median, quartiles and range of a list of numbers. */
export interface Spread {
  readonly median: number
  readonly min: number
  readonly max: number
  readonly q1: number
  readonly q3: number
  readonly n: number
}

export const spread = (values: ReadonlyArray<number>): Spread => {
  const sorted = [...values].sort((a, b) => a - b)
  const quantile = (q: number): number => {
    if (sorted.length === 0) return Number.NaN
    const pos = (sorted.length - 1) * q
    const lo = Math.floor(pos)
    const hi = Math.ceil(pos)
    const a = sorted[lo] ?? Number.NaN
    const b = sorted[hi] ?? Number.NaN
    return a + (b - a) * (pos - lo)
  }
  return {
    median: quantile(0.5),
    min: sorted[0] ?? Number.NaN,
    max: sorted[sorted.length - 1] ?? Number.NaN,
    q1: quantile(0.25),
    q3: quantile(0.75),
    n: sorted.length
  }
}

/**
 * Times `region` repeatedly until at least `minMs` have passed and returns the mean per pass. For the
 * floors, whose single pass (a few milliseconds) is too short to time against GC and timer noise.
 */
export const timedMean = async (region: () => Promise<void>, minMs = 50): Promise<number> => {
  let passes = 0
  const t0 = performance.now()
  do {
    await region()
    passes++
  } while (performance.now() - t0 < minMs)
  return (performance.now() - t0) / passes
}

/** Rejects with a timeout error if `promise` does not settle in `ms`. */
export const withTimeout = <A>(what: string, ms: number, promise: Promise<A>): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result after ${Math.round(ms / 1000)} s`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
