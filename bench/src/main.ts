/**
 * The bench entry (run by ../run.mjs under Node 22 with tsx and --expose-gc).
 *
 *   node run.mjs [--quick] [--figures=steps,fanout,writer,latency,memory,scaling,branch]
 *                [--contenders=stepwise,mastra,effect-workflow,floor] [--reps=N] [--out=results/x.json]
 *
 * Loads every adapter, then for each case: one warm-up run per contender, then `reps` interleaved
 * repetitions (the contender order rotates each repetition), forced GC between measurements. In
 * full mode a slow contender stops repeating a case early (see CASE_BUDGET_MS).
 * Prints a markdown report to stdout (progress goes to stderr) and writes the JSON results.
 */
import { spawn } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import os from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { buildCases, figureNames, type Case, type FigureName, type Sizes } from "./cases.ts"
import { canForceGc, collectGarbage, withTimeout } from "./measure.ts"
import { curvesSvg, type CurvesDocument } from "./chart.ts"
import { json, markdown, type Outcome, type Results } from "./report.ts"
import { adapters } from "./adapters.ts"
import type { Contender, MemorySample, Unavailable } from "./types.ts"

const benchDir = resolve(dirname(fileURLToPath(import.meta.url)), "..")

const usage = `usage: node bench/run.mjs [options]
  --quick                 small sizes and 2 repetitions (under 4 minutes)
  --figures=a,b           any of ${figureNames.join(", ")} (default: all)
  --contenders=a,b        ids or id prefixes: stepwise, stepwise-default, stepwise-evented, mastra,
                          mastra-default, mastra-evented, effect-workflow, floor, floor-loop, floor-effect
                          (default: all)
  --reps=N                repetitions per case (default: 5, quick: 2)
  --out=PATH              JSON output (default: results/latest.json and results/full.json, quick: results/quick.json)
  --help`

/** A bad command line: printed without a stack trace. */
class UsageError extends Error {}

interface Options {
  readonly quick: boolean
  readonly figures: ReadonlySet<FigureName>
  readonly contenders: ReadonlyArray<string> | undefined
  readonly reps: number | undefined
  readonly out: string | undefined
}

const parseArgs = (argv: ReadonlyArray<string>): Options => {
  let quick = false
  let figures: ReadonlySet<FigureName> = new Set(figureNames)
  let contenders: ReadonlyArray<string> | undefined
  let reps: number | undefined
  let out: string | undefined
  for (const arg of argv) {
    const [flag, value] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, ""]
    const list = value.split(",").map((s) => s.trim()).filter((s) => s.length > 0)
    switch (flag) {
      case "--quick":
        quick = true
        break
      case "--figures": {
        const unknown = list.filter((f) => !(figureNames as ReadonlyArray<string>).includes(f))
        if (unknown.length > 0) throw new UsageError(`unknown figure(s): ${unknown.join(", ")}\n${usage}`)
        figures = new Set(list as ReadonlyArray<FigureName>)
        break
      }
      case "--contenders":
        contenders = list
        break
      case "--reps":
        reps = Number(value)
        if (!Number.isInteger(reps) || reps < 1) throw new UsageError(`--reps needs a positive integer\n${usage}`)
        break
      case "--out":
        out = value
        break
      case "--help":
      case "-h":
        console.log(usage)
        process.exit(0)
        break
      default:
        throw new UsageError(`unknown argument ${arg}\n${usage}`)
    }
  }
  return { quick, figures, contenders, reps, out }
}

const fullSizes: Sizes = {
  stepRuns: 2_000,
  fanOutRuns: 1_000,
  writerChunks: 100_000,
  scaleChunks: 10_000,
  latencyWrites: 10_000,
  latencySpacingUs: 100,
  memoryRuns: 10_000,
  branchRuns: 300,
  concurrencies: [1, 10, 100],
  readers: [1, 10, 100],
  curveSteps: [10, 100, 1_000],
  curveTotalSteps: 20_000,
  curveConcurrencies: [1, 10, 100, 1_000],
  curveWaiting: [1_000, 10_000, 100_000]
}

const quickSizes: Sizes = {
  // With warm-ups of at least 100 runs (cases.ts), so that the engines' code is optimized before the timed
  // repetitions (with 10-run warm-ups and 100 runs, stepwise's default engine measured 157 µs per step against 55 in
  // full mode). 400 runs took the whole quick run to 4 minutes 22.
  stepRuns: 200,
  fanOutRuns: 100,
  writerChunks: 10_000,
  scaleChunks: 1_000,
  latencyWrites: 1_000,
  latencySpacingUs: 100,
  memoryRuns: 1_000,
  branchRuns: 50,
  concurrencies: [1, 10, 100],
  readers: [1, 10, 100],
  curveSteps: [10, 100, 1_000],
  curveTotalSteps: 1_000,
  curveConcurrencies: [1, 10, 100, 1_000],
  curveWaiting: [100, 300, 1_000]
}

/**
 * Full mode keeps under 30 minutes on 2 cores: a contender stops repeating a case once its
 * repetitions of it took CASE_BUDGET_MS (after at least MIN_REPS), or CASE_CAP_MS whatever the
 * count (one memory measurement of a slow peer can take a minute). Cheap contenders get all reps.
 */
const CASE_BUDGET_MS = 10_000
const CASE_CAP_MS = 20_000
const MIN_REPS = 2
/**
 * Past this much total time, remaining cases get MIN_REPS repetitions, or one when that took over CASE_BUDGET_MS.
 * The memory cases run last and take about 6 minutes even so (figure 5 and the waiting-runs curve: one repetition of
 * Mastra's evented engine at 10,000 runs takes 80 s, stepwise's evented engine at 100,000 about 65 s), so 20 minutes
 * keeps a run under 30.
 */
const RUN_DEADLINE_MS = 1_200_000
/**
 * The memory cases (figure 5 and the waiting-runs curve) run last and have nothing after them to keep time for.
 * There, CASE_BUDGET_MS and CASE_CAP_MS apply to a contender's mean repetition instead of its total, and past
 * RUN_DEADLINE_MS a repetition beyond MIN_REPS still runs when the mean says it ends before this mark. Fast
 * contenders (a few seconds per repetition) so get all their repetitions; a slow peer (50-80 s per repetition) gets one.
 */
const RUN_END_MS = 1_620_000
/**
 * A point of a cost curve past its first two is measured for a contender only if its time per repetition,
 * extrapolated from the contender's two previous points, stays under this (Mastra's engines snapshot the whole run
 * at every step, and its evented engine cancels waiting runs in O(n²): their last points would take many minutes).
 */
const CURVE_POINT_MS = { full: 120_000, quick: 20_000 } as const

/**
 * The contender with its memory measurement moved to a child process (child.ts, same Node, flags and loader), killed
 * after `timeoutMs`: each memory sample starts from a fresh heap, and one that never ends (Mastra's evented engine
 * canceling 10,000 runs) no longer keeps running beside every later measurement. Full mode only: a child costs 1.5 to
 * 4 s to start, which quick mode's small counts (where no peer hangs) cannot afford within its 4 minutes.
 */
const isolated = (contender: Contender, timeoutMs: number): Contender => ({
  ...contender,
  memoryWaiting: (n) =>
    new Promise<MemorySample | undefined>((resolvePromise, reject) => {
      const child = spawn(process.execPath, [...process.execArgv, join(benchDir, "src", "child.ts"), contender.id, String(n)], {
        cwd: benchDir,
        env: process.env,
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout.setEncoding("utf8").on("data", (text: string) => {
        stdout += text
      })
      child.stderr.setEncoding("utf8").on("data", (text: string) => {
        stderr = (stderr + text).slice(-4000)
      })
      const timer = setTimeout(() => {
        child.kill("SIGKILL")
        reject(new Error(`${contender.id} memory: no result after ${Math.round(timeoutMs / 1000)} s (its process was killed)`))
      }, timeoutMs)
      child.on("error", (error) => {
        clearTimeout(timer)
        reject(error)
      })
      child.on("exit", (code, signal) => {
        clearTimeout(timer)
        const line = stdout.split("\n").find((l) => l.startsWith("sample "))
        if (code === 0 && line !== undefined) {
          resolvePromise((JSON.parse(line.slice("sample ".length)) as MemorySample | null) ?? undefined)
        } else if (signal !== "SIGKILL") {
          // The error's own line (its message), not only the last frames of its stack.
          const lines = stderr.trim().split("\n")
          const message = lines.find((l) => /Error|error:/.test(l)) ?? lines[0] ?? ""
          const last = [message, ...lines.slice(-2)].filter((l, i, all) => l !== "" && all.indexOf(l) === i).join(" | ")
          reject(new Error(`${contender.id} memory: its process exited with ${signal ?? code}${last === "" ? "" : `: ${last}`}`))
        }
      })
    })
})

const selected = (id: string, filter: ReadonlyArray<string> | undefined): boolean =>
  filter === undefined || filter.some((f) => id === f || id.startsWith(`${f}-`))

const errorText = (error: unknown): string =>
  error instanceof Error ? error.message.split("\n")[0] ?? error.name : String(error)

const readVersion = (path: string): string => {
  try {
    const pkg: unknown = JSON.parse(readFileSync(path, "utf8"))
    return typeof pkg === "object" && pkg !== null && "version" in pkg && typeof pkg.version === "string" ? pkg.version : "?"
  } catch {
    return "not installed"
  }
}

const versions = (): Record<string, string> => ({
  stepwise: readVersion(join(benchDir, "..", "package.json")),
  "@mastra/core": readVersion(join(benchDir, "node_modules", "@mastra", "core", "package.json")),
  "@effect/workflow": readVersion(join(benchDir, "node_modules", "@effect", "workflow", "package.json")),
  "effect (bench)": readVersion(join(benchDir, "node_modules", "effect", "package.json")),
  "effect (stepwise)": readVersion(join(benchDir, "..", "node_modules", "effect", "package.json")),
  zod: readVersion(join(benchDir, "node_modules", "zod", "package.json")),
  tsx: readVersion(join(benchDir, "node_modules", "tsx", "package.json"))
})

const log = (message: string): void => {
  process.stderr.write(`${message}\n`)
}

const main = async (): Promise<void> => {
  const options = parseArgs(process.argv.slice(2))
  if (!canForceGc) throw new Error("run the bench with node --expose-gc (bench/run.mjs does)")
  const started = performance.now()
  const loadAtStart = os.loadavg()[0] ?? 0
  const sizes = options.quick ? quickSizes : fullSizes
  const reps = options.reps ?? (options.quick ? 2 : 5)
  const timeoutMs = options.quick ? 60_000 : 180_000
  // no budget when the repetitions are asked for explicitly, or in quick mode
  const budgeted = !options.quick && options.reps === undefined
  const budgetMs = budgeted ? CASE_BUDGET_MS : Number.POSITIVE_INFINITY
  const capMs = budgeted ? CASE_CAP_MS : Number.POSITIVE_INFINITY
  const deadline = budgeted ? started + RUN_DEADLINE_MS : Number.POSITIVE_INFINITY
  const end = budgeted ? started + RUN_END_MS : Number.POSITIVE_INFINITY
  let deadlineHitAt: string | null = null

  const contenders: Array<Contender> = []
  const unavailable: Array<Unavailable> = []
  for (const adapter of adapters) {
    if (options.contenders !== undefined && !options.contenders.some((f) => adapter.id.startsWith(f) || f.startsWith(adapter.id))) {
      continue
    }
    try {
      const loaded = await adapter.load()
      contenders.push(...loaded.contenders.filter((c) => selected(c.id, options.contenders)))
      unavailable.push(...loaded.unavailable.filter((u) => selected(u.id, options.contenders)))
    } catch (error) {
      unavailable.push({ id: adapter.id, label: adapter.label, reason: `could not load: ${errorText(error)}` })
    }
  }
  for (const u of unavailable) log(`not measured: ${u.label}: ${u.reason}`)
  if (contenders.length === 0) throw new Error("no contender selected")

  const cases: ReadonlyArray<Case> = buildCases(sizes, options.figures)
  const outcomes: Record<string, Record<string, Outcome>> = {}
  for (const c of cases) {
    outcomes[c.id] = Object.fromEntries(contenders.map((contender) => [contender.id, { samples: [], values: {} }]))
  }
  // memory runs last (each sample in a child process, see `isolated`): some engines leave canceled runs' timers behind, which
  // would slow every later GC; reported in figure order all the same. The memory cases run from the fewest waiting
  // runs to the most, so that each point of the curve can be extrapolated from the two before it.
  const memoryCases = cases.filter((c) => c.group === "memory").sort((a, b) => (a.waiting ?? 0) - (b.waiting ?? 0))
  const runOrder = [...cases.filter((c) => c.group !== "memory"), ...memoryCases]
  /** Per contender and curve, the x, work and mean milliseconds per repetition of the curve's points it ran. */
  const curvePoints: Record<string, Array<{ readonly x: number; readonly work: number; readonly ms: number }>> = {}
  const pointLimitMs = options.quick ? CURVE_POINT_MS.quick : CURVE_POINT_MS.full

  for (const c of runOrder) {
    const last = c.group === "memory"
    // Only the curves' own points (figure 8) may be left out; a point that is also a figure (1, 5, 6a) always runs.
    if (c.curve !== undefined && c.figure.startsWith("8")) {
      const { name, x, work } = c.curve
      for (const contender of contenders) {
        const [a, b] = (curvePoints[`${contender.id} ${name}`] ?? []).slice(-2)
        const outcome = outcomes[c.id]?.[contender.id]
        if (a === undefined || b === undefined || outcome === undefined) continue
        // The time per unit of work (a step, a waiting run) grows with x as it did between the two points before,
        // and is taken never to shrink.
        const perUnitA = a.ms / a.work
        const perUnitB = b.ms / b.work
        const exponent = Math.max(0, Math.log(perUnitB / perUnitA) / Math.log(b.x / a.x))
        const predicted = perUnitB * (x / b.x) ** exponent * work
        if (predicted > pointLimitMs) {
          outcome.skipped = `at ${b.x.toLocaleString("en-US")} a repetition took ${(b.ms / 1000).toFixed(1)} s, at ` +
            `${a.x.toLocaleString("en-US")} ${(a.ms / 1000).toFixed(1)} s; at ${x.toLocaleString("en-US")} it would take ` +
            `about ${Math.round(predicted / 1000)} s, over the ${pointLimitMs / 1000} s a curve point may take`
          log(`  ${contender.id}: not measured: ${outcome.skipped}`)
        }
      }
    }
    const byContender = outcomes[c.id]!
    const spentMs: Record<string, number> = {}
    log(`\n${c.id}: ${c.title}`)
    if (c.warm !== undefined) {
      for (const contender of contenders) {
        const outcome = byContender[contender.id]
        if (outcome === undefined || outcome.skipped !== undefined) continue
        try {
          const warmed = await withTimeout(`${contender.id} warm-up`, timeoutMs, c.warm(contender))
          if (warmed === undefined) outcome.unsupported = true
        } catch (error) {
          outcome.error = `warm-up: ${errorText(error)}`
          log(`  ${contender.id} warm-up failed: ${errorText(error)}`)
        }
      }
    }
    for (let rep = 0; rep < reps; rep++) {
      const order = contenders.map((_, i) => contenders[(i + rep) % contenders.length]).filter((x) => x !== undefined)
      for (const contender of order) {
        const outcome = byContender[contender.id]
        if (outcome === undefined || outcome.error !== undefined || outcome.unsupported === true) continue
        if (outcome.skipped !== undefined) continue
        // In the last case the budgets hold per repetition (its mean so far) and the end mark bounds the total.
        const done = outcome.samples.length
        const spent = spentMs[contender.id] ?? 0
        const charged = last ? (done === 0 ? 0 : spent / done) : spent
        if ((rep >= MIN_REPS && charged > budgetMs) || charged > capMs) continue
        const fitsBeforeEnd = last && done > 0 && performance.now() + spent / done < end
        if (performance.now() > deadline && (rep >= MIN_REPS || charged > budgetMs) && !fitsBeforeEnd) {
          if (deadlineHitAt === null) {
            deadlineHitAt = c.id
            log(`  past ${RUN_DEADLINE_MS / 60_000} minutes: at most ${MIN_REPS} repetitions per contender from here on`)
          }
          continue
        }
        await collectGarbage()
        const t0 = performance.now()
        try {
          // Full mode measures memory in child processes; quick mode's small counts run here, warmed by the cases before.
          const measured = c.group === "memory" && !options.quick
            ? await c.measure(isolated(contender, timeoutMs))
            : await withTimeout(`${contender.id} ${c.id}`, timeoutMs, c.measure(contender))
          if (measured === undefined) {
            outcome.unsupported = true
            continue
          }
          outcome.samples.push(measured.raw)
          for (const [key, value] of Object.entries(measured.values)) (outcome.values[key] ??= []).push(value)
          spentMs[contender.id] = (spentMs[contender.id] ?? 0) + performance.now() - t0
          const took = ((performance.now() - t0) / 1000).toFixed(1)
          const heapMiB = Math.round(process.memoryUsage().heapUsed / 2 ** 20)
          log(`  rep ${rep + 1}/${reps} ${contender.id.padEnd(16)} ${c.primary}=${measured.values[c.primary]?.toFixed(2)} (${took} s, heap ${heapMiB} MiB)`)
        } catch (error) {
          outcome.error = errorText(error)
          log(`  rep ${rep + 1}/${reps} ${contender.id} failed: ${errorText(error)}`)
        }
      }
    }
    if (c.curve !== undefined) {
      for (const contender of contenders) {
        const done = byContender[contender.id]?.samples.length ?? 0
        const spent = spentMs[contender.id]
        if (done > 0 && spent !== undefined) {
          ;(curvePoints[`${contender.id} ${c.curve.name}`] ??= []).push({ x: c.curve.x, work: c.curve.work, ms: spent / done })
        }
      }
    }
  }

  const results: Results = {
    meta: {
      date: new Date().toISOString(),
      mode: options.quick ? "quick" : "full",
      command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
      reps,
      caseBudget: budgeted
        ? {
          seconds: CASE_BUDGET_MS / 1000,
          minReps: MIN_REPS,
          capSeconds: CASE_CAP_MS / 1000,
          deadlineMinutes: RUN_DEADLINE_MS / 60_000,
          endMinutes: RUN_END_MS / 60_000
        }
        : null,
      deadlineHitAt,
      node: process.version,
      platform: `${os.platform()} ${os.release()} ${os.arch()}`,
      cpus: `${os.cpus().length} × ${os.cpus()[0]?.model.trim() ?? "?"}`,
      memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB RAM`,
      versions: versions(),
      loadAverage: { start: loadAtStart, end: os.loadavg()[0] ?? 0 },
      totalSeconds: (performance.now() - started) / 1000
    },
    cases,
    contenders,
    unavailable,
    outcomes
  }
  process.stdout.write(`${markdown(results)}\n`)
  // Every run writes latest.json (meta.mode says which kind it was) and its mode's own file, which the next run of the
  // other mode leaves alone: the README's tables cite full.json.
  const partial = options.figures.size < figureNames.length || options.contenders !== undefined || options.reps !== undefined
  const kind = partial ? "partial" : results.meta.mode
  const outs = options.out === undefined ? ["results/latest.json", `results/${kind}.json`] : [options.out]
  const document = json(results)
  for (const out of outs.map((o) => resolve(benchDir, o))) {
    mkdirSync(dirname(out), { recursive: true })
    writeFileSync(out, `${JSON.stringify(document, null, 2)}\n`)
    log(`wrote ${out}`)
  }
  if (options.figures.has("curves")) {
    const svg = resolve(benchDir, "results", kind === "full" && options.out === undefined ? "curves.svg" : `curves-${kind}.svg`)
    writeFileSync(svg, await curvesSvg(document as CurvesDocument))
    log(`wrote ${svg}`)
  }
}

main().then(
  // some engines leave timers behind (canceled 1-hour sleeps); the results are written, so leave now
  () => process.exit(0),
  (error: unknown) => {
    console.error(error instanceof UsageError ? error.message : error instanceof Error ? (error.stack ?? error.message) : error)
    process.exit(error instanceof UsageError ? 2 : 1)
  }
)
