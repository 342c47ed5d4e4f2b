/**
 * Issue 18's aim for the evented engine: one run of a foreach of 1,000 I/O-bound items (each waits 2 ms), with one
 * evented instance and with two over the same bus and store (in one process), side by side, in turns.
 *
 *   npx tsx bench/durable/foreach-workers.ts [--store=memory|postgres] [--items=1000] [--concurrency=1,1000] [--reps=3] [--workers=N: only N, for profiles]
 */
import { Effect, Layer, Schema } from "effect"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"
import * as Postgres from "stepwise/postgres"

const arg = (name: string, fallback: string) =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback
const storeName = arg("store", "memory")
const items = Number(arg("items", "1000"))
const concurrencies = arg("concurrency", "1000").split(",").map(Number)
const reps = Number(arg("reps", "3"))
const only = arg("workers", "")

const wait = Step.make({
  id: "wait",
  inputSchema: Schema.Number,
  outputSchema: Schema.Number,
  execute: ({ inputData }) => Effect.as(Effect.sleep("2 millis"), inputData)
})
const workflowFor = (concurrency: number) =>
  Workflow.make({
    id: `foreach-workers-${concurrency}`,
    inputSchema: Schema.Array(Schema.Number),
    outputSchema: Schema.Array(Schema.Number)
  }).pipe(Workflow.foreach(wait, { concurrency }), Workflow.commit)

const storeLayer: Layer.Layer<RunStore.RunStore, unknown> = storeName === "postgres"
  ? Postgres.layer({ url: process.env["DATABASE_URL"] ?? Postgres.defaultUrl })
  : RunStore.layerMemory

const instanceLayer = (wf: ReturnType<typeof workflowFor>) =>
  Layer.provideMerge(WorkflowEngine.register(wf), WorkflowEngine.layerEventedWith({}))

/** Milliseconds for one run (after a warm-up run) with `workers` evented instances over one bus and store. */
const once = (concurrency: number, workers: number) =>
  Effect.gen(function*() {
    const wf = workflowFor(concurrency)
    const input = Array.from({ length: items }, (_, i) => i)
    const shared = Layer.merge(
      Layer.succeed(EventBus.EventBus, yield* EventBus.EventBus),
      Layer.succeed(RunStore.RunStore, yield* RunStore.RunStore)
    )
    const instance = yield* Effect.provide(WorkflowEngine.WorkflowEngine, yield* Layer.build(instanceLayer(wf).pipe(Layer.provide(shared))))
    for (let i = 1; i < workers; i++) yield* Layer.build(instanceLayer(wf).pipe(Layer.provide(shared)))
    yield* Effect.flatMap(instance.start(wf, input), (r) => r.result) // warm-up
    const t0 = performance.now()
    yield* Effect.flatMap(instance.start(wf, input), (r) => r.result)
    return performance.now() - t0
  }).pipe(Effect.provide(Layer.merge(EventBus.layerMemory, storeLayer)), Effect.scoped)

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const program = Effect.gen(function*() {
  const os = yield* Effect.promise(() => import("node:os"))
  console.log(`${new Date().toISOString()} load ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}; store ${storeName}, ${items} items of 2 ms`)
  for (const concurrency of concurrencies) {
    const one: Array<number> = []
    const two: Array<number> = []
    if (only !== "") {
      for (let rep = 0; rep < reps; rep++) {
        ;(globalThis as any).__walks = 0
        console.log(`${only} worker(s): ${(yield* once(concurrency, Number(only))).toFixed(0)} ms, walks ${(globalThis as any).__walks}`)
      }
      continue
    }
    for (let rep = 0; rep < reps; rep++) {
      // In turns, the order swapped each repetition.
      if (rep % 2 === 0) {
        one.push(yield* once(concurrency, 1))
        two.push(yield* once(concurrency, 2))
      } else {
        two.push(yield* once(concurrency, 2))
        one.push(yield* once(concurrency, 1))
      }
    }
    const m1 = median(one)
    const m2 = median(two)
    console.log(
      `concurrency ${concurrency}: one ${m1.toFixed(0)} ms [${one.map((x) => x.toFixed(0)).join(", ")}], two ${m2.toFixed(0)} ms [${
        two.map((x) => x.toFixed(0)).join(", ")
      }], two ÷ one ${(m2 / m1).toFixed(2)} (aim ≤ 0.6)`
    )
  }
})

Effect.runPromise(program).then(() => process.exit(0), (e) => {
  console.error(e)
  process.exit(1)
})
