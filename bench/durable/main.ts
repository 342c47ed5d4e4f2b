/**
 * Durable figures (issue 4), run under the machine's Node with the root's dependencies (no peers involved):
 *
 *   npm run bench:durable [-- --quick]
 *
 * 1. Per-step overhead: a 10-step workflow of no-op steps, on memory (the reference), SQLite (a temp file) and
 *    Postgres (DATABASE_URL), default engine; microseconds per durable step (median of interleaved repetitions).
 * 2. Chunk throughput: one step writes 100,000 chunks of 64 bytes to its run stream; one reader in another process
 *    (bench/durable/reader.ts, its own store connection and bus) reads them all; chunks/s end to end.
 * 3. The evented engine on the same stores: microseconds per step of the 10-step workflow, and milliseconds per run
 *    of a parallel of 10 no-op steps (where step ends arrive together), each beside the default engine.
 * 4. A large foreach (every item at once), both engines: milliseconds per run of 1,000 items in memory and of 200
 *    on SQLite and on Postgres. The evented engine walks the run after the items' ends, so this is where its walks'
 *    cost shows; on Postgres also with two evented instances (two workers: one bus, one store), where each instance
 *    meets step records the other wrote.
 * 5. Issue 18: a foreach of 1,000 I/O-bound items (each step waits 2 ms) on Postgres, one evented instance and two.
 *
 * Writes results/durable.json (the shape of results/latest.json, with the aims it checks) beside the markdown.
 */
import { Effect, Layer, Schema } from "effect"
import { spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs"
import { cpus, loadavg, platform, release, tmpdir, totalmem } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Sqlite from "stepwise/sqlite"
import { spread as summarize } from "../src/measure.js"

const quick = process.argv.includes("--quick")
const runs = quick ? 50 : 300
// The evented engine costs several times the default per step: fewer runs keep its figures to seconds.
const eventedRuns = quick ? 10 : 60
const reps = quick ? 2 : 5
const chunkCount = quick ? 10_000 : 100_000
const databaseUrl = process.env["DATABASE_URL"] ?? Postgres.defaultUrl

type StoreName = "memory" | "sqlite" | "postgres"

const noop = (i: number) =>
  Step.make({ id: `s${i}`, inputSchema: Schema.Number, outputSchema: Schema.Number, execute: ({ inputData }) => Effect.succeed(inputData) })
const tenSteps = Array.from({ length: 10 }, (_, i) => noop(i)).reduce(
  (b, step) => Workflow.andThen(step)(b),
  Workflow.make({ id: "bench-linear", inputSchema: Schema.Number, outputSchema: Schema.Number }) as Workflow.Builder<"bench-linear", number, number, number, never, never>
)
const linear = Workflow.commit(tenSteps)

const fanOut = Workflow.make({
  id: "bench-fan-out",
  inputSchema: Schema.Number,
  outputSchema: Schema.Record({ key: Schema.String, value: Schema.Number })
}).pipe(Workflow.parallel(Array.from({ length: 10 }, (_, i) => noop(i))), Workflow.commit)

/** Items of the large foreach, per store (figure 4). */
const foreachItems: Record<StoreName, number> = quick
  ? { memory: 200, sqlite: 50, postgres: 50 }
  : { memory: 1000, sqlite: 200, postgres: 200 }
const foreachWorkflow = (items: number) =>
  Workflow.make({
    id: `bench-foreach-${items}`,
    inputSchema: Schema.Array(Schema.Number),
    outputSchema: Schema.Array(Schema.Number)
  }).pipe(Workflow.foreach(noop(0), { concurrency: items }), Workflow.commit)

/**
 * Issue 18's I/O-bound foreach: 1,000 items (quick: 200), each step waiting 2 ms, on Postgres, with one evented
 * instance and with two over the same bus and store (in this process: the two share its CPU).
 */
const ioItems = quick ? 200 : 1000
const ioForeach = Workflow.make({
  id: "bench-foreach-io",
  inputSchema: Schema.Array(Schema.Number),
  outputSchema: Schema.Array(Schema.Number)
}).pipe(
  Workflow.foreach(
    Step.make({
      id: "io",
      inputSchema: Schema.Number,
      outputSchema: Schema.Number,
      execute: ({ inputData }) => Effect.as(Effect.sleep("2 millis"), inputData)
    }),
    { concurrency: ioItems }
  ),
  Workflow.commit
)

const payload = "x".repeat(64)
export const writer = Workflow.make({ id: "bench-chunks", inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
  Workflow.then(Step.make({
    id: "produce",
    inputSchema: Schema.Number,
    outputSchema: Schema.Number,
    execute: ({ inputData }) =>
      Effect.gen(function*() {
        const out = yield* Workflow.getWritable<string>()
        for (let i = 0; i < inputData; i++) yield* out.write(payload)
        yield* out.close
        return inputData
      })
  })),
  Workflow.commit
)

const storeLayer = (name: StoreName, file: string): Layer.Layer<RunStore.RunStore, unknown> =>
  name === "memory"
    ? RunStore.layerMemory
    : name === "sqlite"
    ? Sqlite.layer({ filename: file })
    : Postgres.layer({ url: databaseUrl })

type EngineName = "default" | "evented"
const engineOn = (name: StoreName, file: string, engine: EngineName = "default") =>
  (engine === "default" ? WorkflowEngine.layerDefault : WorkflowEngine.layerEvented).pipe(
    Layer.provideMerge(Layer.merge(EventBus.layerMemory, storeLayer(name, file)))
  )

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const spread = (xs: ReadonlyArray<number>) => `${Math.min(...xs).toFixed(0)}-${Math.max(...xs).toFixed(0)}`

const stepOverhead = (name: StoreName, file: string) =>
  Effect.gen(function*() {
    const engine = yield* WorkflowEngine.WorkflowEngine
    yield* Effect.flatMap(engine.start(linear, 0), (r) => r.result) // warm-up
    const t0 = performance.now()
    for (let i = 0; i < runs; i++) yield* Effect.flatMap(engine.start(linear, i), (r) => r.result)
    return ((performance.now() - t0) * 1000) / (runs * 10)
  }).pipe(Effect.provide(engineOn(name, file)), Effect.scoped)

/** Microseconds per step of the linear workflow and milliseconds per run of the parallel, on one engine and store. */
const engineFigures = (name: StoreName, file: string, engine: EngineName) =>
  Effect.gen(function*() {
    const instance = yield* WorkflowEngine.WorkflowEngine
    yield* Effect.flatMap(instance.start(linear, 0), (r) => r.result) // warm-up
    yield* Effect.flatMap(instance.start(fanOut, 0), (r) => r.result)
    const t0 = performance.now()
    for (let i = 0; i < eventedRuns; i++) yield* Effect.flatMap(instance.start(linear, i), (r) => r.result)
    const t1 = performance.now()
    for (let i = 0; i < eventedRuns; i++) yield* Effect.flatMap(instance.start(fanOut, i), (r) => r.result)
    const t2 = performance.now()
    return { usPerStep: ((t1 - t0) * 1000) / (eventedRuns * 10), msPerFanOut: (t2 - t1) / eventedRuns }
  }).pipe(Effect.provide(engineOn(name, file, engine)), Effect.scoped)

const reader = fileURLToPath(new URL("./reader.ts", import.meta.url))

/** Starts the writer here and reads in another process; answers chunks/s from start to the reader's last chunk. */
const throughput = (name: "sqlite" | "postgres", file: string) =>
  Effect.gen(function*() {
    const engine = yield* WorkflowEngine.WorkflowEngine
    const runId = `bench-chunks-${crypto.randomUUID()}`
    const child = spawn(process.execPath, ["--import", "tsx", reader], {
      env: { ...process.env, STORE: name, DB: name === "sqlite" ? file : databaseUrl, RUN_ID: runId, COUNT: String(chunkCount) },
      stdio: ["ignore", "pipe", "inherit"]
    })
    let out = ""
    child.stdout.on("data", (d) => (out += d))
    const ready = new Promise<void>((resolve) => child.stdout.once("data", () => resolve()))
    yield* Effect.promise(() => ready) // the reader is up and waiting for the run
    const started = Date.now()
    const run = yield* engine.start(writer, chunkCount, { runId })
    yield* run.result
    const writeDone = Date.now()
    const code = yield* Effect.promise(() => new Promise<number | null>((resolve) => child.on("exit", resolve)))
    const result = JSON.parse(out.trim().split("\n").at(-1)!) as { count: number; lastAt: number }
    if (code !== 0 || result.count !== chunkCount) throw new Error(`reader failed: ${out}`)
    return {
      endToEnd: (chunkCount / (result.lastAt - started)) * 1000,
      write: (chunkCount / (writeDone - started)) * 1000
    }
  }).pipe(Effect.provide(engineOn(name, file)), Effect.scoped)

/**
 * Milliseconds for one run of the large foreach (after a warm-up run), on one engine and store. `workers: 2` adds a
 * second evented instance over the same bus and store, which takes its share of the commands.
 */
const foreachRun = (name: StoreName, file: string, engine: EngineName, workers: 1 | 2 = 1, io = false) =>
  Effect.gen(function*() {
    const items = io ? ioItems : foreachItems[name]
    const wf = io ? ioForeach : foreachWorkflow(items)
    const input = Array.from({ length: items }, (_, i) => i)
    const instance = yield* WorkflowEngine.WorkflowEngine
    if (workers === 2) {
      const shared = Layer.merge(
        Layer.succeed(EventBus.EventBus, yield* EventBus.EventBus),
        Layer.succeed(RunStore.RunStore, yield* RunStore.RunStore)
      )
      yield* Layer.build(
        // A layer of its own (`layerEventedWith` makes a new one per call), so that nothing memoized stands in for it.
        Layer.provideMerge(WorkflowEngine.register(wf), WorkflowEngine.layerEventedWith({})).pipe(Layer.provide(shared))
      )
    }
    yield* Effect.flatMap(instance.start(wf, input), (r) => r.result) // warm-up
    const t0 = performance.now()
    yield* Effect.flatMap(instance.start(wf, input), (r) => r.result)
    return performance.now() - t0
  }).pipe(Effect.provide(engineOn(name, file, engine)), Effect.scoped)

/** A case of results/durable.json, in the shape of results/latest.json (`npm run bench`). */
interface Metric {
  readonly key: string
  readonly label: string
  readonly better: "lower" | "higher"
  readonly digits: number
}
const durableCase = (
  id: string,
  figure: string,
  title: string,
  floor: string,
  metrics: ReadonlyArray<Metric>,
  values: Record<string, Record<string, ReadonlyArray<number>>>
) => ({
  id,
  figure,
  title,
  floor,
  primary: metrics[0]!.key,
  metrics,
  results: Object.fromEntries(Object.entries(values).map(([contender, byMetric]) => [contender, {
    summary: Object.fromEntries(Object.entries(byMetric).map(([key, xs]) => [key, summarize(xs)])),
    values: byMetric,
    samples: []
  }]))
})

const usPerStep: Metric = { key: "usPerStep", label: "µs/step", better: "lower", digits: 0 }

/** The aims of issue 18 for the durable stores: µs per step of the default engine. */
const aims = { sqlite: 300, postgres: 1000 } as const

const program = Effect.gen(function*() {
  const started = performance.now()
  const loadAtStart = loadavg()[0]!
  const dir = mkdtempSync(join(tmpdir(), "stepwise-bench-"))
  const stores: ReadonlyArray<StoreName> = ["memory", "sqlite", "postgres"]
  const perStep: Record<string, Array<number>> = { memory: [], sqlite: [], postgres: [] }
  for (let rep = 0; rep < reps; rep++) {
    for (const name of rep % 2 === 0 ? stores : [...stores].reverse()) {
      perStep[name]!.push(yield* stepOverhead(name, join(dir, `steps-${rep}.db`)))
    }
  }
  const chunks: Record<string, Array<{ endToEnd: number; write: number }>> = { sqlite: [], postgres: [] }
  for (let rep = 0; rep < (quick ? 1 : 3); rep++) {
    for (const name of ["sqlite", "postgres"] as const) chunks[name]!.push(yield* throughput(name, join(dir, `chunks-${rep}.db`)))
  }
  const durable = ["sqlite", "postgres"] as const
  const engines: ReadonlyArray<EngineName> = ["default", "evented"]
  const byEngine: Record<string, Array<{ usPerStep: number; msPerFanOut: number }>> = {}
  for (let rep = 0; rep < reps; rep++) {
    for (const name of durable) {
      for (const engine of rep % 2 === 0 ? engines : [...engines].reverse()) {
        ;(byEngine[`${name} ${engine}`] ??= []).push(yield* engineFigures(name, join(dir, `engines-${rep}.db`), engine))
      }
    }
  }
  const foreachMs: Record<string, Array<number>> = {}
  const ioMs: Record<number, Array<number>> = {}
  for (let rep = 0; rep < reps; rep++) {
    for (const name of stores) {
      for (const engine of rep % 2 === 0 ? engines : [...engines].reverse()) {
        ;(foreachMs[`${name} ${engine}`] ??= []).push(yield* foreachRun(name, join(dir, `foreach-${rep}.db`), engine))
      }
    }
    ;(foreachMs["postgres evented 2"] ??= []).push(yield* foreachRun("postgres", "", "evented", 2))
    for (const workers of rep % 2 === 0 ? [1, 2] as const : [2, 1] as const) {
      ;(ioMs[workers] ??= []).push(yield* foreachRun("postgres", "", "evented", workers, true))
    }
  }
  console.log(`# stepwise durable figures (Node ${process.version}, ${quick ? "quick" : "full"} mode)\n`)
  console.log(`Per-step overhead, 10-step linear workflow of no-op steps, ${runs} runs one after another, default engine:\n`)
  console.log("| store | µs per step (median) | spread | × memory |")
  console.log("|---|---:|---:|---:|")
  for (const name of stores) {
    const m = median(perStep[name]!)
    console.log(`| ${name} | ${m.toFixed(0)} | ${spread(perStep[name]!)} | ${(m / median(perStep["memory"]!)).toFixed(1)} |`)
  }
  console.log(`\nChunk throughput, ${chunkCount.toLocaleString()} chunks of 64 bytes, reader in another process:\n`)
  console.log("| store | end to end, chunks/s (median) | writer alone, chunks/s |")
  console.log("|---|---:|---:|")
  for (const name of ["sqlite", "postgres"] as const) {
    console.log(
      `| ${name} | ${median(chunks[name]!.map((c) => c.endToEnd)).toFixed(0)} | ${median(chunks[name]!.map((c) => c.write)).toFixed(0)} |`
    )
  }
  console.log(
    `\nBoth engines, ${eventedRuns} runs one after another of the 10-step workflow and of a parallel of 10 no-op steps ` +
      `(medians of ${reps}):\n`
  )
  console.log("| store | engine | µs per step | ms per parallel of 10 | evented ÷ default (step, parallel) |")
  console.log("|---|---|---:|---:|---:|")
  for (const name of durable) {
    const base = byEngine[`${name} default`]!
    for (const engine of engines) {
      const xs = byEngine[`${name} ${engine}`]!
      const step = median(xs.map((x) => x.usPerStep))
      const fan = median(xs.map((x) => x.msPerFanOut))
      const ratio = engine === "default"
        ? ""
        : `${(step / median(base.map((x) => x.usPerStep))).toFixed(2)}, ${(fan / median(base.map((x) => x.msPerFanOut))).toFixed(2)}`
      console.log(`| ${name} | ${engine} | ${step.toFixed(0)} | ${fan.toFixed(1)} | ${ratio} |`)
    }
  }
  console.log(`\nA foreach of every item at once, one run (medians of ${reps}):\n`)
  console.log("| store | items | default, ms per run | evented, ms per run | evented ÷ default |")
  console.log("|---|---:|---:|---:|---:|")
  for (const name of stores) {
    const d = median(foreachMs[`${name} default`]!)
    const e = median(foreachMs[`${name} evented`]!)
    console.log(`| ${name} | ${foreachItems[name]} | ${d.toFixed(0)} | ${e.toFixed(0)} | ${(e / d).toFixed(1)} |`)
  }
  const d = median(foreachMs["postgres default"]!)
  const e2 = median(foreachMs["postgres evented 2"]!)
  console.log(`| postgres, 2 evented workers | ${foreachItems.postgres} | ${d.toFixed(0)} | ${e2.toFixed(0)} | ${(e2 / d).toFixed(1)} |`)

  const io1 = median(ioMs[1]!)
  const io2 = median(ioMs[2]!)
  console.log(
    `\nA foreach of ${ioItems} I/O-bound items (each step waits 2 ms), every item at once, evented engine on Postgres, ` +
      `one run (medians of ${reps}):\n`
  )
  console.log("| evented instances | ms per run | ÷ one instance |\n|---:|---:|---:|")
  console.log(`| 1 | ${io1.toFixed(0)} | |\n| 2 (one process) | ${io2.toFixed(0)} | ${(io2 / io1).toFixed(2)} |`)

  const aimRows = [
    ...durable.map((name) => {
      const measured = median(perStep[name]!)
      return { aim: `${name}: default engine < ${aims[name]} µs per step`, measured, met: measured < aims[name] }
    }),
    { aim: `two evented instances on a foreach of ${ioItems} items of 2 ms: ≤ 0.6× one`, measured: io2 / io1, met: io2 / io1 <= 0.6 }
  ]
  console.log("\n| aim (issue 18) | measured | |\n|---|---:|---|")
  for (const a of aimRows) console.log(`| ${a.aim} | ${a.measured < 10 ? a.measured.toFixed(2) : a.measured.toFixed(0)} | ${a.met ? "met" : "**not met**"} |`)

  const contenders = [
    ...stores.map((name) => ({ id: `default-${name}`, label: `stepwise default engine, ${name} store`, kind: "stepwise" })),
    ...stores.map((name) => ({ id: `evented-${name}`, label: `stepwise evented engine, ${name} store`, kind: "stepwise" })),
    { id: "evented-postgres-2", label: "stepwise evented engine, 2 instances over one bus and Postgres store", kind: "stepwise" }
  ]
  const byStoreEngine = (pick: (x: { usPerStep: number; msPerFanOut: number }) => number, key: string) =>
    Object.fromEntries(Object.entries(byEngine).map(([k, xs]) => [k.split(" ").reverse().join("-"), { [key]: xs.map(pick) }]))
  const results = {
    meta: {
      date: new Date().toISOString(),
      mode: quick ? "quick" : "full",
      command: `npm run bench:durable${quick ? " -- --quick" : ""}`,
      reps,
      sizes: { runs, eventedRuns, chunkCount, foreachItems },
      node: process.version,
      platform: `${platform()} ${release()} ${process.arch}`,
      cpus: `${cpus().length} × ${cpus()[0]?.model.trim() ?? "?"}`,
      memory: `${Math.round(totalmem() / 2 ** 30)} GiB RAM`,
      loadAverage: { start: loadAtStart, end: loadavg()[0]! },
      totalSeconds: (performance.now() - started) / 1000
    },
    unavailable: [],
    contenders,
    cases: [
      durableCase(
        "durable.steps",
        "1. Durable step cost",
        `10-step linear workflow of no-op steps, ${runs} runs one after another, default engine`,
        "default-memory",
        [usPerStep],
        Object.fromEntries(stores.map((name) => [`default-${name}`, { usPerStep: perStep[name]! }]))
      ),
      durableCase(
        "durable.chunks",
        "2. Chunks to a reader in another process",
        `one step writes ${chunkCount.toLocaleString("en-US")} chunks of 64 bytes; a reader in another process reads them`,
        "default-sqlite",
        [
          { key: "chunksPerSec", label: "chunks/s end to end", better: "higher", digits: 0 },
          { key: "writerChunksPerSec", label: "chunks/s, writer alone", better: "higher", digits: 0 }
        ],
        Object.fromEntries((["sqlite", "postgres"] as const).map((name) => [`default-${name}`, {
          chunksPerSec: chunks[name]!.map((c) => c.endToEnd),
          writerChunksPerSec: chunks[name]!.map((c) => c.write)
        }]))
      ),
      durableCase(
        "durable.engines.steps",
        "3. Both engines on the durable stores",
        `10-step linear workflow of no-op steps, ${eventedRuns} runs one after another`,
        "default-sqlite",
        [usPerStep],
        byStoreEngine((x) => x.usPerStep, "usPerStep")
      ),
      durableCase(
        "durable.engines.fanout",
        "3. Both engines on the durable stores",
        `parallel of 10 no-op steps, ${eventedRuns} runs one after another`,
        "default-sqlite",
        [{ key: "msPerRun", label: "ms/run", better: "lower", digits: 1 }],
        byStoreEngine((x) => x.msPerFanOut, "msPerRun")
      ),
      durableCase(
        "durable.foreach",
        "4. A large foreach",
        `a foreach of every item at once, one run (memory ${foreachItems.memory} items, SQLite and Postgres ${foreachItems.postgres})`,
        "default-memory",
        [{ key: "msPerRun", label: "ms/run", better: "lower", digits: 0 }],
        Object.fromEntries(Object.entries(foreachMs).map(([k, xs]) => [
          k === "postgres evented 2" ? "evented-postgres-2" : k.split(" ").reverse().join("-"),
          { msPerRun: xs }
        ]))
      ),
      durableCase(
        "durable.foreach.io",
        "5. Two evented instances on an I/O-bound foreach",
        `a foreach of ${ioItems} items at once, each step waiting 2 ms, evented engine on Postgres, one run`,
        "evented-postgres",
        [{ key: "msPerRun", label: "ms/run", better: "lower", digits: 0 }],
        { "evented-postgres": { msPerRun: ioMs[1]! }, "evented-postgres-2": { msPerRun: ioMs[2]! } }
      )
    ],
    aims: aimRows
  }
  const out = fileURLToPath(new URL("../results/durable.json", import.meta.url))
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`)
  console.error(`\nwrote ${out}`)
})

Effect.runPromise(program).catch((error) => {
  console.error(error)
  process.exit(1)
})
