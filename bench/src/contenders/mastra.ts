/**
 * @mastra/core workflows, default engine and evented engine, on the same graphs:
 * createWorkflow / createStep / .then / .parallel / .branch / .map / .sleep, steps writing with `writer.write`
 * and `writer.custom`,
 * readers on `run.stream().fullStream` (the first reader) and `run.observeStream()` (the others).
 *
 * Each measurement builds a fresh `Mastra` with an `InMemoryStore` and an `EventEmitterPubSub`
 * (the evented engine also gets `startWorkers()`), so run snapshots from earlier measurements do
 * not accumulate.
 */
import { EventEmitter } from "node:events"
import { EventEmitterPubSub } from "@mastra/core/events"
import { Mastra } from "@mastra/core/mastra"
import { InMemoryStore } from "@mastra/core/storage"
import * as DefaultKit from "@mastra/core/workflows"
import type { WorkflowStreamEvent } from "@mastra/core/workflows"
import * as EventedKit from "@mastra/core/workflows/evented"
import { z } from "zod"
import { activeTimers, LatencyRecorder, pause, pollUntil, runPool, settledHeap, timed, waitUntil } from "../measure.ts"
import type { Contender, Loaded, MemorySample } from "../types.ts"
import {
  armId,
  asChunk,
  BRANCH_STAGES,
  bump,
  checkFanOut,
  checkLinear,
  checkReaders,
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

/**
 * The builder functions used here. The evented module exports the same builders with the same
 * signatures (its steps and workflows only differ in the engine type tag), so one type serves both.
 */
interface Kit {
  readonly createStep: typeof DefaultKit.createStep
  readonly createWorkflow: typeof DefaultKit.createWorkflow
}
const kits: Record<EngineKind, Kit> = {
  default: DefaultKit,
  evented: EventedKit as unknown as Kit
}

/**
 * 100 `observeStream()` readers of one run, and (evented engine) one `workflows-finish` listener per
 * waiting run, put up to ~10,000 listeners on one emitter: expected here, so no leak warnings.
 */
EventEmitter.defaultMaxListeners = Math.max(EventEmitter.defaultMaxListeners, 20_000)

const PayloadSchema = z.object({ n: z.number() })
const WriterInput = z.object({ n: z.number(), chunks: z.number(), spacingUs: z.number() })
const HOUR_MS = 3_600_000

type AnyWorkflow = ReturnType<Kit["createWorkflow"]>
type AnyRun = Awaited<ReturnType<AnyWorkflow["createRun"]>>

/** Builds the workflows of one measurement and the Mastra instance that runs them. */
const makeEngine = async (engine: EngineKind, build: (kit: Kit) => AnyWorkflow) => {
  const workflow = build(kits[engine])
  const mastra = new Mastra({
    workflows: { [workflow.id]: workflow },
    storage: new InMemoryStore(),
    pubsub: new EventEmitterPubSub(),
    logger: false
  })
  if (engine === "evented") await mastra.startWorkers()
  return {
    workflow,
    // shutdown() also drops the module-level hooks that would otherwise keep this instance (and its store) alive
    close: () => mastra.shutdown({ drainTimeout: 1_000 })
  }
}

const noopStep = (kit: Kit, id: string) =>
  kit.createStep({
    id,
    inputSchema: PayloadSchema,
    outputSchema: PayloadSchema,
    execute: async ({ inputData }) => bump(inputData)
  })

/** A linear workflow of `steps` no-op steps (10 but in the steps-per-run curve). */
const linearWorkflow = (steps: number) => (kit: Kit): AnyWorkflow => {
  let wf = kit.createWorkflow({ id: `linear-${steps}`, inputSchema: PayloadSchema, outputSchema: PayloadSchema })
  for (const id of linearIds(steps)) wf = wf.then(noopStep(kit, id))
  return wf.commit()
}

const fanOutWorkflow = (kit: Kit): AnyWorkflow =>
  kit
    .createWorkflow({ id: "fan-out", inputSchema: PayloadSchema, outputSchema: z.record(PayloadSchema) })
    .parallel(stepIds.slice(0, FAN_OUT).map((id) => noopStep(kit, id)))
    .commit()

/** One step writing `chunks` chunks (spaced `spacingUs` apart when > 0, stamped with `t` then). */
const writerWorkflow = (kit: Kit): AnyWorkflow =>
  kit
    .createWorkflow({ id: "writer", inputSchema: WriterInput, outputSchema: WriterInput })
    .then(
      kit.createStep({
        id: "write",
        inputSchema: WriterInput,
        outputSchema: WriterInput,
        execute: async ({ inputData, writer }) => {
          const { chunks, spacingUs } = inputData
          if (spacingUs > 0) {
            const start = performance.now()
            for (let i = 0; i < chunks; i++) {
              await waitUntil(start + (i * spacingUs) / 1000)
              await writer.write({ i, t: performance.now() })
            }
          } else {
            for (let i = 0; i < chunks; i++) await writer.write({ i })
          }
          return inputData
        }
      })
    )
    .commit()

/** A step, then a 1-hour sleep, then a step: runs park in the sleep. */
const sleeperWorkflow = (kit: Kit): AnyWorkflow =>
  kit
    .createWorkflow({ id: "sleeper", inputSchema: PayloadSchema, outputSchema: PayloadSchema })
    .then(noopStep(kit, "before"))
    .sleep(HOUR_MS)
    .then(noopStep(kit, "after"))
    .commit()

/** A branch arm: writes one tick with `writer.custom`, then bumps n. */
const armStep = (kit: Kit, arm: "even" | "odd", stage: number) =>
  kit.createStep({
    id: armId(arm, stage),
    inputSchema: PayloadSchema,
    outputSchema: PayloadSchema,
    execute: async ({ inputData, writer }) => {
      await writer.custom(tick(stage, inputData.n))
      return bump(inputData)
    }
  })

/** BRANCH_STAGES stages of: a branch of two arms on the input's parity, then a map taking the taken arm's output. */
const branchWorkflow = (kit: Kit): AnyWorkflow => {
  let wf: AnyWorkflow = kit.createWorkflow({ id: "branching", inputSchema: PayloadSchema, outputSchema: PayloadSchema })
  for (let stage = 0; stage < BRANCH_STAGES; stage++) {
    wf = wf
      .branch([
        [async ({ inputData }) => isEven(inputData), armStep(kit, "even", stage)],
        [async ({ inputData }) => isOdd(inputData), armStep(kit, "odd", stage)]
      ])
      .map(async ({ inputData }) => pickArm(stage, inputData))
  }
  return wf.commit()
}

/** Throws unless a run ended in success, with its status and (when it failed) its error's message. */
function expectSuccess<R extends { readonly status: string }>(
  who: string,
  result: R
): asserts result is Extract<R, { readonly status: "success" }> {
  if (result.status === "success") return
  const cause: unknown = "error" in result ? result.error : undefined
  const message = typeof cause === "object" && cause !== null && "message" in cause ? cause.message : cause
  const error = message === undefined ? "" : `: ${typeof message === "string" ? message : JSON.stringify(message)}`
  throw new Error(`${who}: run ended ${result.status}${error}`)
}

/** Returns the chunk carried by a `workflow-step-output` event (what `writer.write` produced). */
const chunkOf = (event: WorkflowStreamEvent) => {
  if (event.type !== "workflow-step-output") return undefined
  const payload: unknown = event.payload
  return typeof payload === "object" && payload !== null && "output" in payload ? asChunk(payload.output) : undefined
}

const readAll = async (stream: ReadableStream<WorkflowStreamEvent>, onChunk: (t: number | undefined) => void): Promise<number> => {
  let count = 0
  for await (const event of stream) {
    const chunk = chunkOf(event)
    if (chunk !== undefined) {
      count++
      onChunk(chunk.t)
    }
  }
  return count
}

/** Starts the writer run and reads it with `readers` readers; resolves with each reader's chunk count. */
const streamRun = async (
  workflow: AnyWorkflow,
  input: z.infer<typeof WriterInput>,
  readers: number,
  onChunk: (t: number | undefined) => void
): Promise<ReadonlyArray<number>> => {
  const run = await workflow.createRun()
  const output = run.stream({ inputData: input })
  // observeStream() only sees a run once stream() has started it
  const others = Array.from({ length: readers - 1 }, () => readAll(run.observeStream(), onChunk))
  const counts = await Promise.all([readAll(output.fullStream, onChunk), ...others])
  const result = await output.result
  expectSuccess("writer", result)
  return counts
}

const makeContender = (engine: EngineKind): Contender => {
  const who = `mastra-${engine}`
  return {
    id: who,
    label: `mastra (${engine})`,
    kind: "peer",
    notes: {
      writer: "readers: run.stream().fullStream plus run.observeStream() for each further reader",
      branch: "reader: run.stream().fullStream; a map per stage is a mapping step of its own" +
        (engine === "evented"
          ? "; this engine's stream delivers writer.custom events without their data ({ type, runId, from, payload: {} }), " +
            "so only their type and count are checked"
          : "; the branch's output also lists the arm that did not run, as undefined"),
      memory: "canceled runs stay in InMemoryStore (snapshots, by design), so the residual includes them" +
        (engine === "evented"
          ? "; each waiting run listens on workflows-finish, so canceling n runs costs O(n²), and canceled runs " +
            "keep their 1-hour sleep timers (timers left)"
          : "")
    },
    stepOverhead: async (runs, concurrency, steps) => {
      const { workflow, close } = await makeEngine(engine, linearWorkflow(steps))
      try {
        const ms = await timed(() =>
          runPool(runs, concurrency, async () => {
            const run = await workflow.createRun()
            const result = await run.start({ inputData: { n: 0 } })
            expectSuccess(who, result)
            checkLinear(who, result.result, steps)
          })
        )
        return { ms }
      } finally {
        await close()
      }
    },
    fanOut: async (runs) => {
      const { workflow, close } = await makeEngine(engine, fanOutWorkflow)
      try {
        const ms = await timed(() =>
          runPool(runs, 1, async () => {
            const run = await workflow.createRun()
            const result = await run.start({ inputData: { n: 0 } })
            expectSuccess(who, result)
            checkFanOut(who, result.result)
          })
        )
        return { ms }
      } finally {
        await close()
      }
    },
    writerThroughput: async (chunks, readers) => {
      const { workflow, close } = await makeEngine(engine, writerWorkflow)
      try {
        let counts: ReadonlyArray<number> = []
        const ms = await timed(async () => {
          counts = await streamRun(workflow, { n: 0, chunks, spacingUs: 0 }, readers, () => {})
        })
        checkReaders(who, counts, chunks)
        return { ms }
      } finally {
        await close()
      }
    },
    latency: async (n, spacingUs) => {
      const { workflow, close } = await makeEngine(engine, writerWorkflow)
      try {
        const recorder = new LatencyRecorder(n)
        const ms = await timed(async () => {
          await streamRun(workflow, { n: 0, chunks: n, spacingUs }, 1, (t) => recorder.receive(t ?? Number.NaN))
        })
        return recorder.summarize(who, ms)
      } finally {
        await close()
      }
    },
    branchCustom: async (runs) => {
      const { workflow, close } = await makeEngine(engine, branchWorkflow)
      try {
        const ms = await timed(() =>
          runPool(runs, 1, async () => {
            const check = new TickCheck(who, { dataDropped: engine === "evented" })
            const run = await workflow.createRun()
            const output = run.stream({ inputData: { n: 0 } })
            for await (const event of output.fullStream) check.offer(event)
            const result = await output.result
            expectSuccess(who, result)
            check.done(result.result)
          })
        )
        return { ms }
      } finally {
        await close()
      }
    },
    memoryWaiting: async (n): Promise<MemorySample> => {
      const { workflow, close } = await makeEngine(engine, sleeperWorkflow)
      try {
        /** Runs that reached the sleep: counted by the `workflow-step-waiting` event each emits. */
        let waiting = 0
        const startWaiting = async (): Promise<{ run: AnyRun; result: Promise<unknown> }> => {
          const run = await workflow.createRun()
          const unwatch = run.watch((event) => {
            if (event.type === "workflow-step-waiting") {
              waiting++
              unwatch()
            }
          })
          return { run, result: run.start({ inputData: { n: 0 } }) }
        }
        // warm the engine with one run, then cancel it
        const warm = await startWaiting()
        await pollUntil(`${who} warm-up run to wait`, () => waiting === 1)
        await warm.run.cancel()
        await warm.result
        waiting = 0
        await pause(20)

        const baselineBytes = await settledHeap()
        const timersBefore = activeTimers()
        const t0 = performance.now()
        let handles: Array<{ run: AnyRun; result: Promise<unknown> }> = []
        for (let i = 0; i < n; i++) handles.push(await startWaiting())
        await pollUntil(`${who}: ${n} runs to wait`, () => waiting >= n, 120_000)
        const startMs = performance.now() - t0
        const waitingBytes = await settledHeap()

        const t1 = performance.now()
        for (const handle of handles) await handle.run.cancel()
        const results = await Promise.all(handles.map((handle) => handle.result))
        const cancelMs = performance.now() - t1
        const notCanceled = results.filter((r) => typeof r !== "object" || r === null || !("status" in r) || r.status !== "canceled")
        if (notCanceled.length > 0) throw new Error(`${who}: ${notCanceled.length} runs did not end canceled`)
        handles = []
        await pause(20)
        const afterCancelBytes = await settledHeap()
        const timersLeft = activeTimers() - timersBefore
        return { baselineBytes, waitingBytes, afterCancelBytes, n, timersLeft, startMs, cancelMs }
      } finally {
        await close()
      }
    }
  }
}

export const load = async (): Promise<Loaded> => ({
  contenders: [makeContender("default"), makeContender("evented")],
  unavailable: []
})
