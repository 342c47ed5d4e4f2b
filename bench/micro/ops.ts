/**
 * What a step costs the Effect runtime, counted rather than timed (the counts are the same on a busy machine):
 *
 *   npm run bench:ops
 *
 * For each engine (`WorkflowEngine.layerDefault` and `layerEvented` over the memory layers), 200 runs of a 10-step
 * linear workflow of no-op steps, one after another, after 50 runs of warm-up:
 *
 * - fiber operations per step (the run's own share included), in every fiber, the engine's own included: a
 *   `Supervisor` with `RuntimeFlags.OpSupervision` is told of each one;
 * - bytes allocated per step, with V8's sampling heap profiler counting objects that were collected too.
 *
 * It runs `../../dist` (the script builds it first).
 */
import { Effect, Layer, RuntimeFlags, RuntimeFlagsPatch, Schema, Supervisor } from "effect"
import { Session } from "node:inspector/promises"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"

/** Counts the operations of every fiber it supervises (the runtime calls `onEffect` once per operation). */
class Counter extends Supervisor.AbstractSupervisor<void> {
  counting = false
  operations = 0
  get value() {
    return Effect.void
  }
  override onEffect() {
    if (this.counting) this.operations++
  }
}

const Payload = Schema.Struct({ n: Schema.Number })
const steps = 10
let builder = Workflow.make({ id: "linear", inputSchema: Payload, outputSchema: Payload })
for (let i = 0; i < steps; i++) {
  builder = builder.pipe(Workflow.then(Step.make({
    id: `s${i}`,
    inputSchema: Payload,
    outputSchema: Payload,
    execute: ({ inputData }) => Effect.sync(() => ({ n: inputData.n + 1 }))
  })))
}
const workflow = builder.pipe(Workflow.commit)

const runs = (n: number) =>
  Effect.gen(function*() {
    const engine = yield* WorkflowEngine.WorkflowEngine
    for (let i = 0; i < n; i++) {
      const out = yield* Effect.flatMap(engine.start(workflow, { n: 0 }), (run) => run.result)
      if (out.n !== steps) return yield* Effect.dieMessage(`a run answered ${out.n}, not ${steps}`)
    }
  })

const session = new Session()
session.connect()
const measured = 200
for (const [name, engine] of [["default", WorkflowEngine.layerDefault], ["evented", WorkflowEngine.layerEvented]] as const) {
  const counter = new Counter()
  const layer = engine.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, RunStore.layerMemory)))
  // The engine is built inside the supervised region, so that the fibers it forks (the evented engine's consumers and
  // handlers) are counted too.
  const program = Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(layer)
    const measure = (n: number) => Effect.provide(runs(n), context)
    yield* measure(50)
    counter.counting = true
    yield* measure(measured)
    counter.counting = false
    yield* Effect.promise(() =>
      session.post("HeapProfiler.startSampling", {
        samplingInterval: 512,
        includeObjectsCollectedByMajorGC: true,
        includeObjectsCollectedByMinorGC: true
      })
    )
    yield* measure(measured)
    return (yield* Effect.promise(() => session.post("HeapProfiler.stopSampling"))).profile
  })).pipe(
    Effect.supervised(counter),
    Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))
  )
  const profile = await Effect.runPromise(program)
  let bytes = 0
  const visit = (node: { readonly selfSize: number; readonly children: ReadonlyArray<typeof node> }): void => {
    bytes += node.selfSize
    node.children.forEach(visit)
  }
  visit(profile.head)
  console.log(
    `${name}: ${(counter.operations / (measured * steps)).toFixed(1)} fiber operations per step, ` +
      `${(bytes / (measured * steps) / 1024).toFixed(1)} KB allocated per step (10-step runs, ${measured} runs, the ` +
      `run's share included)`
  )
}
session.disconnect()
