/**
 * Turns the collected samples into the markdown report (stdout) and the JSON document
 * (results/*.json).
 */
import type { Case, Metric } from "./cases.ts"
import { spread, type Spread } from "./measure.ts"
import type { Contender, Unavailable } from "./types.ts"

/** Everything measured for one contender in one case. */
export interface Outcome {
  /** Raw samples, one per repetition, in order. */
  readonly samples: Array<unknown>
  /** Metric values per repetition. */
  readonly values: Record<string, Array<number>>
  /** Set when the contender cannot do this figure. */
  unsupported?: boolean
  /** Set when a measurement threw or timed out; later repetitions are skipped. */
  error?: string
  /** Set when a cost-curve point was not measured because it would take too long (says why). */
  skipped?: string
}

export interface Meta {
  readonly date: string
  readonly mode: "full" | "quick"
  readonly command: string
  readonly reps: number
  /** Full mode: a contender stops repeating a case after `seconds` (and `minReps`), or after `capSeconds`. */
  readonly caseBudget: {
    readonly seconds: number
    readonly minReps: number
    readonly capSeconds: number
    /** Past this many minutes in all, the remaining cases get at most `minReps` repetitions each... */
    readonly deadlineMinutes: number
    /** ...except in the last case, where a repetition that should end before this many minutes still runs. */
    readonly endMinutes: number
  } | null
  /** The case during which the run passed its overall deadline (from then on: one repetition each), if it did. */
  readonly deadlineHitAt: string | null
  readonly node: string
  readonly platform: string
  readonly cpus: string
  readonly memory: string
  readonly versions: Readonly<Record<string, string>>
  /** 1-minute load average of the machine when the run started and when it ended (it is shared: trust ratios). */
  readonly loadAverage: { readonly start: number; readonly end: number }
  readonly totalSeconds: number
}

export interface Results {
  readonly meta: Meta
  readonly cases: ReadonlyArray<Case>
  readonly contenders: ReadonlyArray<Contender>
  readonly unavailable: ReadonlyArray<Unavailable>
  /** outcomes[caseId][contenderId] */
  readonly outcomes: Readonly<Record<string, Readonly<Record<string, Outcome>>>>
}

const formatNumber = (value: number, digits: number): string => {
  if (!Number.isFinite(value)) return "—"
  const abs = Math.abs(value)
  if (abs >= 1e6) return `${(value / 1e6).toFixed(2)} M`
  if (abs >= 1e4) return Math.round(value).toLocaleString("en-US")
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

const summary = (outcome: Outcome | undefined, key: string): Spread | undefined => {
  const values = outcome?.values[key]
  return values === undefined || values.length === 0 ? undefined : spread(values)
}

/** How many times the reference's cost this is (>1: costlier than the reference). */
const costRatio = (metric: Metric, value: number, reference: number): number =>
  metric.better === "lower" ? value / reference : reference / value

const formatRatio = (ratio: number): string =>
  !Number.isFinite(ratio) ? "—" : ratio >= 100 ? `${Math.round(ratio)}×` : ratio >= 10 ? `${ratio.toFixed(1)}×` : `${ratio.toFixed(2)}×`

const row = (cells: ReadonlyArray<string>): string => `| ${cells.join(" | ")} |`

const caseTable = (results: Results, c: Case): Array<string> => {
  const primary = c.metrics.find((m) => m.key === c.primary)
  if (primary === undefined) throw new Error(`case ${c.id}: no metric ${c.primary}`)
  const outcomes = results.outcomes[c.id] ?? {}
  const floor = summary(outcomes[c.floor], c.primary)
  const floorLabel = results.contenders.find((x) => x.id === c.floor)?.label ?? c.floor
  const shown = c.metrics.filter((m) => Object.values(outcomes).some((o) => (o.values[m.key]?.length ?? 0) > 0))
  const lines: Array<string> = []
  lines.push(`**${c.title}**`, "")
  if (c.legend !== undefined) lines.push(c.legend, "")
  const header = ["contender"]
  for (const m of shown) header.push(m.key === c.primary ? `${m.label} (median)` : m.label, ...(m.key === c.primary ? ["min–max"] : []))
  header.push(`× ${floorLabel}`, "reps")
  lines.push(row(header), row(header.map((_, i) => (i === 0 ? "---" : "---:"))))
  for (const contender of results.contenders) {
    const outcome = outcomes[contender.id]
    if (outcome === undefined) continue
    const cells = [contender.label]
    if (outcome.error !== undefined && (outcome.values[c.primary]?.length ?? 0) === 0) {
      lines.push(row([contender.label, `error: ${outcome.error.replace(/\|/g, "/").slice(0, 160)}`, ...header.slice(2).map(() => "")]))
      continue
    }
    if (outcome.skipped !== undefined) {
      lines.push(row([contender.label, `not measured: ${outcome.skipped}`, ...header.slice(2).map(() => "")]))
      continue
    }
    if (outcome.unsupported === true) {
      // a floor that does not do this figure has a sibling that does: leave its row out
      if (contender.kind === "floor") continue
      lines.push(row([contender.label, "n/a", ...header.slice(2).map(() => "")]))
      continue
    }
    for (const m of shown) {
      const s = summary(outcome, m.key)
      cells.push(s === undefined ? "—" : formatNumber(s.median, m.digits))
      if (m.key === c.primary) cells.push(s === undefined ? "—" : `${formatNumber(s.min, m.digits)}–${formatNumber(s.max, m.digits)}`)
    }
    const mine = summary(outcome, c.primary)
    cells.push(mine === undefined || floor === undefined ? "—" : formatRatio(costRatio(primary, mine.median, floor.median)))
    cells.push(`${outcome.values[c.primary]?.length ?? 0}${outcome.error === undefined ? "" : " (error)"}`)
    lines.push(row(cells))
  }
  const notes = results.contenders
    .map((x) => ({ x, note: x.notes[c.group], outcome: outcomes[x.id] }))
    .filter(({ x, note, outcome }) =>
      note !== undefined && outcome !== undefined && !(x.kind === "floor" && outcome.unsupported === true)
    )
    .map(({ x, note }) => `${x.label}: ${note}`)
  const errors = results.contenders
    .map((x) => ({ x, outcome: outcomes[x.id] }))
    .filter(({ outcome }) => outcome?.error !== undefined)
    .map(({ x, outcome }) => `${x.label} failed: ${outcome?.error ?? ""}`)
  if (notes.length + errors.length > 0) lines.push("", ...[...notes, ...errors].map((n) => `- ${n}`))
  lines.push("")
  return lines
}

const ratioTable = (results: Results): Array<string> => {
  const mine = results.contenders.filter((c) => c.kind === "stepwise")
  const peers = results.contenders.filter((c) => c.kind === "peer")
  if (mine.length === 0 || peers.length === 0) return []
  const pairs = mine.flatMap((s) => peers.map((p) => ({ s, p })))
  const lines = [
    "## stepwise vs peers",
    "",
    "Each cell: the peer's cost divided by stepwise's, on the case's main metric (medians). Above 1: stepwise is " +
      "faster / smaller by that factor; below 1: the peer is.",
    "",
    row(["case", "metric", ...pairs.map(({ s, p }) => `${s.label} vs ${p.label}`)]),
    row(["---", "---", ...pairs.map(() => "---:")])
  ]
  for (const c of results.cases) {
    const metric = c.metrics.find((m) => m.key === c.primary)
    if (metric === undefined) continue
    const outcomes = results.outcomes[c.id] ?? {}
    const cells = pairs.map(({ s, p }) => {
      const a = summary(outcomes[s.id], c.primary)
      const b = summary(outcomes[p.id], c.primary)
      return a === undefined || b === undefined ? "—" : formatRatio(costRatio(metric, b.median, a.median))
    })
    if (cells.every((x) => x === "—")) continue
    lines.push(row([c.id, metric.label, ...cells]))
  }
  lines.push("")
  return lines
}

/** The evented engine's cost relative to the default engine's, case by case (issue 3 aims for at most 3×). */
const enginesTable = (results: Results): Array<string> => {
  const byId = (id: string) => results.contenders.find((c) => c.id === id)
  const base = byId("stepwise-default")
  const evented = byId("stepwise-evented")
  if (base === undefined || evented === undefined) return []
  const lines = [
    "## stepwise evented engine vs default engine",
    "",
    "Each cell: the evented engine's cost divided by the default engine's, on the case's main metric (medians). " +
      "Above 1: the evented engine costs more by that factor.",
    "",
    row(["case", "metric", "evented ÷ default"]),
    row(["---", "---", "---:"])
  ]
  for (const c of results.cases) {
    const metric = c.metrics.find((m) => m.key === c.primary)
    if (metric === undefined) continue
    const outcomes = results.outcomes[c.id] ?? {}
    const a = summary(outcomes[base.id], c.primary)
    const b = summary(outcomes[evented.id], c.primary)
    if (a === undefined || b === undefined) continue
    lines.push(row([c.id, metric.label, formatRatio(costRatio(metric, b.median, a.median))]))
  }
  lines.push("")
  return lines
}

/** A median of one contender in one case, if it was measured. */
const medianOf = (results: Results, caseId: string, contender: string, key?: string): number | undefined => {
  const c = results.cases.find((x) => x.id === caseId)
  if (c === undefined) return undefined
  return summary(results.outcomes[caseId]?.[contender], key ?? c.primary)?.median
}

/** The aims of issue 18 that one run of `npm run bench` can check, each as a ratio measured side by side. */
export const aims = (results: Results): ReadonlyArray<{ readonly aim: string; readonly measured: string; readonly met: boolean | undefined }> => {
  const rows: Array<{ aim: string; measured: string; met: boolean | undefined }> = []
  const ratio = (aim: string, value: number | undefined, reference: number | undefined, holds: (r: number) => boolean) => {
    const r = value === undefined || reference === undefined ? undefined : value / reference
    rows.push({ aim, measured: r === undefined ? "not measured" : `${r.toFixed(2)}×`, met: r === undefined ? undefined : holds(r) })
  }
  for (const c of results.cases.filter((x) => /^steps\.c\d+$/.test(x.id))) {
    const mine = medianOf(results, c.id, "stepwise-default")
    const inFlight = c.id.slice("steps.c".length)
    ratio(`per step, ${inFlight} in flight: default engine ≤ 2× floor-record`, mine, medianOf(results, c.id, "floor-record"), (r) => r <= 2)
    ratio(`per step, ${inFlight} in flight: Mastra default ÷ default engine ≥ 3`, medianOf(results, c.id, "mastra-default"), mine, (r) => r >= 3)
  }
  ratio("per step: evented ≤ 1.5× default", medianOf(results, "steps.c1", "stepwise-evented"), medianOf(results, "steps.c1", "stepwise-default"), (r) => r <= 1.5)
  ratio("fan-out: default engine ≤ Mastra default", medianOf(results, "fanout", "stepwise-default"), medianOf(results, "fanout", "mastra-default"), (r) => r <= 1)
  ratio("latency p50 ≤ 1.2× the PubSub floor", medianOf(results, "latency", "stepwise-default", "p50Us"), medianOf(results, "latency", "floor-effect", "p50Us"), (r) => r <= 1.2)
  ratio("latency p99 ≤ Mastra default's", medianOf(results, "latency", "stepwise-default", "p99Us"), medianOf(results, "latency", "mastra-default", "p99Us"), (r) => r <= 1)
  ratio("writer ≥ 0.8× raw PubSub", medianOf(results, "writer", "stepwise-default"), medianOf(results, "writer", "floor-effect"), (r) => r >= 0.8)
  const heap = medianOf(results, "memory", "stepwise-default")
  rows.push({ aim: "heap per waiting run < 2,000 B", measured: heap === undefined ? "not measured" : `${Math.round(heap).toLocaleString("en-US")} B`, met: heap === undefined ? undefined : heap < 2000 })
  return rows
}

const aimsTable = (results: Results): Array<string> => {
  const rows = aims(results)
  if (rows.every((r) => r.met === undefined)) return []
  return [
    "## Aims (issue 18), stepwise's default engine unless named",
    "",
    row(["aim", "measured", ""]),
    row(["---", "---:", "---"]),
    ...rows.map((r) => row([r.aim, r.measured, r.met === undefined ? "" : r.met ? "met" : "**not met**"])),
    ""
  ]
}

export const markdown = (results: Results): string => {
  const { meta } = results
  const lines: Array<string> = [
    `# stepwise benchmark (${meta.mode} mode)`,
    "",
    `- date: ${meta.date}; total time ${meta.totalSeconds.toFixed(0)} s`,
    `- node ${meta.node} on ${meta.platform}; ${meta.cpus}; ${meta.memory}; load average ` +
    `${meta.loadAverage.start.toFixed(1)} at the start, ${meta.loadAverage.end.toFixed(1)} at the end`,
    `- versions: ${Object.entries(meta.versions).map(([k, v]) => `${k} ${v}`).join(", ")}`,
    `- method: one process; per case, a warm-up run of each contender, then ${meta.reps} interleaved repetitions ` +
      `(contender order rotated each repetition), a fresh engine instance per measurement (set-up untimed), forced ` +
      `GC between measurements. Tables show the median and min–max; "× floor" is the median cost relative to the ` +
      `named floor.` +
      (meta.caseBudget === null
        ? ""
        : ` To stay under 30 minutes, a contender whose repetitions of one case already took ` +
          `${meta.caseBudget.seconds} s stops there once it has ${meta.caseBudget.minReps}, and at ` +
          `${meta.caseBudget.capSeconds} s whatever the count (see the reps column).`) +
      (meta.deadlineHitAt === null
        ? ""
        : ` The run passed its ${meta.caseBudget?.deadlineMinutes ?? "?"}-minute mark during ${meta.deadlineHitAt}: ` +
          `from there on at most ${meta.caseBudget?.minReps ?? "?"} repetitions ` +
          `each, 1 for a contender whose first took over ${meta.caseBudget?.seconds ?? "?"} s; in the last case ` +
          `(memory) more while a contender's mean repetition ends before the ` +
          `${meta.caseBudget?.endMinutes ?? "?"}-minute mark.`),
    ""
  ]
  if (results.unavailable.length > 0) {
    lines.push("Not measured:", ...results.unavailable.map((u) => `- ${u.label}: ${u.reason}`), "")
  }
  let figure = ""
  for (const c of results.cases) {
    if (c.figure !== figure) {
      figure = c.figure
      lines.push(`## ${figure}`, "")
    }
    lines.push(...caseTable(results, c))
  }
  lines.push(...aimsTable(results))
  lines.push(...ratioTable(results))
  lines.push(...enginesTable(results))
  return lines.join("\n")
}

export const json = (results: Results): unknown => ({
  meta: results.meta,
  aims: aims(results),
  unavailable: results.unavailable,
  contenders: results.contenders.map((c) => ({ id: c.id, label: c.label, kind: c.kind, notes: c.notes })),
  cases: results.cases.map((c) => ({
    id: c.id,
    figure: c.figure,
    title: c.title,
    floor: c.floor,
    primary: c.primary,
    ...(c.waiting === undefined ? {} : { waiting: c.waiting }),
    metrics: c.metrics,
    results: Object.fromEntries(
      Object.entries(results.outcomes[c.id] ?? {}).map(([id, o]) => [
        id,
        {
          ...(o.unsupported === true ? { unsupported: true } : {}),
          ...(o.error === undefined ? {} : { error: o.error }),
          ...(o.skipped === undefined ? {} : { skipped: o.skipped }),
          summary: Object.fromEntries(Object.keys(o.values).map((k) => [k, summary(o, k)])),
          values: o.values,
          samples: o.samples
        }
      ])
    )
  }))
})
