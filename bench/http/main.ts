/**
 * A run's stream read through the HTTP server by many SSE readers (issue 17, "Aims"):
 *
 *   npm run bench:http [-- --quick] [-- --reps=N] [-- --readers=N] [-- --cases=http-flat,...] [-- --cpu-prof]
 *
 * This process is the server: `Http.layerServer` on a free port over `WorkflowEngine.layerMemory`, serving one
 * workflow whose step waits at a gate, then writes N chunks of about 100 bytes to the run's default stream, each
 * carrying its write time (`performance.timeOrigin + performance.now()`, comparable between processes of one
 * machine). The readers are in a child process (readers.ts): 100 `fetch` connections to `GET /runs/{runId}/streams`,
 * each parsing the SSE body and checking that it got every chunk exactly once, in order, then `event: end`. The gate
 * opens once every reader has received the first bytes of its body (and 100 ms more), so every reader follows the
 * run live from its first write.
 *
 * Cases, each measured in every repetition (interleaved, order rotated):
 * - `http-flat`: the step writes as fast as it goes; chunks/s delivered = all readers' chunks / (last read by any
 *   reader − first write);
 * - `http-paced`: one chunk every 5 ms, 200 chunks/s, so 20,000 chunks/s delivered to 100 readers (the aim's rate):
 *   write→read latency p50/p99/max over every chunk of every reader;
 * - `inproc-flat`, `inproc-paced`: the same with 100 `run.readable()` Effect-stream readers in this process (no HTTP),
 *   the baseline the HTTP figures are divided by.
 *
 * Beside them: CPU time of this process (the server, the writer among it) and of the reader process, per delivered
 * chunk. Report on stdout (markdown), progress on stderr, numbers in bench/results/http.json (http-quick.json with
 * `--quick`, http-partial.json with `--cases`). `--cpu-prof` profiles this process during each case (through `node:inspector`),
 * one .cpuprofile per case and repetition in bench/results/profiles/http/.
 */
import * as HttpServer from "@effect/platform/HttpServer"
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Fiber, Layer, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import { Session } from "node:inspector"
import { loadavg } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { EventBus, WorkflowEngine } from "stepwise"
import * as Http from "stepwise/http"
import { commandLine, int, machine, ms, ownCpuMs, percentile, ratio, stats } from "../shared/report.js"
import type { Result } from "./readers.js"
import { burst, type Chunk, Gate, layerGate, wallMs } from "./workflow.js"

const help = `npm run bench:http [-- options]

  --quick            small sizes, 2 repetitions (a smoke run, well under a minute)
  --reps=N           repetitions (default 3, quick 2)
  --readers=N        concurrent readers of the run (default 100)
  --cases=a,b        http-flat, http-paced, inproc-flat, inproc-paced (default all)
  --cpu-prof         profile this process (the server) during each case: bench/results/profiles/http/`

const { args, cpuProf, option, quick, reps } = commandLine(help)

const allCases = ["http-flat", "http-paced", "inproc-flat", "inproc-paced"] as const
type CaseId = typeof allCases[number]
const cases = (option("cases") ?? allCases.join(",")).split(",").filter((c) => c !== "") as Array<CaseId>
for (const c of cases) if (!allCases.includes(c)) throw new Error(`--cases: unknown case "${c}" (${allCases.join(", ")})`)

const sizes = {
  readers: Number(option("readers") ?? 100),
  /** Chunks of the flat-out cases, and of the paced ones (one every `everyMs`). */
  flatChunks: quick ? 1_000 : 5_000,
  pacedChunks: quick ? 300 : 1_000,
  everyMs: 5,
  /** How long after every reader is connected the gate opens. */
  settleMs: 100
}
const benchDir = join(dirname(fileURLToPath(import.meta.url)), "..")
const readersScript = fileURLToPath(new URL("./readers.ts", import.meta.url))

const labels: Record<CaseId, string> = {
  "http-flat": `HTTP/SSE, ${sizes.readers} readers in another process, flat out`,
  "http-paced": `HTTP/SSE, ${sizes.readers} readers in another process, 1 chunk / ${sizes.everyMs} ms`,
  "inproc-flat": `in process, ${sizes.readers} run.readable() readers, flat out`,
  "inproc-paced": `in process, ${sizes.readers} run.readable() readers, 1 chunk / ${sizes.everyMs} ms`
}

// ---------------------------------------------------------------------------------------------------------------
// The reader process

const children = new Set<ChildProcess>()
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL")
})

/** The reader process, and its stdout as a queue of JSON lines. */
const spawnReaders = Effect.acquireRelease(
  Effect.sync(() => {
    const child = spawn(process.execPath, ["--import", "tsx", readersScript], { stdio: ["pipe", "pipe", "pipe"] })
    children.add(child)
    child.on("exit", () => children.delete(child))
    const lines: Array<string> = []
    let waiter: (() => void) | undefined
    let partial = ""
    let stderr = ""
    child.stdout!.on("data", (data) => {
      const parts = (partial + String(data)).split("\n")
      partial = parts.pop()!
      lines.push(...parts.filter((l) => l.trim() !== ""))
      waiter?.()
    })
    child.stderr!.on("data", (data) => (stderr += String(data)))
    child.on("exit", () => waiter?.())
    const next = Effect.async<unknown, Error>((resume) => {
      const check = () => {
        const line = lines.shift()
        if (line !== undefined) {
          waiter = undefined
          resume(Effect.succeed(JSON.parse(line)))
        } else if (child.exitCode !== null || child.signalCode !== null) {
          waiter = undefined
          resume(Effect.fail(new Error(`the reader process exited; stderr:\n${stderr.slice(-3000)}`)))
        } else {
          waiter = check
        }
      }
      check()
    })
    const send = (command: object) => Effect.sync(() => child.stdin!.write(`${JSON.stringify(command)}\n`))
    return { child, next, send }
  }),
  ({ child }) => Effect.sync(() => child.stdin!.end())
)
type Readers = Effect.Effect.Success<typeof spawnReaders>

// ---------------------------------------------------------------------------------------------------------------
// Measurements

interface Sample {
  /** Chunks delivered, all readers together, per second: delivered / (last read − first write). */
  readonly chunksPerSecond: number
  /** The writer's own rate: chunks / (last write − first write). */
  readonly writerPerSecond: number
  readonly latency: { readonly p50: number; readonly p99: number; readonly max: number }
  readonly delivered: number
  readonly complete: boolean
  readonly problems: ReadonlyArray<string>
  /** CPU ms of this process (server and writer) from the gate's opening to the last read, and of the reader process. */
  readonly serverCpuMs: number
  readonly readerCpuMs: number
  /** Wall ms from the gate's opening to the last read. */
  readonly wallMs: number
  readonly load: number
}

let gates = 0

/** Profiles this process around `effect` when `--cpu-prof` is on. */
const profiled = <A, E, R>(name: string, effect: Effect.Effect<A, E, R>) => {
  if (!cpuProf) return effect
  const session = new Session()
  const post = (method: string) =>
    Effect.async<unknown>((resume) => {
      session.post(method, (error, result) => resume(error ? Effect.die(error) : Effect.succeed(result)))
    })
  return Effect.acquireUseRelease(
    Effect.sync(() => session.connect()).pipe(Effect.zipRight(post("Profiler.enable")), Effect.zipRight(post("Profiler.start"))),
    () => effect,
    () =>
      post("Profiler.stop").pipe(
        Effect.map((result) => {
          const dir = join(benchDir, "results", "profiles", "http")
          mkdirSync(dir, { recursive: true })
          const file = join(dir, `${name}.cpuprofile`)
          writeFileSync(file, JSON.stringify((result as { profile: unknown }).profile))
          session.disconnect()
          console.error(`wrote ${file}`)
        })
      )
  )
}

/** One case through the server: start the run over HTTP, connect the readers, open the gate, wait for every read. */
const viaHttp = (base: string, readers: Readers, count: number, everyMs: number) =>
  Effect.gen(function*() {
    const engine = yield* WorkflowEngine.WorkflowEngine
    const gate = yield* Gate
    const name = `g${gates++}`
    const started = yield* Effect.promise(() =>
      fetch(`${base}/workflows/${burst.id}/runs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ count, everyMs, gate: name })
      }).then(async (r) => ({ status: r.status, text: await r.text() }))
    )
    if (started.status !== 201) return yield* Effect.dieMessage(`POST …/runs answered ${started.status}: ${started.text}`)
    const runId = (JSON.parse(started.text) as { runId: string }).runId
    const run = yield* engine.getRun(runId)
    yield* readers.send({ url: `${base}/runs/${runId}/streams?startIndex=0`, readers: sizes.readers, count })
    const connected = (yield* readers.next) as { connected?: boolean }
    if (connected.connected !== true) return yield* Effect.dieMessage(`readers: ${JSON.stringify(connected)}`)
    yield* Effect.sleep(sizes.settleMs)
    const c0 = ownCpuMs()
    const t0 = wallMs()
    yield* gate.open(name)
    const span = (yield* run.result) as typeof burst.outputSchema.Type
    const result = (yield* readers.next) as Result
    return {
      chunksPerSecond: (result.delivered * 1000) / (result.lastReadAt - span.firstWriteAt),
      writerPerSecond: (count * 1000) / (span.lastWriteAt - span.firstWriteAt),
      latency: result.latency,
      delivered: result.delivered,
      complete: result.complete && result.delivered === count * sizes.readers,
      problems: result.problems,
      serverCpuMs: ownCpuMs() - c0,
      readerCpuMs: result.cpuMs,
      wallMs: result.lastReadAt - t0,
      load: loadavg()[0]!
    } satisfies Sample
  })

/** One case in this process: `run.readable()` readers, subscribed before the gate opens. */
const inProcess = (count: number, everyMs: number) =>
  Effect.gen(function*() {
    const engine = yield* WorkflowEngine.WorkflowEngine
    const gate = yield* Gate
    const name = `g${gates++}`
    const run = yield* engine.start(burst, { count, everyMs, gate: name })
    const latencies = new Float64Array(sizes.readers * count)
    let firstReadAt = Infinity
    let lastReadAt = 0
    const reader = (r: number) => {
      let got = 0
      let problem: string | undefined
      return Stream.runForEachChunk(run.readable<Chunk>(), (chunk) =>
        Effect.sync(() => {
          const now = wallMs()
          if (now < firstReadAt) firstReadAt = now
          lastReadAt = now
          for (const c of chunk) {
            if (problem === undefined && c.i !== got) problem = `reader ${r}: expected chunk ${got}, got ${c.i}`
            if (got < count) latencies[r * count + got] = now - c.at
            got++
          }
        })).pipe(
          Effect.map(() => ({ got, problem: problem ?? (got === count ? undefined : `reader ${r}: got ${got} of ${count}`) }))
        )
    }
    const fibers = yield* Effect.forEach(Array.from({ length: sizes.readers }, (_, r) => r), (r) => Effect.fork(reader(r)))
    yield* Effect.sleep(sizes.settleMs)
    const c0 = ownCpuMs()
    const t0 = wallMs()
    yield* gate.open(name)
    const span = yield* run.result
    const outcomes = yield* Fiber.join(Fiber.all(fibers))
    const serverCpuMs = ownCpuMs() - c0
    const problems = outcomes.flatMap((o) => o.problem === undefined ? [] : [o.problem])
    const delivered = outcomes.reduce((sum, o) => sum + o.got, 0)
    const sorted = latencies.sort()
    return {
      chunksPerSecond: (delivered * 1000) / (lastReadAt - span.firstWriteAt),
      writerPerSecond: (count * 1000) / (span.lastWriteAt - span.firstWriteAt),
      latency: { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted[sorted.length - 1]! },
      delivered,
      complete: problems.length === 0 && delivered === count * sizes.readers,
      problems: problems.slice(0, 10),
      serverCpuMs,
      readerCpuMs: NaN,
      wallMs: lastReadAt - t0,
      load: loadavg()[0]!
    } satisfies Sample
  })

// ---------------------------------------------------------------------------------------------------------------
// Report

const summarize = (samples: ReadonlyArray<Sample>) => ({
  chunksPerSecond: stats(samples.map((s) => s.chunksPerSecond)),
  perReader: stats(samples.map((s) => s.chunksPerSecond / sizes.readers)),
  writerPerSecond: stats(samples.map((s) => s.writerPerSecond)),
  p50: stats(samples.map((s) => s.latency.p50)),
  p99: stats(samples.map((s) => s.latency.p99)),
  max: stats(samples.map((s) => s.latency.max)),
  /** CPU µs per delivered chunk: this process's (server + writer), the reader process's. */
  serverCpuUsPerChunk: stats(samples.map((s) => (s.serverCpuMs * 1000) / s.delivered)),
  readerCpuUsPerChunk: stats(samples.map((s) => (s.readerCpuMs * 1000) / s.delivered)),
  /** This process's CPU time ÷ wall time while the case ran (1 = one core busy). */
  serverBusy: stats(samples.map((s) => s.serverCpuMs / s.wallMs)),
  load: stats(samples.map((s) => s.load)),
  complete: samples.every((s) => s.complete),
  problems: samples.flatMap((s) => s.problems).slice(0, 10)
})
type Summary = ReturnType<typeof summarize>

const program = Effect.gen(function*() {
  const t0 = performance.now()
  const loadAtStart = loadavg()[0]!
  const server = yield* HttpServer.HttpServer
  const address = server.address as HttpServer.TcpAddress
  const base = `http://127.0.0.1:${address.port}`
  // Every reader's subscription to the run's stream channel must be gone once it has read to the end.
  const channels = yield* EventBus.MemoryChannels
  const channelsAtStart = yield* channels.size
  const readers = yield* spawnReaders
  const hello = (yield* readers.next) as { ready?: boolean }
  if (hello.ready !== true) return yield* Effect.dieMessage(`reader process: ${JSON.stringify(hello)}`)

  const measureCase = (id: CaseId, count: number) => {
    const everyMs = id.endsWith("paced") ? sizes.everyMs : 0
    return id.startsWith("http") ? viaHttp(base, readers, count, everyMs) : inProcess(count, everyMs)
  }
  const countOf = (id: CaseId) => id.endsWith("paced") ? sizes.pacedChunks : sizes.flatChunks

  // Warm-up: every case once, small.
  for (const id of cases) yield* measureCase(id, Math.min(200, countOf(id)))

  const samples: Partial<Record<CaseId, Array<Sample>>> = {}
  for (let rep = 0; rep < reps; rep++) {
    const order = cases.map((_, i) => cases[(i + rep) % cases.length]!)
    for (const id of order) {
      ;(globalThis as { gc?: () => void }).gc?.()
      const sample = yield* profiled(`${id}-r${rep + 1}`, measureCase(id, countOf(id)))
      ;(samples[id] ??= []).push(sample)
      console.error(
        `rep ${rep + 1}/${reps} ${id}: ${int(sample.chunksPerSecond)} chunks/s delivered (writer ${int(sample.writerPerSecond)}/s), ` +
          `p50 ${ms(sample.latency.p50)} ms, p99 ${ms(sample.latency.p99)} ms, max ${ms(sample.latency.max)} ms; ` +
          `server CPU ${ms((sample.serverCpuMs * 1000) / sample.delivered)} µs/chunk (${Math.round((100 * sample.serverCpuMs) / sample.wallMs)}% of a core)` +
          `${sample.complete ? "" : `; INCOMPLETE: ${sample.problems.join("; ")}`}; load ${sample.load.toFixed(1)} ` +
          `(${((performance.now() - t0) / 1000).toFixed(0)} s in all)`
      )
    }
  }
  // The server's side of a connection ends a moment after the reader's last read: give it a second.
  let channelsLeft = yield* channels.size
  for (let i = 0; i < 50 && channelsLeft !== channelsAtStart; i++) {
    yield* Effect.sleep("20 millis")
    channelsLeft = yield* channels.size
  }
  const totalSeconds = (performance.now() - t0) / 1000
  const summaries = cases.map((id) => ({ id, summary: summarize(samples[id]!) }))
  const of = (id: CaseId): Summary | undefined => summaries.find((s) => s.id === id)?.summary
  const httpOverInProcess = (flavor: "flat" | "paced") => {
    const http = of(`http-${flavor}`)
    const local = of(`inproc-${flavor}`)
    return http === undefined || local === undefined ? NaN : http.chunksPerSecond.median / local.chunksPerSecond.median
  }

  const meta = {
    date: new Date().toISOString(),
    mode: quick ? "quick" : "full",
    command: `npm run bench:http -- ${args.join(" ")}`.trim(),
    reps,
    sizes,
    ...machine(),
    loadAverage: { start: loadAtStart, end: loadavg()[0]! },
    cases,
    totalSeconds,
    /** Memory-bus channels open after every reader of every case had finished, beyond those open before. */
    channelsLeftOpen: channelsLeft - channelsAtStart
  }

  const aims = [
    {
      case: "http-flat" as const,
      text: `${sizes.readers} SSE readers of one run through the server: ≥ 20,000 chunks/s delivered in all`,
      value: (s: Summary) => s.chunksPerSecond.median,
      met: (x: number) => x >= 20_000,
      show: (s: Summary) => int(s.chunksPerSecond.median)
    },
    {
      case: "http-paced" as const,
      text: `write → reader p99 < 10 ms (${int((sizes.readers * 1000) / sizes.everyMs)} chunks/s delivered)`,
      value: (s: Summary) => s.p99.median,
      met: (x: number) => x < 10,
      show: (s: Summary) => `${ms(s.p99.median)} ms`
    }
  ]
  const verdict = (aim: typeof aims[number]) => {
    const s = of(aim.case)
    if (s === undefined) return "not measured"
    return aim.met(aim.value(s)) && s.complete ? "met" : "not met"
  }

  const lines = [
    `# stepwise through HTTP/SSE (${meta.mode} mode, ${meta.date})`,
    "",
    `Node ${meta.node}, ${meta.cpus}, ${meta.platform}; load average ${meta.loadAverage.start.toFixed(1)} at the start, ` +
    `${meta.loadAverage.end.toFixed(1)} at the end; medians of ${reps} interleaved repetitions (min–max in bench/results/); ` +
    `${sizes.readers} readers of one run; flat out: ${int(sizes.flatChunks)} chunks of ~100 bytes of JSON; paced: ` +
    `${int(sizes.pacedChunks)} chunks ${sizes.everyMs} ms apart; ${totalSeconds.toFixed(0)} s.`,
    "",
    "| case | chunks/s delivered, all readers | per reader | writer alone | latency p50 ms | p99 ms | max ms | " +
    "server CPU µs / delivered chunk | server busy | readers' CPU µs / chunk | every reader got every chunk once, in order | load |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ...summaries.map(({ id, summary: s }) =>
      `| ${labels[id]} | ${int(s.chunksPerSecond.median)} | ${int(s.perReader.median)} | ${int(s.writerPerSecond.median)} | ` +
      `${ms(s.p50.median)} | ${ms(s.p99.median)} | ${ms(s.max.median)} | ${ms(s.serverCpuUsPerChunk.median)} | ` +
      `${Math.round(100 * s.serverBusy.median)}% | ${ms(s.readerCpuUsPerChunk.median)} | ` +
      `${s.complete ? "yes" : `**no**: ${s.problems.join("; ")}`} | ${s.load.min.toFixed(1)}–${s.load.max.toFixed(1)} |`
    ),
    "",
    `HTTP ÷ in process, chunks/s delivered: flat out ${ratio(httpOverInProcess("flat"))}, paced ${ratio(httpOverInProcess("paced"))}. ` +
    `Memory-bus channels left open once every reader (${int(sizes.readers * (reps + 1) * cases.length)}, warm-up included) had finished: ` +
    `${meta.channelsLeftOpen}.`,
    "",
    "| aim (issue 17) | measured | |",
    "|---|---:|---|",
    ...aims.map((aim) => {
      const s = of(aim.case)
      const stands = verdict(aim)
      return `| ${aim.text} | ${s === undefined ? "–" : aim.show(s)} | ${stands === "not met" ? "**not met**" : stands} |`
    })
  ]
  console.log(lines.join("\n"))

  const entries = summaries.map(({ id, summary: s }) => {
    const aim = aims.find((a) => a.case === id)
    return {
      case: id,
      label: labels[id],
      transport: id.startsWith("http") ? "http-sse" : "in-process",
      pace: id.endsWith("paced") ? { everyMs: sizes.everyMs } : "flat-out",
      readers: sizes.readers,
      chunks: countOf(id),
      unit: "chunks/s delivered, all readers",
      ...s.chunksPerSecond,
      perReader: s.perReader,
      writerAlone: s.writerPerSecond,
      latencyMs: { p50: s.p50, p99: s.p99, max: s.max },
      serverCpuMicrosPerChunk: s.serverCpuUsPerChunk,
      serverBusy: s.serverBusy,
      readerCpuMicrosPerChunk: s.readerCpuUsPerChunk,
      complete: s.complete,
      problems: s.problems,
      loadAverage: s.load,
      ratio: id.startsWith("http")
        ? { to: id.replace("http", "inproc"), value: httpOverInProcess(id.endsWith("paced") ? "paced" : "flat") }
        : null,
      aim: aim === undefined ? null : { text: aim.text, stands: verdict(aim) }
    }
  })
  mkdirSync(join(benchDir, "results"), { recursive: true })
  const out = join(
    benchDir,
    "results",
    quick ? "http-quick.json" : cases.length < allCases.length ? "http-partial.json" : "http.json"
  )
  writeFileSync(out, `${JSON.stringify({ meta, entries }, null, 2)}\n`)
  console.error(`wrote ${out}`)
}).pipe(Effect.scoped)

const served = Http.layerServer({ port: 0, host: "127.0.0.1", workflows: [burst] }).pipe(
  Layer.provideMerge(Layer.mergeAll(WorkflowEngine.layerMemory, layerGate))
)

NodeRuntime.runMain(Effect.provide(program, served))
