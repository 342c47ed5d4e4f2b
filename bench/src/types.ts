/**
 * The contract every contender adapter implements. Each method builds a fresh engine instance,
 * runs one measurement of one figure, checks the outcome (throws if a run produced a wrong result
 * or a reader missed chunks), tears the engine down and returns the raw sample. Set-up and teardown
 * are outside the timed region. A figure the contender cannot do returns `undefined`; the reason is
 * in `notes`.
 */
export type FigureId = "steps" | "fanout" | "writer" | "latency" | "memory" | "branch"

/** Wall-clock time of one timed region. */
export interface Timing {
  readonly ms: number
}

export interface LatencySample {
  /** Total time of the latency run (n writes at the given spacing). */
  readonly ms: number
  /** Write-call-to-reader-receipt latency percentiles, in microseconds. */
  readonly p50Us: number
  readonly p99Us: number
  readonly maxUs: number
}

export interface MemorySample {
  /** heapUsed after forced GC with the engine built and warmed, before any waiting run. */
  readonly baselineBytes: number
  /** heapUsed after forced GC with `n` runs waiting in a 1-hour sleep (their handles held). */
  readonly waitingBytes: number
  /** heapUsed after forced GC once every run was canceled and its handle dropped (engine still alive). */
  readonly afterCancelBytes: number
  readonly n: number
  /** Active process timers after cancel minus before the runs started (canceled runs whose sleep timers live on). */
  readonly timersLeft: number
  /** Time to start the n runs and see them all waiting. */
  readonly startMs: number
  /** Time to cancel them all and see them all finished. */
  readonly cancelMs: number
  /** stepwise only: EventBus channels with live subscribers while waiting / after cancel, over the baseline (the evented engine's own). */
  readonly channelsWaiting?: number
  readonly channelsAfter?: number
  /** stepwise only: runs its RunStore still holds after cancel (finished runs are kept until the retention bound). */
  readonly retainedRuns?: number
}

export interface Contender {
  /** Stable id used on the command line and in JSON, e.g. "mastra-evented". */
  readonly id: string
  /** Label for tables, e.g. "mastra (evented)". */
  readonly label: string
  /** "peer", "stepwise" or "floor": decides which ratio rows it appears in. */
  readonly kind: "stepwise" | "peer" | "floor"
  /** Why a figure is missing or how it is measured differently, shown under the tables. */
  readonly notes: Partial<Record<FigureId, string>>
  /**
   * Figure 1, 6a and the cost curves: `runs` runs of a linear workflow of `steps` no-op steps (10 but in the
   * steps-per-run curve), `concurrency` in flight.
   */
  readonly stepOverhead: (runs: number, concurrency: number, steps: number) => Promise<Timing | undefined>
  /** Figure 2: `runs` runs (one at a time) of a parallel of 10 no-op steps. */
  readonly fanOut: (runs: number) => Promise<Timing | undefined>
  /** Figure 3 and 6b: one step writes `chunks` small objects; `readers` readers consume the run's stream. */
  readonly writerThroughput: (chunks: number, readers: number) => Promise<Timing | undefined>
  /** Figure 4: `n` writes spaced `spacingUs` apart, one reader. */
  readonly latency: (n: number, spacingUs: number) => Promise<LatencySample | undefined>
  /** Figure 5: `n` runs left waiting in a 1-hour sleep, then all canceled. */
  readonly memoryWaiting: (n: number) => Promise<MemorySample | undefined>
  /**
   * Figure 7: `runs` runs, one at a time, of BRANCH_STAGES stages (a branch of two arms whose conditions look at
   * the input, the taken arm writes one `writer.custom` tick, then a map takes the arm's output), each run read to
   * its end by one reader of its stream, which must see every tick (work.ts: TickCheck).
   */
  readonly branchCustom: (runs: number) => Promise<Timing | undefined>
}

/** An adapter module that could not be loaded (e.g. src/index.ts does not exist yet). */
export interface Unavailable {
  readonly id: string
  readonly label: string
  readonly reason: string
}

/** What every adapter module exports as `load()`. */
export interface Loaded {
  readonly contenders: ReadonlyArray<Contender>
  readonly unavailable: ReadonlyArray<Unavailable>
}
