/**
 * The evented engine across processes, on real brokers (issue 16, item 7):
 *
 *   npm run bench:cluster [-- --quick] [-- --buses=redis,postgres] [-- --reps=N] [-- --cpu-prof]
 *
 * Deployments, each measured in every repetition (interleaved, order rotated):
 * - `redis`: 2 worker processes (worker.ts: `layerEventedWith` + `register`) on `Redis.layerBus` and `Postgres.layer`,
 *   driven by this process through `WorkflowEngine.layerClient` over the same bus and store;
 * - `postgres`: the same on `Postgres.layerBus` alone (skipped, and reported "not available", while the build has no
 *   such layer);
 * - the in-process references: `layerEvented` in this one process on `EventBus.layerMemory` with the same Postgres
 *   store, and on `EventBus.layerMemory` + `RunStore.layerMemory`.
 *
 * Figures:
 * 1. µs per step: runs of a 10-step workflow of no-op steps, 10 in flight; wall time / (runs × 10).
 * 2. chunks/s: a step writes 100,000 chunks of 64 bytes (`Workflow.getWritable`); this process reads them with
 *    `run.readable()`; chunks / (last read − first write).
 * 3. write→read latency: a step writes a chunk every 5 ms, each with its write time (`performance.timeOrigin +
 *    performance.now()`, comparable between processes of one machine); this process records receipt − write; p50, p99.
 *
 * Each cross-process deployment gets a database of its own for the whole run (created here, dropped at the end with
 * `WITH (FORCE)`), as does the in-process Postgres reference, and a Redis key prefix of its own per repetition
 * (its keys deleted at the end). Workers are spawned afresh per repetition and stopped after it (SIGTERM, then
 * SIGKILL); they also exit when this process's end of their stdin closes, so none outlives the bench.
 *
 * Report on stdout (markdown), progress on stderr, numbers in bench/results/cluster.json (cluster-quick.json with
 * `--quick`, cluster-partial.json with `--figures`). `--cpu-prof` runs the workers with `node --cpu-prof`, profiles in
 * bench/results/profiles/.
 */
import { NodeRuntime } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { loadavg } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { Redis as RedisClient } from "ioredis"
import { type Run, RunStore, WorkflowEngine } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Redis from "stepwise/redis"
import { commandLine, int, machine, median, ms, ownCpuMs, percentile, ratio, stats } from "../shared/report.js"
import {
  type Brokers,
  busLayer,
  type BusName,
  chunks,
  linear,
  postgresLayerBus,
  type Tick,
  ticks,
  wallMs,
  workflows
} from "./deployment.js"

const help = `npm run bench:cluster [-- options]

  --quick               small sizes, 2 repetitions (a smoke run, about a minute)
  --buses=redis,postgres  the cross-process deployments to measure (default both; postgres needs Postgres.layerBus)
  --reps=N              repetitions (default 3, quick 2)
  --figures=steps,chunks,latency  the figures to measure (default all; one alone is for profiling)
  --cpu-prof            run the workers under node --cpu-prof (profiles in bench/results/profiles/<worker>/)

env: REDIS_URL (default ${Redis.defaultUrl}), DATABASE_URL (default ${Postgres.defaultUrl}; the bench creates and drops
     databases of its own beside it)`

const { args, cpuProf, option, quick, reps } = commandLine(help)
const requestedBuses = (option("buses") ?? "redis,postgres").split(",").filter((b) => b !== "")
for (const bus of requestedBuses) {
  if (bus !== "redis" && bus !== "postgres") throw new Error(`--buses: unknown bus "${bus}" (redis, postgres)`)
}
const figures = new Set((option("figures") ?? "steps,chunks,latency").split(","))
for (const figure of figures) {
  if (!["steps", "chunks", "latency"].includes(figure)) throw new Error(`--figures: unknown figure "${figure}"`)
}

const sizes = {
  /** Runs of figure 1 per measurement, and how many are in flight at once. */
  runs: quick ? 30 : 60,
  inFlight: 10,
  warmUpRuns: 20,
  chunks: quick ? 10_000 : 100_000,
  ticks: quick ? 200 : 1_000,
  tickEveryMs: 5,
  floorCommits: quick ? 100 : 300
}
const databaseUrl = process.env["DATABASE_URL"] ?? Postgres.defaultUrl
const redisUrl = process.env["REDIS_URL"] ?? Redis.defaultUrl
const stamp = `${process.pid}_${Date.now()}`
const benchDir = join(dirname(fileURLToPath(import.meta.url)), "..")
const workerScript = fileURLToPath(new URL("./worker.ts", import.meta.url))

interface Deployment {
  readonly id: string
  readonly label: string
  readonly bus: BusName
  readonly store: "memory" | "postgres"
  /** Executed by worker processes and driven by a client here; otherwise one evented instance in this process. */
  readonly crossProcess: boolean
}

const deployments: ReadonlyArray<Deployment> = [
  { id: "memory", label: "in process: memory bus + memory store", bus: "memory", store: "memory", crossProcess: false },
  {
    id: "memory-postgres",
    label: "in process: memory bus + Postgres store",
    bus: "memory",
    store: "postgres",
    crossProcess: false
  },
  { id: "redis", label: "2 workers + client: Redis bus + Postgres store", bus: "redis", store: "postgres", crossProcess: true },
  { id: "postgres", label: "2 workers + client: Postgres alone (bus and store)", bus: "postgres", store: "postgres", crossProcess: true }
]
const unavailable = requestedBuses.includes("postgres") && postgresLayerBus === undefined
  ? [{ id: "postgres", reason: "Postgres.layerBus is not in this build of stepwise" }]
  : []
const measured = deployments.filter((d) =>
  !d.crossProcess || (requestedBuses.includes(d.id) && !unavailable.some((u) => u.id === d.id))
)

// ---------------------------------------------------------------------------------------------------------------
// Brokers: databases and Redis keys of this run only

/**
 * A database of this run's own for `suffix`, dropped (with its connections) when the scope closes. `admin` is a
 * connection to DATABASE_URL that outlives every such scope: a layer provided to the acquisition alone would be
 * closed by the time the release needs it.
 */
const freshDatabase = (admin: SqlClient.SqlClient, suffix: string) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const name = `stepwise_bench_cluster_${stamp}_${suffix}`
      yield* admin.unsafe(`CREATE DATABASE ${name}`)
      const url = new URL(databaseUrl)
      url.pathname = `/${name}`
      return { name, url: url.toString() }
    }),
    ({ name }) => admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).pipe(Effect.ignoreLogged)
  )

const redisPrefix = `stepwise-bench-cluster:${stamp}:`

/** Deletes this run's Redis keys when the scope closes (they would otherwise expire after an hour). */
const redisCleanup = Effect.addFinalizer(() =>
  Effect.tryPromise(async () => {
    const client = new RedisClient(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 })
    client.on("error", () => {})
    try {
      await client.connect()
      let cursor = "0"
      do {
        const [next, keys] = await client.scan(cursor, "MATCH", `${redisPrefix}*`, "COUNT", 1000)
        cursor = next
        if (keys.length > 0) await client.unlink(...keys)
      } while (cursor !== "0")
    } finally {
      client.disconnect()
    }
  }).pipe(Effect.ignoreLogged)
)

// ---------------------------------------------------------------------------------------------------------------
// Worker processes

const children = new Set<ChildProcess>()
// Whatever ends this process (an error, a signal runMain turns into interruption), no worker stays behind.
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL")
})

interface Worker {
  readonly child: ChildProcess
  readonly lines: Array<string>
  stderr: string
  readonly exited: Promise<number | null>
}

const spawnWorker = (env: Record<string, string>, name: string) =>
  Effect.acquireRelease(
    Effect.sync((): Worker => {
      // A directory per worker, names left to Node: a fixed name would be shared with tsx's loader thread, whose
      // profile Node writes last (the main thread's is CPU.<date>.<time>.<pid>.0.<n>.cpuprofile).
      const flags = cpuProf ? ["--cpu-prof", `--cpu-prof-dir=${join(benchDir, "results", "profiles", name)}`] : []
      const child = spawn(process.execPath, [...flags, "--import", "tsx", workerScript], {
        env: { ...process.env, ...env },
        stdio: ["pipe", "pipe", "pipe"]
      })
      children.add(child)
      const worker: Worker = {
        child,
        lines: [],
        stderr: "",
        exited: new Promise((resolve) =>
          child.on("exit", (code) => {
            children.delete(child)
            resolve(code)
          })
        )
      }
      let partial = ""
      child.stdout!.on("data", (data) => {
        const lines = (partial + String(data)).split("\n")
        partial = lines.pop()!
        worker.lines.push(...lines)
      })
      child.stderr!.on("data", (data) => (worker.stderr += String(data)))
      return worker
    }),
    (worker) =>
      Effect.promise(async () => {
        if (worker.child.exitCode !== null || worker.child.signalCode !== null) return
        worker.child.kill("SIGTERM")
        const timeout = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), 8_000).unref())
        if ((await Promise.race([worker.exited, timeout])) === "timeout") {
          worker.child.kill("SIGKILL")
          await worker.exited
        }
      })
  )

const ready = (worker: Worker, name: string) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 60_000
    while (!worker.lines.includes("ready")) {
      if (worker.child.exitCode !== null || Date.now() > deadline) {
        return yield* Effect.die(new Error(`worker ${name} did not get ready; stderr:\n${worker.stderr.slice(-3000)}`))
      }
      yield* Effect.sleep("20 millis")
    }
  })

// ---------------------------------------------------------------------------------------------------------------
// CPU time: wall time on a shared 2-core machine says little about cost; CPU time says what each side spent

/** CPU ms (user + system) a process has used, from /proc (Linux; NaN elsewhere). Clock ticks: 10 ms resolution. */
const processCpuMs = (pid: number | undefined): number => {
  try {
    // Fields after the command name (which may hold spaces), from "state": utime and stime are the 12th and 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
  } catch {
    return NaN
  }
}

/** CPU ms spent meanwhile by the workers (summed) and by this process (the client, or the whole in-process engine). */
const cpuDuring = <A, E, R>(workers: ReadonlyArray<ChildProcess>, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const workersCpu = () => workers.reduce((sum, w) => sum + processCpuMs(w.pid), 0)
    const w0 = workersCpu()
    const c0 = ownCpuMs()
    const value = yield* effect
    return { value, cpu: { workers: workers.length === 0 ? NaN : workersCpu() - w0, here: ownCpuMs() - c0 } }
  })

// ---------------------------------------------------------------------------------------------------------------
// Figures

type Engine = WorkflowEngine.WorkflowEngine["Type"]

const range = (n: number) => Array.from({ length: n }, (_, i) => i)

const linearRuns = (engine: Engine, runs: number) =>
  Effect.forEach(
    range(runs),
    (i) =>
      Effect.flatMap(engine.start(linear, i), (run) => run.result).pipe(
        Effect.filterOrDieMessage((out) => out === i, `run ${i} of the linear workflow answered another number`)
      ),
    { concurrency: sizes.inFlight, discard: true }
  )

/** Figure 1: µs per step. */
const stepFigure = (engine: Engine) =>
  Effect.gen(function*() {
    const t0 = performance.now()
    yield* linearRuns(engine, sizes.runs)
    return ((performance.now() - t0) * 1000) / (sizes.runs * 10)
  })

/** Figure 2: chunks/s from the first write to the last read, and the writer's own rate. */
const chunkFigure = (engine: Engine, count: number) =>
  Effect.gen(function*() {
    const run = yield* engine.start(chunks, count)
    let read = 0
    let lastReadAt = 0
    const [span] = yield* Effect.all([
      run.result,
      Stream.runForEachChunk(run.readable<string>(), (chunk) =>
        Effect.sync(() => {
          read += chunk.length
          lastReadAt = wallMs()
        }))
    ], { concurrency: 2 })
    if (read !== count) return yield* Effect.dieMessage(`the reader got ${read} chunks of ${count}`)
    return {
      endToEnd: (count * 1000) / (lastReadAt - span.firstWriteAt),
      writer: (count * 1000) / (span.lastWriteAt - span.firstWriteAt)
    }
  })

/** What went wrong with a stream of ticks: what the reader got, what the store holds, and the run's events. */
const streamReport = (run: Run.Run<unknown, unknown>, received: ReadonlyArray<Tick>) =>
  Effect.gen(function*() {
    const show = (ticks: ReadonlyArray<Tick>) => {
      const firstBreak = ticks.findIndex((tick, i) => tick.i !== i)
      const writers = [...new Set(ticks.map((t) => `pid ${t.pid} attempt ${t.attempt}`))]
      const around = firstBreak < 0 ? [] : ticks.slice(Math.max(0, firstBreak - 3), firstBreak + 5)
      return `${ticks.length} ticks, ${new Set(ticks.map((t) => t.i)).size} distinct, from ${writers.join(" and ")}` +
        (firstBreak < 0 ? "" : `; first out of order at ${firstBreak}: ${around.map((t) => `${t.i} (${t.pid}/${t.attempt})`).join(", ")}`)
    }
    const stored = Array.from(yield* Stream.runCollect(run.readable<Tick>()).pipe(Effect.orDie))
    const events = Array.from(yield* Stream.runCollect(run.events()).pipe(Effect.orDie))
    return new Error(
      `run ${run.runId}: the reader got ${show(received)}; the store holds ${show(stored)}; events: ` +
        events.map((e) => `${e.type}${"payload" in e && typeof e.payload === "object" ? ` ${JSON.stringify(e.payload).slice(0, 120)}` : ""}`)
          .join(" | ")
    )
  })

/** Figure 3: write→read latency, p50 and p99 in ms. */
const latencyFigure = (engine: Engine) =>
  Effect.gen(function*() {
    const run = yield* engine.start(ticks, { count: sizes.ticks, everyMs: sizes.tickEveryMs })
    const samples: Array<number> = []
    const received: Array<Tick> = []
    yield* Effect.all([
      run.result,
      Stream.runForEachChunk(run.readable<Tick>(), (chunk) =>
        Effect.sync(() => {
          const now = wallMs()
          for (const tick of chunk) {
            received.push(tick)
            samples.push(now - tick.at)
          }
        }))
    ], { concurrency: 2 })
    if (received.some((tick, i) => tick.i !== i) || received.length !== sizes.ticks) {
      return yield* Effect.die(yield* streamReport(run, received))
    }
    const sorted = samples.sort((a, b) => a - b)
    return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted.at(-1)! }
  })

/**
 * The floor under figure 3 on a Postgres store: a one-row INSERT committed on its own (what an idle writer's chunk
 * costs before any reader can see it), as often as the ticks come. p50 and p99 of the commit's round trip, in ms.
 */
const commitFloor = (url: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE IF NOT EXISTS bench_commit_floor (id SERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL)`
    const samples: Array<number> = []
    for (let i = 0; i < sizes.floorCommits; i++) {
      const t = performance.now()
      yield* sql`INSERT INTO bench_commit_floor (at) VALUES (${wallMs()})`
      samples.push(performance.now() - t)
      yield* Effect.sleep(sizes.tickEveryMs)
    }
    const sorted = samples.sort((a, b) => a - b)
    return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) }
  }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 })))

/** CPU ms of one figure's measurement: the workers' (summed; NaN in process) and this process's. */
interface Cpu {
  readonly workers: number
  readonly here: number
}

interface Sample {
  readonly usPerStep: number
  readonly chunks: { readonly endToEnd: number; readonly writer: number }
  readonly latency: { readonly p50: number; readonly p99: number; readonly max: number }
  readonly cpu: { readonly steps: Cpu; readonly chunks: Cpu; readonly latency: Cpu }
}

const noCpu: Cpu = { workers: NaN, here: NaN }

const storeLayer = (deployment: Deployment, url: string): Layer.Layer<RunStore.RunStore, unknown> =>
  deployment.store === "memory" ? RunStore.layerMemory : Postgres.layer({ url })

/** One repetition of every figure on one deployment, from a fresh engine (and fresh workers). */
const measure = (deployment: Deployment, rep: number, databases: Record<string, string>) =>
  Effect.gen(function*() {
    const phase0 = performance.now()
    const url = databases[deployment.id] ?? ""
    const brokers: Brokers = { databaseUrl: url, redisUrl, redisPrefix: `${redisPrefix}${rep}:` }
    let engineLayer: Layer.Layer<WorkflowEngine.WorkflowEngine, unknown>
    const workers: Array<ChildProcess> = []
    if (deployment.crossProcess) {
      const started = []
      for (const n of [1, 2]) {
        const name = `cluster-${deployment.id}-r${rep}-w${n}`
        const env = {
          BUS: deployment.bus,
          DATABASE_URL: url,
          REDIS_URL: redisUrl,
          REDIS_PREFIX: brokers.redisPrefix,
          WORKER_ID: name
        }
        started.push({ name, worker: yield* spawnWorker(env, name) })
      }
      for (const { name, worker } of started) {
        yield* ready(worker, name)
        workers.push(worker.child)
      }
      engineLayer = WorkflowEngine.register(...workflows).pipe(
        Layer.provideMerge(WorkflowEngine.layerClient),
        Layer.provide(busLayer(deployment.bus, brokers)),
        Layer.provide(storeLayer(deployment, url))
      )
    } else {
      engineLayer = WorkflowEngine.register(...workflows).pipe(
        Layer.provideMerge(WorkflowEngine.layerEvented),
        Layer.provide(busLayer(deployment.bus, brokers)),
        Layer.provide(storeLayer(deployment, url))
      )
    }
    const engine = yield* Effect.flatMap(Layer.build(engineLayer), (context) =>
      Effect.provide(WorkflowEngine.WorkflowEngine, context))
    const setupMs = performance.now() - phase0
    // Warm-up, on both sides of the bus (the workers are new each repetition).
    yield* linearRuns(engine, sizes.warmUpRuns)
    yield* chunkFigure(engine, Math.min(5_000, sizes.chunks))
    // A figure left out (--figures) is NaN: "–" in the table, null in the JSON.
    const steps = figures.has("steps")
      ? yield* cpuDuring(workers, stepFigure(engine))
      : { value: NaN, cpu: noCpu }
    const chunkRates = figures.has("chunks")
      ? yield* cpuDuring(workers, chunkFigure(engine, sizes.chunks))
      : { value: { endToEnd: NaN, writer: NaN }, cpu: noCpu }
    const latency = figures.has("latency")
      ? yield* cpuDuring(workers, latencyFigure(engine))
      : { value: { p50: NaN, p99: NaN, max: NaN }, cpu: noCpu }
    const sample: Sample = {
      usPerStep: steps.value,
      chunks: chunkRates.value,
      latency: latency.value,
      cpu: { steps: steps.cpu, chunks: chunkRates.cpu, latency: latency.cpu }
    }
    return { sample, setupMs, doneAt: performance.now() }
  }).pipe(Effect.scoped)

// ---------------------------------------------------------------------------------------------------------------
// Report

interface Aim {
  readonly deployment: string
  readonly figure: "steps" | "chunks" | "latency"
  readonly text: string
  /** The measured quantity the aim is about (NaN: not measured). */
  readonly value: (s: Summary) => number
  readonly met: (value: number) => boolean
  readonly show: (s: Summary) => string
}

const stepAim = { figure: "steps", value: (s: Summary) => s.stepRatio ?? NaN, met: (x: number) => x <= 3 } as const
const showRatio = (s: Summary) => `${ratio(s.stepRatio ?? NaN)} (${int(s.steps.median)} µs)`
const aims: ReadonlyArray<Aim> = [
  { deployment: "redis", ...stepAim, text: "µs per step ≤ 3× the in-process evented engine on the same store", show: showRatio },
  ...(["redis", "postgres"] as const).flatMap((bus) => {
    const chunkAim = bus === "redis" ? 100_000 : 20_000
    const latencyAim = bus === "redis" ? 5 : 20
    return [{
      deployment: bus,
      figure: "chunks",
      text: `≥ ${int(chunkAim)} chunks/s`,
      value: (s: Summary) => s.chunks.median,
      met: (x: number) => x >= chunkAim,
      show: (s: Summary) => int(s.chunks.median)
    }, {
      deployment: bus,
      figure: "latency",
      text: `p99 < ${latencyAim} ms`,
      value: (s: Summary) => s.p99.median,
      met: (x: number) => x < latencyAim,
      show: (s: Summary) => Number.isNaN(s.p99.median) ? "–" : `${ms(s.p99.median)} ms`
    }] as const
  })
]

/** Where an aim stands: met, not met, or not measured (its deployment or figure left out). */
const verdict = (aim: Aim, s: Summary | undefined) => {
  const value = s === undefined ? NaN : aim.value(s)
  return Number.isNaN(value) ? "not measured" : aim.met(value) ? "met" : "not met"
}

type Summary = ReturnType<typeof summarize>

const perUnit = (cpu: ReadonlyArray<Cpu>, units: number) => ({
  workers: median(cpu.map((c) => (c.workers * 1000) / units)),
  here: median(cpu.map((c) => (c.here * 1000) / units))
})

const summarize = (deployment: Deployment, samples: ReadonlyArray<Sample>, reference: ReadonlyArray<Sample> | undefined) => {
  const steps = stats(samples.map((s) => s.usPerStep))
  return {
    steps,
    stepRatio: deployment.crossProcess && reference !== undefined
      ? steps.median / median(reference.map((s) => s.usPerStep))
      : undefined,
    chunks: stats(samples.map((s) => s.chunks.endToEnd)),
    writer: stats(samples.map((s) => s.chunks.writer)),
    p50: stats(samples.map((s) => s.latency.p50)),
    p99: stats(samples.map((s) => s.latency.p99)),
    maxLatency: stats(samples.map((s) => s.latency.max)),
    /** CPU per step, all processes of the deployment together, ÷ the in-process engine's on the same store. */
    cpuStepRatio: deployment.crossProcess && reference !== undefined
      ? median(samples.map((s) => s.cpu.steps.workers + s.cpu.steps.here)) / median(reference.map((s) => s.cpu.steps.here))
      : undefined,
    /** CPU µs per unit of each figure: per step, per chunk, per tick; the workers' (summed) and this process's. */
    cpuUs: {
      steps: perUnit(samples.map((s) => s.cpu.steps), sizes.runs * 10),
      chunks: perUnit(samples.map((s) => s.cpu.chunks), sizes.chunks),
      latency: perUnit(samples.map((s) => s.cpu.latency), sizes.ticks)
    }
  }
}

const program = Effect.gen(function*() {
  const t0 = performance.now()
  // The machine is shared: how busy it was says how far to trust absolute numbers (ratios within a run hold better).
  const loadAtStart = loadavg()[0]!
  const admin = yield* Effect.provide(
    SqlClient.SqlClient,
    yield* Layer.build(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 }))
  )
  const databases: Record<string, string> = {}
  for (const d of measured) {
    if (d.store === "postgres") databases[d.id] = (yield* freshDatabase(admin, d.id.replace("-", "_"))).url
  }
  if (measured.some((d) => d.bus === "redis")) yield* redisCleanup
  for (const u of unavailable) console.error(`${u.id}: not available (${u.reason})`)

  const samples: Record<string, Array<Sample>> = {}
  const floors: Array<{ readonly p50: number; readonly p99: number }> = []
  const floorUrl = databases["memory-postgres"]
  for (let rep = 0; rep < reps; rep++) {
    if (figures.has("latency") && floorUrl !== undefined) {
      const floor = yield* commitFloor(floorUrl)
      floors.push(floor)
      console.error(`rep ${rep + 1}/${reps} Postgres commit floor: p50 ${ms(floor.p50)} ms, p99 ${ms(floor.p99)} ms`)
    }
    const order = measured.map((_, i) => measured[(i + rep) % measured.length]!)
    for (const deployment of order) {
      // The previous measurement's garbage is not this one's to collect (node --expose-gc, set by the npm script).
      ;(globalThis as { gc?: () => void }).gc?.()
      const { doneAt, sample, setupMs } = yield* measure(deployment, rep, databases)
      ;(samples[deployment.id] ??= []).push(sample)
      console.error(
        `rep ${rep + 1}/${reps} ${deployment.id}: ${int(sample.usPerStep)} µs/step, ` +
          `${int(sample.chunks.endToEnd)} chunks/s, p50 ${ms(sample.latency.p50)} ms, p99 ${ms(sample.latency.p99)} ms ` +
          `(set-up ${(setupMs / 1000).toFixed(1)} s, tear-down ${((performance.now() - doneAt) / 1000).toFixed(1)} s; ${((performance.now() - t0) / 1000).toFixed(0)} s in all)`
      )
    }
  }
  const totalSeconds = (performance.now() - t0) / 1000

  const reference = samples["memory-postgres"]
  const summaries = measured.map((d) => ({ deployment: d, summary: summarize(d, samples[d.id]!, reference) }))
  const meta = {
    date: new Date().toISOString(),
    mode: quick ? "quick" : "full",
    command: `npm run bench:cluster -- ${args.join(" ")}`.trim(),
    reps,
    sizes,
    ...machine(),
    buses: requestedBuses,
    loadAverage: { start: loadAtStart, end: loadavg()[0]! },
    figures: [...figures],
    totalSeconds
  }

  const lines = [
    `# stepwise across processes (${meta.mode} mode, ${meta.date})`,
    "",
    `Node ${meta.node}, ${meta.cpus}, ${meta.platform}; load average ${meta.loadAverage.start.toFixed(1)} at the start, ` +
    `${meta.loadAverage.end.toFixed(1)} at the end; medians of ${reps} interleaved repetitions (min–max in ` +
    `bench/results/); ${sizes.runs} runs of 10 no-op steps, ${sizes.inFlight} in flight; ` +
    `${int(sizes.chunks)} chunks of 64 bytes; ${int(sizes.ticks)} chunks ${sizes.tickEveryMs} ms apart; ${totalSeconds.toFixed(0)} s.`,
    "",
    "| deployment | µs per step | ÷ in process, same store | chunks/s, first write → last read | writer alone, chunks/s | latency p50 ms | p99 ms |",
    "|---|---:|---:|---:|---:|---:|---:|",
    ...summaries.map(({ deployment: d, summary: s }) =>
      `| ${d.label} | ${int(s.steps.median)} | ${s.stepRatio === undefined ? "" : ratio(s.stepRatio)} | ` +
      `${int(s.chunks.median)} | ${int(s.writer.median)} | ${ms(s.p50.median)} | ${ms(s.p99.median)} |`
    ),
    ...unavailable.map((u) =>
      `| ${deployments.find((d) => d.id === u.id)?.label ?? u.id} | not available: ${u.reason} | | | | | |`
    ),
    ...(floors.length === 0 ? [] : [
      "",
      `Floor of the latency figure on this Postgres: a one-row INSERT committed on its own, ${sizes.tickEveryMs} ms apart ` +
      `(${sizes.floorCommits} per repetition): p50 ${ms(median(floors.map((f) => f.p50)))} ms, ` +
      `p99 ${ms(median(floors.map((f) => f.p99)))} ms.`
    ]),
    "",
    "CPU time per unit (µs; medians): the two workers' together, and this process's (the client; in process, the whole " +
    "engine). 10 ms clock ticks: small counts are coarse.",
    "",
    "| deployment | per step, workers | per step, here | all ÷ in process, same store | per chunk, workers | " +
    "per chunk, here | per tick, workers | per tick, here |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
    ...summaries.map(({ deployment: d, summary: { cpuStepRatio, cpuUs: c } }) =>
      `| ${d.label} | ${int(c.steps.workers)} | ${int(c.steps.here)} | ${cpuStepRatio === undefined ? "" : ratio(cpuStepRatio)} | ` +
      `${ms(c.chunks.workers)} | ${ms(c.chunks.here)} | ${int(c.latency.workers)} | ${int(c.latency.here)} |`
    ),
    "",
    "| aim | measured | |",
    "|---|---:|---|",
    ...aims.map((aim) => {
      const s = summaries.find((x) => x.deployment.id === aim.deployment)?.summary
      const label = `${aim.deployment === "redis" ? "Redis" : "Postgres alone"}: ${aim.text}`
      const stands = verdict(aim, s)
      return `| ${label} | ${s === undefined ? "–" : aim.show(s)} | ${stands === "not met" ? "**not met**" : stands} |`
    })
  ]
  console.log(lines.join("\n"))

  const entries: Array<object> = summaries.flatMap(({ deployment: d, summary: s }) => {
    const aimOf = (figure: Aim["figure"]) => {
      const aim = aims.find((a) => a.deployment === d.id && a.figure === figure)
      return aim === undefined ? null : { text: aim.text, stands: verdict(aim, s) }
    }
    const common = { deployment: d.id, label: d.label, bus: d.bus, store: d.store, crossProcess: d.crossProcess }
    return [
      {
        ...common,
        figure: "steps",
        unit: "µs per step",
        ...s.steps,
        ratio: s.stepRatio === undefined ? null : { to: "memory-postgres", value: s.stepRatio },
        cpuMicrosPerStep: s.cpuUs.steps,
        cpuRatio: s.cpuStepRatio === undefined ? null : { to: "memory-postgres", value: s.cpuStepRatio },
        aim: aimOf("steps")
      },
      {
        ...common,
        figure: "chunks",
        unit: "chunks/s",
        ...s.chunks,
        writerAlone: s.writer,
        cpuMicrosPerChunk: s.cpuUs.chunks,
        aim: aimOf("chunks")
      },
      {
        ...common,
        figure: "latency",
        unit: "ms",
        p50: s.p50,
        p99: s.p99,
        max: s.maxLatency,
        cpuMicrosPerTick: s.cpuUs.latency,
        aim: aimOf("latency")
      }
    ]
  })
  if (floors.length > 0) {
    entries.push({
      deployment: "floor-postgres-commit",
      label: "a one-row INSERT committed on its own, on the Postgres of the store",
      figure: "latency",
      unit: "ms",
      p50: stats(floors.map((f) => f.p50)),
      p99: stats(floors.map((f) => f.p99))
    })
  }
  mkdirSync(join(benchDir, "results"), { recursive: true })
  const out = join(benchDir, "results", quick ? "cluster-quick.json" : figures.size < 3 ? "cluster-partial.json" : "cluster.json")
  writeFileSync(out, `${JSON.stringify({ meta, unavailable, entries }, null, 2)}\n`)
  console.error(`wrote ${out}`)
}).pipe(Effect.scoped)

NodeRuntime.runMain(program)
