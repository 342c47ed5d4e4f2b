/**
 * Bounded memory: one long-lived engine (the default engine over the memory bus and the memory store with its
 * retention) completes many short runs, and then many runs each read live by a reader. The heap is sampled (after a
 * full GC when node runs with --expose-gc) along the way; the bus's channels and the live fibers are counted at the
 * same points. Each phase passes when its last sample of the heap is within `tolerance` of the one after its first
 * 10,000 runs, and no channel is left open.
 */
import { Chunk, Effect, Layer, Schema, Stream, Supervisor } from "effect"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"

export interface MemoryOptions {
  /** Runs of the first phase (default 1,000,000). */
  readonly runs?: number
  /** Runs of the second phase, each read by a reader (default 100,000). */
  readonly readRuns?: number
  /** Runs in flight at once. */
  readonly concurrency?: number
  /** Where samples are taken: after this many runs, and every `every` after (default 10,000 and a tenth of a phase). */
  readonly firstSampleAt?: number
  /** How far the last sample of the heap may be from the first (default 0.1). */
  readonly tolerance?: number
  readonly log?: (line: string) => void
}

/** One point of the curve. */
export interface Sample {
  readonly runs: number
  readonly heapMb: number
  readonly channels: number
  readonly fibers: number
}

export interface PhaseResult {
  readonly name: string
  readonly samples: ReadonlyArray<Sample>
  /** Last heap over first heap, minus one. */
  readonly growth: number
  readonly ok: boolean
  readonly seconds: number
}

const N = Schema.Number

/** A short run: one step that writes an event and a chunk. */
const short = Workflow.make({ id: "memory-short", inputSchema: N, outputSchema: N }).pipe(
  Workflow.then(Step.make({
    id: "once",
    inputSchema: N,
    outputSchema: N,
    execute: ({ inputData, writer }) =>
      Effect.gen(function*() {
        yield* writer.write(inputData)
        const out = yield* Workflow.getWritable<number>()
        yield* out.write(inputData)
        return inputData + 1
      })
  })),
  Workflow.commit
)

const gc = (globalThis as { gc?: () => void }).gc

const heapMb = () => {
  gc?.()
  gc?.()
  return process.memoryUsage().heapUsed / 1024 / 1024
}

/** Runs both phases and reports their curves. */
export const memorySoak = (options: MemoryOptions = {}) =>
  Effect.gen(function*() {
    const log = options.log ?? (() => {})
    const tolerance = options.tolerance ?? 0.1
    const concurrency = options.concurrency ?? 64
    if (gc === undefined) log("(node runs without --expose-gc: heap samples include garbage not yet collected)")
    const supervisor = yield* Supervisor.track
    const phases: Array<PhaseResult> = []
    yield* Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(
        WorkflowEngine.layerDefault.pipe(
          Layer.provideMerge(Layer.merge(
            EventBus.layerMemory,
            RunStore.layerMemoryWith({ retention: "10 seconds", maxFinishedRuns: 1_000 })
          ))
        )
      )
      const engine = yield* Effect.provide(WorkflowEngine.WorkflowEngine, context)
      const channels = yield* Effect.provide(EventBus.MemoryChannels, context)

      const phase = (name: string, total: number, one: (n: number) => Effect.Effect<void, unknown>) =>
        Effect.gen(function*() {
          const began = Date.now()
          const first = Math.min(options.firstSampleAt ?? 10_000, total)
          const every = Math.max(1, Math.floor(total / 10))
          const samples: Array<Sample> = []
          const sample = (runs: number) =>
            Effect.gen(function*() {
              const point = {
                runs,
                heapMb: heapMb(),
                channels: yield* channels.size,
                fibers: (yield* supervisor.value).length
              }
              samples.push(point)
              log(`${name}: ${runs} runs, heap ${point.heapMb.toFixed(1)} MB, ${point.channels} channels open, ` +
                `${point.fibers} fibers alive, ${((Date.now() - began) / 1000).toFixed(0)} s`)
            })
          let done = 0
          const marks = new Set<number>([first, total])
          for (let at = every; at < total; at += every) if (at > first) marks.add(at)
          const ordered = Array.from(marks).sort((a, b) => a - b)
          for (const mark of ordered) {
            yield* Effect.forEach(
              Array.from({ length: mark - done }, (_, k) => done + k),
              one,
              { concurrency, discard: true }
            )
            done = mark
            yield* sample(done)
          }
          const growth = samples[samples.length - 1]!.heapMb / samples[0]!.heapMb - 1
          const last = samples[samples.length - 1]!
          const ok = Math.abs(growth) <= tolerance && last.channels === 0
          const result = { name, samples, growth, ok, seconds: (Date.now() - began) / 1000 }
          log(`${name}: heap after the last run is ${(growth * 100).toFixed(1)}% from after the first ${first}; ` +
            `${last.channels} channels open (${ok ? "ok" : "NOT OK"})`)
          phases.push(result)
        })

      yield* phase("runs", options.runs ?? 1_000_000, (n) =>
        Effect.flatMap(engine.start(short, n), (run) => run.result))
      yield* phase("runs read live", options.readRuns ?? 100_000, (n) =>
        Effect.gen(function*() {
          const run = yield* engine.start(short, n)
          const [chunks] = yield* Effect.all([
            Stream.runCollect(run.readable<number>()),
            Stream.runDrain(run.events()),
            run.result
          ], { concurrency: "unbounded" })
          if (Chunk.size(chunks) !== 1) return yield* Effect.dieMessage(`run ${run.runId}: read ${Chunk.size(chunks)} chunks`)
        }))
    }).pipe(Effect.supervised(supervisor)))
    return phases
  })
