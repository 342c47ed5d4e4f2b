/**
 * @effect/workflow with `WorkflowEngine.layerMemory`: the same linear work as activities, the
 * fan-out as activities under `Effect.all({ concurrency: "unbounded" })`, waiting runs parked in a
 * 1-hour `DurableClock.sleep`. It has no writer, so the writer figures are absent.
 *
 * Each measurement builds a fresh engine layer: the memory engine keeps every execution and
 * activity result it has seen, so reusing one would let earlier measurements weigh on later ones.
 */
import { Activity, DurableClock, Workflow, WorkflowEngine } from "@effect/workflow"
import { Effect, Layer, ManagedRuntime, Schema } from "effect"
import { activeTimers, pause, settledHeap } from "../measure.ts"
import type { Contender, Loaded, MemorySample } from "../types.ts"
import { bump, checkFanOut, checkLinear, FAN_OUT, linearIds, stepIds, type Payload } from "../work.ts"

const who = "effect-workflow"

const PayloadSchema = Schema.Struct({ n: Schema.Number })
/** Each execution needs its own id: the engine derives the execution id from `idempotencyKey`. */
const RunPayload = { id: Schema.String, n: Schema.Number }
/** The linear workflow's payload also says how many steps to run (10 but in the steps-per-run curve). */
const LinearPayload = { ...RunPayload, steps: Schema.Number }

/** One no-op step as an activity (its result is encoded with PayloadSchema and journaled). */
const step = (name: string, input: Payload) =>
  Activity.make({ name, success: PayloadSchema, execute: Effect.sync(() => bump(input)) })

const Linear = Workflow.make({
  name: "linear",
  payload: LinearPayload,
  success: PayloadSchema,
  idempotencyKey: ({ id }) => id
})
const LinearLive = Linear.toLayer(({ n, steps }) =>
  Effect.gen(function* () {
    let x: Payload = { n }
    for (const name of linearIds(steps)) x = yield* step(name, x)
    return x
  })
)

const FanOut = Workflow.make({
  name: "fan-out",
  payload: RunPayload,
  success: Schema.Array(PayloadSchema),
  idempotencyKey: ({ id }) => id
})
const FanOutLive = FanOut.toLayer(({ n }) =>
  Effect.all(stepIds.slice(0, FAN_OUT).map((name) => step(name, { n })), { concurrency: "unbounded" })
)

const Sleeper = Workflow.make({
  name: "sleeper",
  payload: RunPayload,
  success: PayloadSchema,
  idempotencyKey: ({ id }) => id
})
const SleeperLive = Sleeper.toLayer(({ n }) =>
  Effect.gen(function* () {
    const x = yield* step("before", { n })
    yield* DurableClock.sleep({ name: "wait", duration: "1 hour" })
    return yield* step("after", x)
  })
)

const workflowsLive = Layer.mergeAll(LinearLive, FanOutLive, SleeperLive).pipe(
  Layer.provideMerge(WorkflowEngine.layerMemory)
)

/** Builds a fresh engine (outside the timed region), runs `program`, disposes. */
const withEngine = async <A>(program: Effect.Effect<A, unknown, WorkflowEngine.WorkflowEngine>): Promise<A> => {
  const runtime = ManagedRuntime.make(workflowsLive)
  try {
    await runtime.runtime()
    return await runtime.runPromise(program)
  } finally {
    await runtime.dispose()
  }
}

const range = (n: number): ReadonlyArray<number> => Array.from({ length: n }, (_, i) => i)

const effectWorkflow: Contender = {
  id: who,
  label: "@effect/workflow (memory)",
  kind: "peer",
  notes: {
    steps: "each step is an Activity (result schema-encoded and journaled)",
    fanout: "10 activities under Effect.all({ concurrency: \"unbounded\" })",
    writer: "no writer/stream API: not measured",
    latency: "no writer/stream API: not measured",
    branch: "no graph builder (a branch is an if in the workflow's Effect) and no writer or stream for custom events: not measured",
    memory: "Workflow.interrupt per run; the memory engine never forgets executions and keeps each 1-hour clock fiber until it fires"
  },
  stepOverhead: (runs, concurrency, steps) =>
    withEngine(
      Effect.gen(function* () {
        const t0 = performance.now()
        yield* Effect.forEach(
          range(runs),
          (i) => Effect.map(Linear.execute({ id: `r${i}`, n: 0, steps }), (out) => checkLinear(who, out, steps)),
          { concurrency, discard: true }
        )
        return { ms: performance.now() - t0 }
      })
    ),
  fanOut: (runs) =>
    withEngine(
      Effect.gen(function* () {
        const t0 = performance.now()
        yield* Effect.forEach(
          range(runs),
          (i) => Effect.map(FanOut.execute({ id: `r${i}`, n: 0 }), (out) => checkFanOut(who, out)),
          { discard: true }
        )
        return { ms: performance.now() - t0 }
      })
    ),
  writerThroughput: async () => undefined,
  latency: async () => undefined,
  branchCustom: async () => undefined,
  memoryWaiting: (n) =>
    withEngine(
      Effect.gen(function* () {
        /** Waits until every execution's poll shows `tag` ("Suspended": parked in the clock; "Complete": ended). */
        const allAre = (tag: "Suspended" | "Complete", ids: ReadonlyArray<string>) =>
          Effect.gen(function* () {
            const deadline = performance.now() + 120_000
            while (true) {
              const results = yield* Effect.forEach(ids, (id) => Sleeper.poll(id))
              if (results.every((r) => r?._tag === tag)) return
              if (performance.now() > deadline) return yield* Effect.dieMessage(`${who}: runs not all ${tag} after 120 s`)
              yield* Effect.sleep("10 millis")
            }
          })
        const start = (id: string) => Sleeper.execute({ id, n: 0 }, { discard: true })

        // warm the engine with one run, then interrupt it
        const warm = yield* start("warm")
        yield* allAre("Suspended", [warm])
        yield* Sleeper.interrupt(warm)
        yield* allAre("Complete", [warm])
        yield* Effect.promise(() => pause(20))

        const baselineBytes = yield* Effect.promise(settledHeap)
        const timersBefore = activeTimers()
        const t0 = performance.now()
        let ids = yield* Effect.forEach(range(n), (i) => start(`r${i}`))
        yield* allAre("Suspended", ids)
        const startMs = performance.now() - t0
        const waitingBytes = yield* Effect.promise(settledHeap)

        const t1 = performance.now()
        yield* Effect.forEach(ids, (id) => Sleeper.interrupt(id), { discard: true })
        yield* allAre("Complete", ids)
        const cancelMs = performance.now() - t1
        ids = []
        yield* Effect.promise(() => pause(20))
        const afterCancelBytes = yield* Effect.promise(settledHeap)
        const timersLeft = activeTimers() - timersBefore
        const sample: MemorySample = { baselineBytes, waitingBytes, afterCancelBytes, n, timersLeft, startMs, cancelMs }
        return sample
      })
    )
}

export const load = async (): Promise<Loaded> => ({ contenders: [effectWorkflow], unavailable: [] })
