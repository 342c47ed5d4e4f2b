/**
 * Floors: the same work with no workflow runtime at all, so every figure can also be read as
 * "x times the floor". The step and fan-out floors take a few milliseconds per pass, so they repeat
 * the pass until 50 ms have elapsed and report the mean (`timedMean`).
 * - "floor-loop": a plain JS loop awaiting the same step functions directly (steps, fan-out), and
 *   plain timers for waiting runs (memory).
 * - "floor-effect": the same loop as Effects in one fiber per run; raw Effect `PubSub`
 *   publish/subscribe of the same chunks (writer, latency, readers) and ticks (branches); forked
 *   fibers sleeping 1 hour (memory).
 * - "floor-record": the least bookkeeping a runtime that records its steps does, written directly
 *   in Effect (steps, fan-out, branches): see `recordedStep`.
 */
import { Effect, Either, Exit, Fiber, Option, PubSub, Schema, Stream } from "effect"
import { activeTimers, LatencyRecorder, pause, runPool, settledHeap, timed, timedMean, waitUntil } from "../measure.ts"
import type { Contender, Loaded, MemorySample } from "../types.ts"
import {
  armId,
  asTick,
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
  type Payload,
  pickArm,
  stepIds,
  tick,
  type Tick,
  TickCheck
} from "../work.ts"

/** The step function as an async function: the cheapest thing a JS runtime could call per step. */
const stepAsync = async (input: Payload): Promise<Payload> => bump(input)
const stepEffect = (input: Payload): Effect.Effect<Payload> => Effect.sync(() => bump(input))

const HOUR_MS = 3_600_000

const floorLoop: Contender = {
  id: "floor-loop",
  label: "floor: plain loop",
  kind: "floor",
  notes: {
    steps: "a JS loop awaiting the step function (an async function) directly",
    memory: "n pending 1-hour timers, each awaited by a promise; cancel = clearTimeout"
  },
  stepOverhead: async (runs, concurrency, steps) => ({
    ms: await timedMean(() =>
      runPool(runs, concurrency, async () => {
        let x: Payload = { n: 0 }
        for (let s = 0; s < steps; s++) x = await stepAsync(x)
        checkLinear("floor-loop", x, steps)
      })
    )
  }),
  fanOut: async (runs) => ({
    ms: await timedMean(() =>
      runPool(runs, 1, async () => {
        const x: Payload = { n: 0 }
        const out = await Promise.all(Array.from({ length: FAN_OUT }, () => stepAsync(x)))
        checkFanOut("floor-loop", out)
      })
    )
  }),
  writerThroughput: async () => undefined,
  latency: async () => undefined,
  branchCustom: async () => undefined,
  memoryWaiting: async (n) => {
    const baselineBytes = await settledHeap()
    const timersBefore = activeTimers()
    const t0 = performance.now()
    let timers: Array<NodeJS.Timeout> = []
    let done: Array<Promise<string>> = []
    let cancels: Array<() => void> = []
    for (let i = 0; i < n; i++) {
      done.push(
        new Promise<string>((resolve) => {
          const timer = setTimeout(() => resolve("woke"), HOUR_MS)
          timers.push(timer)
          cancels.push(() => {
            clearTimeout(timer)
            resolve("canceled")
          })
        })
      )
    }
    const startMs = performance.now() - t0
    const waitingBytes = await settledHeap()
    const t1 = performance.now()
    for (const cancel of cancels) cancel()
    const outcomes = await Promise.all(done)
    const cancelMs = performance.now() - t1
    if (outcomes.some((o) => o !== "canceled")) throw new Error("floor-loop: a timer was not canceled")
    timers = []
    done = []
    cancels = []
    await pause(10)
    const afterCancelBytes = await settledHeap()
    return { baselineBytes, waitingBytes, afterCancelBytes, n, timersLeft: activeTimers() - timersBefore, startMs, cancelMs }
  }
}

/**
 * One figure-7 run with no runtime: each stage evaluates both conditions (as Effects, in order), runs the arm
 * that holds through `runArm` (which also delivers its tick), and takes its output as the stage's map would;
 * a reader fiber subscribed to `pubsub` before the first stage checks the ticks.
 */
const branchingRun = <A>(
  who: string,
  pubsub: PubSub.PubSub<A>,
  runArm: (id: string, written: Tick, input: Payload) => Effect.Effect<Payload>
): Effect.Effect<void> =>
  Effect.scoped(
    Effect.gen(function* () {
      const check = new TickCheck(who)
      const subscription = yield* PubSub.subscribe(pubsub)
      const reader = yield* Stream.fromQueue(subscription).pipe(
        Stream.filterMap((event) => Option.fromNullable(asTick(event))),
        Stream.take(BRANCH_STAGES),
        Stream.runFold(check, (checking, received) => {
          checking.offer(received)
          return checking
        }),
        Effect.fork
      )
      let x: Payload = { n: 0 }
      for (let stage = 0; stage < BRANCH_STAGES; stage++) {
        const input = x
        const out: Record<string, Payload> = {}
        const even = yield* Effect.sync(() => isEven(input))
        const odd = yield* Effect.sync(() => isOdd(input))
        const written = tick(stage, input.n)
        if (even) out[armId("even", stage)] = yield* runArm(armId("even", stage), written, input)
        if (odd) out[armId("odd", stage)] = yield* runArm(armId("odd", stage), written, input)
        x = pickArm(stage, out)
      }
      yield* Fiber.join(reader)
      check.done(x)
    })
  )

/** Readers subscribed before the first publish, each taking exactly `chunks` chunks. */
const pubsubRun = (
  chunks: number,
  readers: number,
  onChunk: (chunk: Chunk) => void,
  publishAll: (pubsub: PubSub.PubSub<Chunk>) => Effect.Effect<void>
): Effect.Effect<ReadonlyArray<number>> =>
  Effect.scoped(
    Effect.gen(function* () {
      const pubsub = yield* PubSub.unbounded<Chunk>()
      const subscriptions = yield* Effect.forEach(Array.from({ length: readers }), () => PubSub.subscribe(pubsub))
      const fibers = yield* Effect.forEach(subscriptions, (subscription) =>
        Stream.fromQueue(subscription).pipe(
          Stream.take(chunks),
          // a pure fold: a per-element Stream.tap effect would cost more than the PubSub itself
          Stream.runFold(0, (count, chunk) => {
            onChunk(chunk)
            return count + 1
          }),
          Effect.fork
        )
      )
      yield* publishAll(pubsub)
      return yield* Fiber.joinAll(fibers)
    })
  )

const floorEffect: Contender = {
  id: "floor-effect",
  label: "floor: Effect",
  kind: "floor",
  notes: {
    steps: "Effect.gen loop of Effect.sync(step) per run; runs via Effect.forEach with the given concurrency",
    writer: "raw PubSub.unbounded: one publish per chunk, readers = PubSub.subscribe + Stream.fromQueue",
    branch: "per run: a PubSub, a subscriber fiber reading the ticks, and a loop evaluating both conditions as Effects, " +
      "publishing the tick and running the arm's Effect.sync step",
    memory: "n forked fibers in Effect.sleep(1 hour); cancel = Fiber.interrupt"
  },
  stepOverhead: async (runs, concurrency, steps) => {
    const oneRun = Effect.gen(function* () {
      let x: Payload = { n: 0 }
      for (let s = 0; s < steps; s++) x = yield* stepEffect(x)
      checkLinear("floor-effect", x, steps)
    })
    const all = Effect.forEach(Array.from({ length: runs }), () => oneRun, { concurrency, discard: true })
    return { ms: await timedMean(() => Effect.runPromise(all)) }
  },
  fanOut: async (runs) => {
    const oneRun = Effect.all(Array.from({ length: FAN_OUT }, () => stepEffect({ n: 0 })), { concurrency: "unbounded" }).pipe(
      Effect.map((out) => checkFanOut("floor-effect", out))
    )
    const all = Effect.forEach(Array.from({ length: runs }), () => oneRun, { discard: true })
    return { ms: await timedMean(() => Effect.runPromise(all)) }
  },
  writerThroughput: async (chunks, readers) => {
    let counts: ReadonlyArray<number> = []
    const ms = await timed(async () => {
      counts = await Effect.runPromise(
        pubsubRun(chunks, readers, () => {}, (pubsub) =>
          Effect.gen(function* () {
            for (let i = 0; i < chunks; i++) yield* PubSub.publish(pubsub, { i })
          })
        )
      )
    })
    checkReaders("floor-effect", counts, chunks)
    return { ms }
  },
  latency: async (n, spacingUs) => {
    const recorder = new LatencyRecorder(n)
    const ms = await timed(async () => {
      await Effect.runPromise(
        pubsubRun(n, 1, (chunk) => recorder.receive(chunk.t ?? Number.NaN), (pubsub) =>
          Effect.gen(function* () {
            const start = performance.now()
            for (let i = 0; i < n; i++) {
              yield* Effect.promise(() => waitUntil(start + (i * spacingUs) / 1000))
              yield* PubSub.publish(pubsub, { i, t: performance.now() })
            }
          })
        )
      )
    })
    return recorder.summarize("floor-effect", ms)
  },
  branchCustom: async (runs) => {
    // a PubSub per run, as each run has a channel of its own
    const oneRun = Effect.flatMap(PubSub.unbounded<Tick>(), (pubsub) =>
      branchingRun("floor-effect", pubsub, (_, written, input) => Effect.zipRight(PubSub.publish(pubsub, written), stepEffect(input))))
    const all = Effect.forEach(Array.from({ length: runs }), () => oneRun, { discard: true })
    return { ms: await timedMean(() => Effect.runPromise(all)) }
  },
  memoryWaiting: async (n): Promise<MemorySample> => {
    const baselineBytes = await settledHeap()
    const timersBefore = activeTimers()
    const t0 = performance.now()
    let fibers = await Effect.runPromise(
      Effect.forEach(Array.from({ length: n }), () => Effect.forkDaemon(Effect.sleep("1 hour")))
    )
    const startMs = performance.now() - t0
    const waitingBytes = await settledHeap()
    const t1 = performance.now()
    const exits = await Effect.runPromise(Effect.forEach(fibers, (fiber) => Fiber.interrupt(fiber)))
    const cancelMs = performance.now() - t1
    if (exits.some((exit) => exit._tag !== "Failure")) throw new Error("floor-effect: a fiber was not interrupted")
    fibers = []
    await pause(10)
    const afterCancelBytes = await settledHeap()
    return { baselineBytes, waitingBytes, afterCancelBytes, n, timersLeft: activeTimers() - timersBefore, startMs, cancelMs }
  }
}

const PayloadSchema = Schema.Struct({ n: Schema.Number })
const encodePayload = Schema.encodeEither(PayloadSchema)

/** What a recorded run keeps: its event log and one record per step, as a memory store would. */
interface RecordedRun {
  readonly events: Array<unknown>
  readonly steps: Map<string, unknown>
}

/**
 * One step with the least bookkeeping a runtime that records its steps (for replay, recovery and
 * readers) cannot skip, written directly in Effect with nothing else around it: encode the input
 * with the step's schema, append a start event to the run's log and publish it, run the step and
 * capture its exit, encode the output, store the step's record with a result event and publish
 * that. `writes` (figure 7: the tick the arm writes) runs inside the step, before its function.
 * The PubSub has no subscriber, as the run channels in figure 1 have none. No step context,
 * no writer, no retries or timeouts, no locks: a floor for what any such runtime costs on Effect,
 * not a design.
 */
const recordedStep = (
  pubsub: PubSub.PubSub<unknown>,
  run: RecordedRun,
  id: string,
  input: Payload,
  writes?: Effect.Effect<unknown>
): Effect.Effect<Payload> =>
  Effect.suspend(() => {
    const encodedInput = encodePayload(input)
    if (Either.isLeft(encodedInput)) return Effect.die(encodedInput.left)
    const start = { type: "step-start", id, payload: encodedInput.right, at: Date.now() }
    run.events.push(start)
    return PubSub.publish(pubsub, start).pipe(
      Effect.zipRight(Effect.exit(writes === undefined ? stepEffect(input) : Effect.zipRight(writes, stepEffect(input)))),
      Effect.flatMap((exit) => {
        if (Exit.isFailure(exit)) return Effect.failCause(exit.cause)
        const encodedOutput = encodePayload(exit.value)
        if (Either.isLeft(encodedOutput)) return Effect.die(encodedOutput.left)
        const result = { type: "step-result", id, output: encodedOutput.right, at: Date.now() }
        run.steps.set(id, { id, status: "success", output: encodedOutput.right })
        run.events.push(result)
        return Effect.as(PubSub.publish(pubsub, result), exit.value)
      })
    )
  })

const floorRecord: Contender = {
  id: "floor-record",
  label: "floor: Effect, recording",
  kind: "floor",
  notes: {
    steps: "per step, in Effect with no runtime around it: encode input and output with the step's Schema, append a start " +
      "and a result event (and the step's record) to an in-memory log, publish both on a PubSub; each run in a fiber of its own",
    fanout: "the same recorded steps, one forked fiber per branch",
    branch: "the same recorded steps; each tick appended to the run's log and published on the run's PubSub, read by a subscriber"
  },
  stepOverhead: async (runs, concurrency, steps) => {
    const pubsub = Effect.runSync(PubSub.unbounded<unknown>())
    const ids = linearIds(steps)
    const oneRun = Effect.gen(function* () {
      const run: RecordedRun = { events: [], steps: new Map() }
      let x: Payload = { n: 0 }
      for (let s = 0; s < steps; s++) x = yield* recordedStep(pubsub, run, ids[s]!, x)
      checkLinear("floor-record", x, steps)
    })
    const all = Effect.forEach(Array.from({ length: runs }), () => Effect.flatMap(Effect.fork(oneRun), Fiber.join), {
      concurrency,
      discard: true
    })
    return { ms: await timedMean(() => Effect.runPromise(all)) }
  },
  fanOut: async (runs) => {
    const pubsub = Effect.runSync(PubSub.unbounded<unknown>())
    const oneRun = Effect.suspend(() => {
      const run: RecordedRun = { events: [], steps: new Map() }
      return Effect.all(stepIds.slice(0, FAN_OUT).map((id) => recordedStep(pubsub, run, id, { n: 0 })), {
        concurrency: "unbounded"
      })
    }).pipe(Effect.map((out) => checkFanOut("floor-record", out)))
    const all = Effect.forEach(Array.from({ length: runs }), () => Effect.flatMap(Effect.fork(oneRun), Fiber.join), {
      discard: true
    })
    return { ms: await timedMean(() => Effect.runPromise(all)) }
  },
  branchCustom: async (runs) => {
    const oneRun = Effect.flatMap(PubSub.unbounded<unknown>(), (pubsub) => {
      const run: RecordedRun = { events: [], steps: new Map() }
      return branchingRun("floor-record", pubsub, (id, written, input) =>
        recordedStep(pubsub, run, id, input, Effect.suspend(() => {
          run.events.push(written)
          return PubSub.publish(pubsub, written)
        })))
    })
    const all = Effect.forEach(Array.from({ length: runs }), () => Effect.flatMap(Effect.fork(oneRun), Fiber.join), {
      discard: true
    })
    return { ms: await timedMean(() => Effect.runPromise(all)) }
  },
  writerThroughput: async () => undefined,
  latency: async () => undefined,
  memoryWaiting: async () => undefined
}

export const load = async (): Promise<Loaded> => ({ contenders: [floorLoop, floorEffect, floorRecord], unavailable: [] })
