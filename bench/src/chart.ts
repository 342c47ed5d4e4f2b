/**
 * The cost curves as one SVG chart (vega-lite compiled to vega, rendered headless with `view.toSVG()`): µs per step
 * against steps per run and against runs in flight, and heap against waiting runs, one line per contender, medians.
 * main.ts writes it after a run that includes the curves; on its own it redraws the chart of a results file:
 *
 *   node_modules/node/bin/node --import tsx src/chart.ts results/full.json results/curves.svg
 */
import { readFileSync, writeFileSync } from "node:fs"
import { resolve } from "node:path"
import { fileURLToPath } from "node:url"
import * as vega from "vega"
import * as vegaLite from "vega-lite"

/** The parts of a results document (report.ts `json`) the chart reads. */
export interface CurvesDocument {
  readonly meta: { readonly date: string; readonly mode: string; readonly loadAverage?: { readonly start: number } }
  readonly contenders: ReadonlyArray<{ readonly id: string; readonly label: string }>
  readonly cases: ReadonlyArray<{
    readonly id: string
    readonly primary: string
    readonly waiting?: number
    readonly results: Readonly<
      Record<string, { readonly summary?: Readonly<Record<string, { readonly median: number } | undefined>> }>
    >
  }>
}

interface Point {
  readonly panel: string
  readonly contender: string
  readonly x: number
  readonly y: number
}

const LINEAR_STEPS = 10

/** Which panel a case is a point of, and where on its x axis; the memory cases' y is the whole heap, in MiB. */
const placeOf = (c: CurvesDocument["cases"][number]): ReadonlyArray<{ panel: string; x: number }> => {
  const inFlight = /^steps\.c(\d+)$/.exec(c.id)
  const perRun = /^curve\.steps\.s(\d+)$/.exec(c.id)
  if (inFlight !== null) {
    const concurrency = Number(inFlight[1])
    return [
      { panel: "runs in flight", x: concurrency },
      ...(concurrency === 1 ? [{ panel: "steps per run", x: LINEAR_STEPS }] : [])
    ]
  }
  if (perRun !== null) return [{ panel: "steps per run", x: Number(perRun[1]) }]
  if (c.waiting !== undefined) return [{ panel: "waiting runs", x: c.waiting }]
  return []
}

export const points = (document: CurvesDocument): ReadonlyArray<Point> => {
  const label = new Map(document.contenders.map((c) => [c.id, c.label]))
  const out: Array<Point> = []
  for (const c of document.cases) {
    for (const { panel, x } of placeOf(c)) {
      for (const [id, result] of Object.entries(c.results)) {
        const median = result.summary?.[c.primary]?.median
        if (median === undefined || !Number.isFinite(median)) continue
        const y = panel === "waiting runs" ? (median * x) / 2 ** 20 : median
        // a heap that shrank (GC noise at small n) has no place on a log axis
        if (y > 0) out.push({ panel, contender: label.get(id) ?? id, x, y })
      }
    }
  }
  return out
}

const panel = (title: string, x: string, y: string, data: ReadonlyArray<Point>) => ({
  title,
  width: 260,
  height: 220,
  data: { values: data.filter((p) => p.panel === title) },
  mark: { type: "line" as const, point: true },
  encoding: {
    x: { field: "x", type: "quantitative" as const, scale: { type: "log" as const }, title: x },
    y: { field: "y", type: "quantitative" as const, scale: { type: "log" as const }, title: y },
    color: { field: "contender", type: "nominal" as const, title: null },
    tooltip: [{ field: "contender" }, { field: "x" }, { field: "y", format: ".1f" }]
  }
})

/** The chart of a results document, as SVG text. */
export const curvesSvg = async (document: CurvesDocument): Promise<string> => {
  const data = points(document)
  const load = document.meta.loadAverage === undefined ? "" : `, load ${document.meta.loadAverage.start.toFixed(1)}`
  const spec: vegaLite.TopLevelSpec = {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: {
      text: "stepwise and peers: cost curves (medians, log-log)",
      subtitle: `npm run bench (${document.meta.mode}), ${document.meta.date.slice(0, 16).replace("T", " ")} UTC${load}`
    },
    background: "white",
    hconcat: [
      panel("steps per run", "steps per run (1 run in flight)", "µs per step", data),
      panel("runs in flight", "runs in flight (10-step runs)", "µs per step", data),
      panel("waiting runs", "runs waiting in a 1-hour sleep", "heap MiB (after forced GC)", data)
    ],
    resolve: { scale: { color: "shared" } },
    config: { legend: { orient: "bottom", columns: 4, labelLimit: 400 } }
  }
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: "none" })
  const svg = await view.toSVG()
  view.finalize()
  return svg
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [input = "results/full.json", output = "results/curves.svg"] = process.argv.slice(2)
  const document = JSON.parse(readFileSync(input, "utf8")) as CurvesDocument
  writeFileSync(output, await curvesSvg(document))
  console.error(`wrote ${output}`)
}
