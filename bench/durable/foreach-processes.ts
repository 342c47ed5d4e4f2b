/**
 * Issue 18's foreach aim across processes: one run of a foreach of `items` I/O-bound items (each waits 2 ms) executed
 * by one and by two evented worker processes over Redis (bus) and Postgres (store), started and awaited by this
 * process through `layerClient`; in turns, medians.
 *
 *   npx tsx bench/durable/foreach-processes.ts [--items=1000] [--concurrency=1000] [--reps=3] [--workers=N: only N]
 *
 * Workers run with this process's node flags: `node --cpu-prof --import tsx bench/durable/foreach-processes.ts`
 * profiles them too.
 *
 * env: DATABASE_URL (default Postgres.defaultUrl), REDIS_URL (default redis://127.0.0.1:6379)
 */
import { Effect, Layer, Schema } from "effect"
import { spawn } from "node:child_process"
import { loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import { Step, Workflow, WorkflowEngine } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Redis from "stepwise/redis"

const arg = (name: string, fallback: string) =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback
const items = Number(arg("items", "1000"))
const concurrency = Number(arg("concurrency", "1000"))
const reps = Number(arg("reps", "3"))
const only = Number(arg("workers", "0"))
const databaseUrl = process.env["DATABASE_URL"] ?? Postgres.defaultUrl
const redisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"

const wait = Step.make({
  id: "wait",
  inputSchema: Schema.Number,
  outputSchema: Schema.Number,
  execute: ({ inputData }) => Effect.as(Effect.sleep("2 millis"), inputData)
})
const workflow = Workflow.make({
  id: `foreach-processes-${concurrency}`,
  inputSchema: Schema.Array(Schema.Number),
  outputSchema: Schema.Array(Schema.Number)
}).pipe(Workflow.foreach(wait, { concurrency }), Workflow.commit)

const layers = (prefix: string) =>
  Layer.merge(Redis.layerBus({ url: redisUrl, prefix }), Postgres.layer({ url: databaseUrl }))

if (process.argv.includes("--worker")) {
  const prefix = arg("prefix", "")
  Effect.runFork(Effect.gen(function*() {
    yield* Layer.build(
      WorkflowEngine.register(workflow).pipe(
        Layer.provideMerge(WorkflowEngine.layerEventedWith({ workerId: arg("id", "w") })),
        Layer.provide(layers(prefix))
      )
    )
    console.log("ready")
    return yield* Effect.never
  }).pipe(Effect.scoped))
  process.stdin.on("end", () => process.exit(0))
  process.stdin.resume()
} else {
  const script = fileURLToPath(import.meta.url)
  /** Milliseconds for one run (after a warm-up run) with `workers` worker processes. */
  const once = (workers: number, rep: number) =>
    Effect.gen(function*() {
      const prefix = `fw-${process.pid}-${rep}-${workers}-`
      const children = Array.from({ length: workers }, (_, i) =>
        spawn(process.execPath, [...process.execArgv, script, "--worker", `--prefix=${prefix}`, `--id=w${i}-${prefix}`, `--items=${items}`, `--concurrency=${concurrency}`], {
          stdio: ["pipe", "pipe", "inherit"]
        }))
      // Closing their stdin ends them (so that a worker run with --cpu-prof writes its profile); SIGKILL after 3 s.
      yield* Effect.addFinalizer(() =>
        Effect.sync(() =>
          children.forEach((c) => {
            c.stdin!.end()
            setTimeout(() => c.kill("SIGKILL"), 3_000).unref()
          })
        )
      )
      yield* Effect.promise(() =>
        Promise.all(children.map((c) => new Promise<void>((resolve) => c.stdout!.on("data", (d) => String(d).includes("ready") && resolve()))))
      )
      const client = yield* Effect.provide(
        WorkflowEngine.WorkflowEngine,
        yield* Layer.build(WorkflowEngine.register(workflow).pipe(Layer.provideMerge(WorkflowEngine.layerClient), Layer.provide(layers(prefix))))
      )
      const input = Array.from({ length: items }, (_, i) => i)
      yield* Effect.flatMap(client.start(workflow, input), (r) => r.result) // warm-up
      const t0 = performance.now()
      yield* Effect.flatMap(client.start(workflow, input), (r) => r.result)
      return performance.now() - t0
    }).pipe(Effect.scoped)
  const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  Effect.runPromise(Effect.gen(function*() {
    console.log(`${new Date().toISOString()} load ${loadavg().map((l) => l.toFixed(2)).join(" ")}; Redis + Postgres, ${items} items of 2 ms, concurrency ${concurrency}`)
    const one: Array<number> = []
    const two: Array<number> = []
    for (let rep = 0; rep < reps; rep++) {
      for (const workers of only !== 0 ? [only] : rep % 2 === 0 ? [1, 2] : [2, 1]) (workers === 1 ? one : two).push(yield* once(workers, rep))
    }
    if (only !== 0) return console.log(`${only} process(es): ${[...one, ...two].map((x) => x.toFixed(0)).join(", ")} ms`)
    const m1 = median(one)
    const m2 = median(two)
    console.log(`one process ${m1.toFixed(0)} ms [${one.map((x) => x.toFixed(0)).join(", ")}], two ${m2.toFixed(0)} ms [${
      two.map((x) => x.toFixed(0)).join(", ")
    }], two ÷ one ${(m2 / m1).toFixed(2)} (aim ≤ 0.6)`)
  })).then(() => process.exit(0), (e) => {
    console.error(e)
    process.exit(1)
  })
}
