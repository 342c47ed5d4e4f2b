/**
 * The figures, as a list of cases. A case runs one contender method with fixed arguments and turns
 * the sample into named metric values; `primary` is the metric that ratios are computed on.
 */
import type { Contender, FigureId, LatencySample, MemorySample, Timing } from "./types.ts"
import { BRANCH_STAGES, FAN_OUT, LINEAR_STEPS } from "./work.ts"

export interface Metric {
  readonly key: string
  readonly label: string
  /** Which direction is better; ratios are always expressed as "times the cost of the reference". */
  readonly better: "lower" | "higher"
  readonly digits: number
}

export interface Case {
  readonly id: string
  /** Figure heading, e.g. "1. Step overhead". */
  readonly figure: string
  /** What exactly runs, e.g. "10-step linear workflow, 2,000 runs, 1 in flight". */
  readonly title: string
  readonly group: FigureId
  /** What the columns mean, printed under the title. */
  readonly legend?: string
  /** The floor contender this case is compared with. */
  readonly floor: string
  readonly metrics: ReadonlyArray<Metric>
  readonly primary: string
  /** Runs the measurement; `undefined` when the contender cannot do this figure. */
  readonly measure: (contender: Contender) => Promise<Measured | undefined>
  /**
   * A point of a cost curve whose later points are extrapolated from it (main.ts skips a point that would take too
   * long): steps per run, runs in flight or waiting runs at `x`, doing `work` units (steps, or waiting runs) in all.
   */
  readonly curve?: { readonly name: "steps" | "flight" | "waiting"; readonly x: number; readonly work: number }
  /** Memory cases: how many runs wait. */
  readonly waiting?: number
  /** A smaller run to warm code paths before the repetitions (none for memory: adapters warm up themselves). */
  readonly warm?: (contender: Contender) => Promise<unknown>
}

export interface Measured {
  readonly raw: Timing | LatencySample | MemorySample
  readonly values: Readonly<Record<string, number>>
}

export interface Sizes {
  readonly stepRuns: number
  readonly fanOutRuns: number
  readonly writerChunks: number
  /** Chunks per run in the readers-scaling rows (100 readers × the full count would dominate the run time). */
  readonly scaleChunks: number
  readonly latencyWrites: number
  readonly latencySpacingUs: number
  readonly memoryRuns: number
  readonly branchRuns: number
  readonly concurrencies: ReadonlyArray<number>
  readonly readers: ReadonlyArray<number>
  /** Cost curves: steps per run (each point runs `curveTotalSteps` steps in all), runs in flight, waiting runs. */
  readonly curveSteps: ReadonlyArray<number>
  readonly curveTotalSteps: number
  readonly curveConcurrencies: ReadonlyArray<number>
  readonly curveWaiting: ReadonlyArray<number>
}

const fmt = (n: number): string => n.toLocaleString("en-US")

const stepsCase = (sizes: Sizes, concurrency: number, steps = LINEAR_STEPS): Case => {
  const runs = steps === LINEAR_STEPS
    ? Math.max(sizes.stepRuns, concurrency)
    : Math.max(1, Math.round(sizes.curveTotalSteps / steps))
  return {
  id: steps === LINEAR_STEPS ? `steps.c${concurrency}` : `curve.steps.s${steps}`,
  figure: steps !== LINEAR_STEPS
    ? "8a. Cost curve: steps per run"
    : concurrency === 1
    ? "1. Step overhead"
    : "6a. Scaling: concurrent runs",
  title: `${steps}-step linear workflow of no-op steps, ${fmt(runs)} runs, ${concurrency} in flight`,
  group: "steps",
  curve: concurrency === 1
    ? { name: "steps", x: steps, work: runs * steps }
    : { name: "flight", x: concurrency, work: runs * steps },
  floor: "floor-loop",
  metrics: [
    { key: "usPerStep", label: "µs/step", better: "lower", digits: 2 },
    { key: "runsPerSec", label: "runs/s", better: "higher", digits: 0 }
  ],
  primary: "usPerStep",
  measure: async (c) => {
    const t = await c.stepOverhead(runs, concurrency, steps)
    if (t === undefined) return undefined
    return {
      raw: t,
      values: { usPerStep: (t.ms * 1000) / (runs * steps), runsPerSec: runs / (t.ms / 1000) }
    }
  },
  // A curve point's warm-up is one run of at most 100 steps: it warms the same code, and 1,000-step runs of the
  // engines whose cost per step grows with the run's length take seconds each.
  warm: (c) =>
    steps === LINEAR_STEPS
      ? c.stepOverhead(Math.max(100, Math.round(runs / 10)), concurrency, steps)
      : c.stepOverhead(1, concurrency, Math.min(steps, 100))
  }
}

const fanOutCase = (sizes: Sizes): Case => ({
  id: "fanout",
  figure: "2. Fan-out",
  title: `parallel of ${FAN_OUT} no-op steps, ${fmt(sizes.fanOutRuns)} runs, one at a time`,
  group: "fanout",
  floor: "floor-loop",
  metrics: [
    { key: "usPerRun", label: "µs/run", better: "lower", digits: 1 },
    { key: "runsPerSec", label: "runs/s", better: "higher", digits: 0 }
  ],
  primary: "usPerRun",
  measure: async (c) => {
    const t = await c.fanOut(sizes.fanOutRuns)
    if (t === undefined) return undefined
    return { raw: t, values: { usPerRun: (t.ms * 1000) / sizes.fanOutRuns, runsPerSec: sizes.fanOutRuns / (t.ms / 1000) } }
  },
  warm: (c) => c.fanOut(Math.max(50, Math.round(sizes.fanOutRuns / 10)))
})

const writerCase = (id: string, figure: string, chunks: number, readers: number): Case => ({
  id,
  figure,
  title: `one step writes ${fmt(chunks)} chunks with writer.write; ${readers} reader${readers === 1 ? "" : "s"} of the run's stream`,
  group: "writer",
  legend: "chunks/s: chunks written ÷ time from starting the run until every reader has them all; " +
    "deliveries/s: chunks × readers ÷ the same time.",
  floor: "floor-effect",
  metrics: [
    { key: "chunksPerSec", label: "chunks/s", better: "higher", digits: 0 },
    { key: "deliveriesPerSec", label: "deliveries/s", better: "higher", digits: 0 }
  ],
  primary: "chunksPerSec",
  measure: async (c) => {
    const t = await c.writerThroughput(chunks, readers)
    if (t === undefined) return undefined
    return {
      raw: t,
      values: { chunksPerSec: chunks / (t.ms / 1000), deliveriesPerSec: (chunks * readers) / (t.ms / 1000) }
    }
  },
  warm: (c) => c.writerThroughput(Math.max(100, Math.round(chunks / 10)), readers)
})

const latencyCase = (sizes: Sizes): Case => ({
  id: "latency",
  figure: "4. Write-to-read latency",
  title: `${fmt(sizes.latencyWrites)} writes spaced ${sizes.latencySpacingUs} µs apart, one reader; from the write call to receipt`,
  group: "latency",
  legend: "each chunk carries performance.now() taken just before the write call; the reader subtracts it from " +
    "performance.now() at receipt. Percentiles of one run; median and range of those over repetitions.",
  floor: "floor-effect",
  metrics: [
    { key: "p50Us", label: "p50 µs", better: "lower", digits: 1 },
    { key: "p99Us", label: "p99 µs", better: "lower", digits: 1 },
    { key: "maxUs", label: "max µs", better: "lower", digits: 0 }
  ],
  primary: "p50Us",
  measure: async (c) => {
    const s = await c.latency(sizes.latencyWrites, sizes.latencySpacingUs)
    if (s === undefined) return undefined
    return { raw: s, values: { p50Us: s.p50Us, p99Us: s.p99Us, maxUs: s.maxUs } }
  },
  warm: (c) => c.latency(Math.max(100, Math.round(sizes.latencyWrites / 10)), sizes.latencySpacingUs)
})

const memoryCase = (sizes: Sizes, n = sizes.memoryRuns): Case => ({
  id: n === sizes.memoryRuns ? "memory" : `curve.heap.n${n}`,
  figure: n === sizes.memoryRuns ? "5. Memory of waiting runs" : "8c. Cost curve: waiting runs",
  waiting: n,
  curve: { name: "waiting", x: n, work: n },
  title: `${fmt(n)} runs started and left waiting in a 1-hour sleep, then all canceled (heap after forced GC)`,
  group: "memory",
  legend: "bytes/waiting run: (heap with the runs waiting − baseline) ÷ n, handles held; residual: heap after " +
    "canceling all and dropping the handles − baseline, engine still alive; timers left: active process timers " +
    "after − before; bus channels +: stepwise EventBus channels with subscribers beyond the engine's own; runs " +
    "kept by store: stepwise RunStore records of the workflow after cancel.",
  floor: "floor-effect",
  metrics: [
    { key: "bytesPerRun", label: "bytes/waiting run", better: "lower", digits: 0 },
    { key: "residualKiB", label: "residual after cancel KiB", better: "lower", digits: 0 },
    { key: "timersLeft", label: "timers left", better: "lower", digits: 0 },
    { key: "startMs", label: "start all ms", better: "lower", digits: 0 },
    { key: "cancelMs", label: "cancel all ms", better: "lower", digits: 0 },
    { key: "channelsWaiting", label: "bus channels +waiting", better: "lower", digits: 0 },
    { key: "channelsAfter", label: "bus channels +after", better: "lower", digits: 0 },
    { key: "retainedRuns", label: "runs kept by store", better: "lower", digits: 0 }
  ],
  primary: "bytesPerRun",
  measure: async (c) => {
    const s = await c.memoryWaiting(n)
    if (s === undefined) return undefined
    const values: Record<string, number> = {
      bytesPerRun: (s.waitingBytes - s.baselineBytes) / s.n,
      residualKiB: (s.afterCancelBytes - s.baselineBytes) / 1024,
      timersLeft: s.timersLeft,
      startMs: s.startMs,
      cancelMs: s.cancelMs
    }
    if (s.channelsWaiting !== undefined) values["channelsWaiting"] = s.channelsWaiting
    if (s.channelsAfter !== undefined) values["channelsAfter"] = s.channelsAfter
    if (s.retainedRuns !== undefined) values["retainedRuns"] = s.retainedRuns
    return { raw: s, values }
  }
})

const branchCase = (sizes: Sizes): Case => ({
  id: "branch",
  figure: "7. Branches and custom events",
  title: `${BRANCH_STAGES} stages of a branch of two arms (the taken arm writes one writer.custom event) and a map, ` +
    `${fmt(sizes.branchRuns)} runs one at a time, each read to its end by one reader`,
  group: "branch",
  legend: "µs/stage: a run's time from start until its reader has every event and its result, ÷ stages. Each stage " +
    "evaluates both conditions, runs the arm whose condition holds (they alternate), which writes { type: \"data-tick\" } " +
    "with writer.custom, then maps the branch's { [arm]: output } to that output; the reader checks every tick arrived, in order.",
  floor: "floor-effect",
  metrics: [
    { key: "usPerStage", label: "µs/stage", better: "lower", digits: 2 },
    { key: "runsPerSec", label: "runs/s", better: "higher", digits: 0 }
  ],
  primary: "usPerStage",
  measure: async (c) => {
    const t = await c.branchCustom(sizes.branchRuns)
    if (t === undefined) return undefined
    return {
      raw: t,
      values: { usPerStage: (t.ms * 1000) / (sizes.branchRuns * BRANCH_STAGES), runsPerSec: sizes.branchRuns / (t.ms / 1000) }
    }
  },
  warm: (c) => c.branchCustom(Math.max(10, Math.round(sizes.branchRuns / 10)))
})

/** Figure groups selectable on the command line. */
export const figureNames = ["steps", "fanout", "writer", "latency", "memory", "scaling", "branch", "curves"] as const
export type FigureName = (typeof figureNames)[number]

export const buildCases = (sizes: Sizes, figures: ReadonlySet<FigureName>): ReadonlyArray<Case> => {
  const cases: Array<Case> = []
  if (figures.has("steps")) cases.push(stepsCase(sizes, 1))
  if (figures.has("fanout")) cases.push(fanOutCase(sizes))
  if (figures.has("writer")) {
    cases.push(writerCase("writer", "3. Writer throughput", sizes.writerChunks, 1))
  }
  if (figures.has("latency")) cases.push(latencyCase(sizes))
  if (figures.has("memory")) cases.push(memoryCase(sizes))
  if (figures.has("scaling")) {
    for (const c of sizes.concurrencies) cases.push(stepsCase(sizes, c))
    for (const r of sizes.readers) {
      cases.push(writerCase(`readers.r${r}`, "6b. Scaling: readers of one run", sizes.scaleChunks, r))
    }
  }
  if (figures.has("branch")) cases.push(branchCase(sizes))
  if (figures.has("curves")) {
    // Each curve's 10-step, 1-in-flight and figure-5 points are figures 1 and 5 (the chart reads them there).
    for (const steps of sizes.curveSteps) if (steps !== LINEAR_STEPS) cases.push(stepsCase(sizes, 1, steps))
    for (const c of sizes.curveConcurrencies) cases.push({ ...stepsCase(sizes, c), figure: "8b. Cost curve: runs in flight" })
    for (const n of sizes.curveWaiting) if (n !== sizes.memoryRuns) cases.push(memoryCase(sizes, n))
  }
  // a "steps.c1" row may appear twice (figure 1 and the scaling group): keep the first
  return cases.filter((c, i) => cases.findIndex((d) => d.id === c.id) === i)
}
