/**
 * stepwise as built (../dist: run.mjs runs the root build first; tsconfig.runtime.json maps "stepwise" there), default engine and evented engine, written against the
 * public contract in DESIGN.md: `Step.make`, `Workflow.make(...).pipe(Workflow.then(step), ...,
 * Workflow.commit)` (and `parallel`, `branch`, `map`, `sleep`; `writer.write` and `writer.custom`), `engine.start(wf, input)` returning a `Run` with `result`, `events()`,
 * `status` and `cancel`.
 *
 * main.ts imports this module dynamically, so the rest of the bench runs (with a "not measured"
 * note) when the library is missing or does not load. Each measurement builds a fresh runtime: `WorkflowEngine.layerDefault` (or
 * `layerEvented`) over `EventBus.layerMemory` and `RunStore.layerMemory`, which for the default
 * engine is exactly `WorkflowEngine.layerMemory`, plus `EventBus.MemoryChannels` to count channels.
 */
import { Cause, Effect, Exit, Layer, ManagedRuntime, Schema, Stream } from "effect"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine, WorkflowEvent } from "stepwise"
import { activeTimers, LatencyRecorder, pause, settledHeap, waitUntil } from "../measure.ts"
import type { Contender, Loaded, MemorySample } from "../types.ts"
import {
  armId,
  asChunk,
  BRANCH_STAGES,
  bump,
  checkFanOut,
  checkLinear,
  checkReaders,
  type Chunk,
  FAN_OUT,
  isEven,
  isOdd,
  linearIds,
  pickArm,
  stepIds,
  tick,
  TickCheck
} from "../work.ts"

type EngineKind = "default" | "evented"
type EngineLayer = Layer.Layer<WorkflowEngine.WorkflowEngine, EventBus.EventBusError, EventBus.EventBus | RunStore.RunStore>

const PayloadSchema = Schema.Struct({ n: Schema.Number })
const WriterInput = Schema.Struct({ n: Schema.Number, chunks: Schema.Number, spacingUs: Schema.Number })
type WriterInput = typeof WriterInput.Type

const noopStep = (id: string) =>
  Step.make({
    id,
    inputSchema: PayloadSchema,
    outputSchema: PayloadSchema,
    execute: ({ inputData }) => Effect.sync(() => bump(inputData))
  })

const makeLinear = (steps: number) => {
  let builder = Workflow.make({ id: `linear-${steps}`, inputSchema: PayloadSchema, outputSchema: PayloadSchema })
  for (const id of linearIds(steps)) builder = builder.pipe(Workflow.then(noopStep(id)))
  return builder.pipe(Workflow.commit)
}
const linears = new Map<number, ReturnType<typeof makeLinear>>()
/** The linear workflow of `steps` no-op steps (10 but in the steps-per-run curve), built once. */
const linearWorkflow = (steps: number) => {
  let wf = linears.get(steps)
  if (wf === undefined) linears.set(steps, wf = makeLinear(steps))
  return wf
}

const fanOutWorkflow = Workflow.make({
  id: "fan-out",
  inputSchema: PayloadSchema,
  outputSchema: Schema.Record({ key: Schema.String, value: PayloadSchema })
}).pipe(Workflow.parallel(stepIds.slice(0, FAN_OUT).map(noopStep)), Workflow.commit)

/** One step writing `chunks` chunks with `writer.write` (spaced `spacingUs` apart and stamped with `t` when > 0). */
const writerWorkflow = Workflow.make({ id: "writer", inputSchema: WriterInput, outputSchema: WriterInput }).pipe(
  Workflow.then(
    Step.make({
      id: "write",
      inputSchema: WriterInput,
      outputSchema: WriterInput,
      execute: ({ inputData, writer }) =>
        Effect.gen(function* () {
          const { chunks, spacingUs } = inputData
          if (spacingUs > 0) {
            const start = performance.now()
            for (let i = 0; i < chunks; i++) {
              yield* Effect.promise(() => waitUntil(start + (i * spacingUs) / 1000))
              yield* writer.write({ i, t: performance.now() } satisfies Chunk)
            }
          } else {
            for (let i = 0; i < chunks; i++) yield* writer.write({ i } satisfies Chunk)
          }
          return inputData
        })
    })
  ),
  Workflow.commit
)

/** A step, a 1-hour sleep, a step: runs park in the sleep with status "waiting". */
const sleeperWorkflow = Workflow.make({ id: "sleeper", inputSchema: PayloadSchema, outputSchema: PayloadSchema }).pipe(
  Workflow.then(noopStep("before")),
  Workflow.sleep("1 hour"),
  Workflow.then(noopStep("after")),
  Workflow.commit
)

/** A branch arm: writes one tick with `writer.custom`, then bumps n. */
const armStep = (arm: "even" | "odd", stage: number) =>
  Step.make({
    id: armId(arm, stage),
    inputSchema: PayloadSchema,
    outputSchema: PayloadSchema,
    execute: ({ inputData, writer }) =>
      Effect.as(writer.custom(tick(stage, inputData.n)), bump(inputData))
  })

/** BRANCH_STAGES stages of: a branch of two arms on the input's parity, then a map taking the taken arm's output. */
const branchWorkflow = (() => {
  let builder = Workflow.make({ id: "branching", inputSchema: PayloadSchema, outputSchema: PayloadSchema })
  for (let stage = 0; stage < BRANCH_STAGES; stage++) {
    builder = builder.pipe(
      Workflow.branch([
        [({ inputData }) => Effect.succeed(isEven(inputData)), armStep("even", stage)],
        [({ inputData }) => Effect.succeed(isOdd(inputData)), armStep("odd", stage)]
      ]),
      Workflow.map(({ inputData }) => Effect.succeed(pickArm(stage, inputData)))
    )
  }
  return builder.pipe(Workflow.commit)
})()

const isStepOutput = WorkflowEvent.is("workflow-step-output")

/** Reads a run's events to the end; counts (and reports) the chunks written with `writer.write`. */
const readChunks = (events: Stream.Stream<WorkflowEvent.WorkflowEvent, unknown>, onChunk: (chunk: Chunk) => void) =>
  events.pipe(
    Stream.filter(isStepOutput),
    Stream.runFold(0, (count, event) => {
      const chunk = asChunk(event.payload.output)
      if (chunk === undefined) return count
      onChunk(chunk)
      return count + 1
    })
  )

type Services = WorkflowEngine.WorkflowEngine | EventBus.EventBus | EventBus.MemoryChannels | RunStore.RunStore

/** Builds a fresh runtime for one measurement (outside the timed region), runs `program`, disposes. */
const withEngine = async <A>(
  engine: EngineLayer,
  program: Effect.Effect<A, unknown, Services>
): Promise<A> => {
  const layer = engine.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, RunStore.layerMemory)))
  const runtime = ManagedRuntime.make(layer)
  try {
    await runtime.runtime()
    return await runtime.runPromise(program)
  } finally {
    await runtime.dispose()
  }
}

/** Whether a run's result failed with RunCanceledError. */
const isCanceled = (exit: Exit.Exit<unknown, unknown>): boolean =>
  Exit.isFailure(exit) &&
  [...Cause.failures(exit.cause)].some((e) => typeof e === "object" && e !== null && "_tag" in e && e._tag === "RunCanceledError")

const range = (n: number): ReadonlyArray<number> => Array.from({ length: n }, (_, i) => i)

const makeContender = (kind: EngineKind, engine: EngineLayer): Contender => {
  const who = `stepwise-${kind}`

  const startWriter = (input: WriterInput, readers: number, onChunk: (chunk: Chunk) => void) =>
    Effect.gen(function* () {
      const wf = yield* WorkflowEngine.WorkflowEngine
      const run = yield* wf.start(writerWorkflow, input)
      const counts = yield* Effect.forEach(range(readers), () => readChunks(run.events(), onChunk), {
        concurrency: "unbounded"
      })
      yield* run.result
      return counts
    })

  return {
    id: who,
    label: `stepwise (${kind})`,
    kind: "stepwise",
    notes: {
      writer: "readers: run.events() (history from the RunStore, live tail from the EventBus)",
      branch: "reader: run.events() to the run's end; each map is recorded with its own step events, as Mastra's mapping steps are",
      memory: "canceled runs stay in RunStore.layerMemory until its retention bound (1 h, 10,000 finished runs): " +
        "the residual is mostly those records (see runs kept by store)"
    },
    stepOverhead: (runs, concurrency, steps) =>
      withEngine(
        engine,
        Effect.gen(function* () {
          const wf = yield* WorkflowEngine.WorkflowEngine
          const oneRun = Effect.flatMap(wf.start(linearWorkflow(steps), { n: 0 }), (run) => run.result).pipe(
            Effect.map((output) => checkLinear(who, output, steps))
          )
          const t0 = performance.now()
          yield* Effect.forEach(range(runs), () => oneRun, { concurrency, discard: true })
          return { ms: performance.now() - t0 }
        })
      ),
    fanOut: (runs) =>
      withEngine(
        engine,
        Effect.gen(function* () {
          const wf = yield* WorkflowEngine.WorkflowEngine
          const oneRun = Effect.flatMap(wf.start(fanOutWorkflow, { n: 0 }), (run) => run.result).pipe(
            Effect.map((output) => checkFanOut(who, output))
          )
          const t0 = performance.now()
          yield* Effect.forEach(range(runs), () => oneRun, { discard: true })
          return { ms: performance.now() - t0 }
        })
      ),
    writerThroughput: (chunks, readers) =>
      withEngine(
        engine,
        Effect.gen(function* () {
          const t0 = performance.now()
          const counts = yield* startWriter({ n: 0, chunks, spacingUs: 0 }, readers, () => {})
          const ms = performance.now() - t0
          checkReaders(who, counts, chunks)
          return { ms }
        })
      ),
    latency: (n, spacingUs) =>
      withEngine(
        engine,
        Effect.gen(function* () {
          const recorder = new LatencyRecorder(n)
          const t0 = performance.now()
          yield* startWriter({ n: 0, chunks: n, spacingUs }, 1, (chunk) => recorder.receive(chunk.t ?? Number.NaN))
          return recorder.summarize(who, performance.now() - t0)
        })
      ),
    branchCustom: (runs) =>
      withEngine(
        engine,
        Effect.gen(function* () {
          const wf = yield* WorkflowEngine.WorkflowEngine
          const oneRun = Effect.gen(function* () {
            const check = new TickCheck(who)
            const run = yield* wf.start(branchWorkflow, { n: 0 })
            // a pure fold, as in the writer figures
            yield* Stream.runFold(run.events(), check, (checking, event) => {
              checking.offer(event)
              return checking
            })
            check.done(yield* run.result)
          })
          const t0 = performance.now()
          yield* Effect.forEach(range(runs), () => oneRun, { discard: true })
          return { ms: performance.now() - t0 }
        })
      ),
    memoryWaiting: (n) =>
      withEngine(
        engine,
        Effect.gen(function* () {
          const wf = yield* WorkflowEngine.WorkflowEngine
          const channels = yield* EventBus.MemoryChannels
          const store = yield* RunStore.RunStore
          const allWaiting = (runs: ReadonlyArray<{ readonly status: Effect.Effect<string> }>) =>
            Effect.gen(function* () {
              const deadline = performance.now() + 120_000
              while (true) {
                const statuses = yield* Effect.forEach(runs, (run) => run.status)
                if (statuses.every((s) => s === "waiting")) return
                if (performance.now() > deadline) {
                  const counts: Record<string, number> = {}
                  for (const s of statuses) counts[s] = (counts[s] ?? 0) + 1
                  return yield* Effect.dieMessage(`${who}: runs not all waiting after 120 s: ${JSON.stringify(counts)}`)
                }
                yield* Effect.sleep("10 millis")
              }
            })

          // warm the engine with one run, then cancel it
          const warm = yield* wf.start(sleeperWorkflow, { n: 0 })
          yield* allWaiting([warm])
          yield* warm.cancel
          yield* Effect.exit(warm.result)
          yield* Effect.promise(() => pause(20))

          const baselineBytes = yield* Effect.promise(settledHeap)
          const timersBefore = activeTimers()
          const channelsBefore = yield* channels.size
          const t0 = performance.now()
          let runs = yield* Effect.forEach(range(n), () => wf.start(sleeperWorkflow, { n: 0 }))
          yield* allWaiting(runs)
          const startMs = performance.now() - t0
          const channelsWaiting = (yield* channels.size) - channelsBefore
          const waitingBytes = yield* Effect.promise(settledHeap)

          const t1 = performance.now()
          // Each run's outcome is read right after its cancel: the memory store keeps at most 10,000 finished runs
          // (its default retention bound), so past that, canceling all first dropped the first ones' records before
          // their outcome was read (the 100,000-run point "did not end canceled").
          const canceled = yield* Effect.forEach(runs, (run) =>
            Effect.zipRight(run.cancel, Effect.map(Effect.exit(run.result), isCanceled)))
          const cancelMs = performance.now() - t1
          const notCanceled = canceled.filter((c) => !c).length
          if (notCanceled > 0) return yield* Effect.dieMessage(`${who}: ${notCanceled} runs did not end canceled`)
          runs = []
          yield* Effect.promise(() => pause(20))
          const channelsAfter = (yield* channels.size) - channelsBefore
          const retainedRuns = (yield* store.listRuns({ workflowId: sleeperWorkflow.id })).length
          const afterCancelBytes = yield* Effect.promise(settledHeap)
          const timersLeft = activeTimers() - timersBefore
          const sample: MemorySample = {
            baselineBytes,
            waitingBytes,
            afterCancelBytes,
            n,
            timersLeft,
            startMs,
            cancelMs,
            channelsWaiting,
            channelsAfter,
            retainedRuns
          }
          return sample
        })
      )
  }
}

export const load = async (): Promise<Loaded> => ({
  contenders: [makeContender("default", WorkflowEngine.layerDefault), makeContender("evented", WorkflowEngine.layerEvented)],
  unavailable: []
})
