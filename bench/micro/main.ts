/**
 * Micro-benchmarks of the Effect patterns that stepwise's hot paths were chosen by (stepwise code runs only in 5):
 *
 *   npm run bench:micro
 *
 * Each figure is the minimum over 5 passes of the mean cost of one operation, on the machine's Node with the root's
 * effect. They explain design choices; the figures that compare runtimes are in `npm run bench`.
 *
 * 1. A parallel of 10 no-op branches: `Effect.forEach` with unbounded concurrency, against forking each branch and
 *    awaiting the fibers in order, and against the same taking the exit of a fiber that has already ended without
 *    `await` (what an inline `parallel` does, interpreter.ts `forkAll`).
 * 2. Starting a fiber: `forkIn` alone, against `forkIn` with a start gate (a `Deferred` the fiber awaits first).
 * 3. Consuming messages from a queue: through `Stream.fromQueue(..., { maxChunkSize: 1 })` and `runForEach`, through
 *    the same Stream pulled with `Stream.toPull` (how the engine's bus consumers read, internal/consume.ts), and with
 *    a bare `Queue.take` loop.
 * 4. A recorded step with and without `Effect.provideService` around its code (stepwise provides the user context
 *    once per walk, not per step).
 * 5. Taking a free lock around a no-op: `Semaphore.withPermits(1)` against stepwise's own lock (src/internal/mutex.ts,
 *    the one stepwise code that runs here), which the evented engine takes for every step's end.
 */
import { Context, Deferred, Effect, Exit, Fiber, PubSub, Queue, Scope, Stream } from "effect"
import * as Mutex from "../../src/internal/engine/mutex.js"

const passes = 5

/** The least mean cost, in microseconds, of `n` runs of `once` over `passes` passes (after a warm-up pass). */
const measure = async (n: number, once: Effect.Effect<unknown>): Promise<number> => {
  const pass = Effect.gen(function*() {
    for (let i = 0; i < n; i++) yield* once
  })
  await Effect.runPromise(pass)
  let best = Number.POSITIVE_INFINITY
  for (let p = 0; p < passes; p++) {
    const t0 = performance.now()
    await Effect.runPromise(pass)
    best = Math.min(best, ((performance.now() - t0) * 1000) / n)
  }
  return best
}

const branches = Array.from({ length: 10 }, (_, i) => i)
const branch = (i: number) => Effect.either(Effect.sync(() => i + 1))

const viaForEach = Effect.forEach(branches, branch, { concurrency: "unbounded" })

const forkEach = (poll: boolean) =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const fibers: Array<Fiber.RuntimeFiber<unknown>> = []
      for (const i of branches) fibers.push(yield* Effect.fork(restore(branch(i))))
      const exits: Array<Exit.Exit<unknown>> = []
      for (const fiber of fibers) exits.push((poll ? fiber.unsafePoll() : null) ?? (yield* fiber.await))
      return exits
    })
  )

const noop = Effect.sync(() => 1)

const forkOnly = (scope: Scope.Scope) => Effect.flatMap(Effect.forkIn(noop, scope), (fiber) => fiber.await)

const forkWithGate = (scope: Scope.Scope) =>
  Effect.gen(function*() {
    const gate = yield* Deferred.make<void>()
    const fiber = yield* Effect.forkIn(Effect.zipRight(Deferred.await(gate), noop), scope)
    yield* Deferred.succeed(gate, undefined)
    return yield* fiber.await
  })

/** Cost per message of a consumer that handles `n` messages, offered one at a time with a yield between them. */
const consume = async (
  n: number,
  consumer: (queue: Queue.Queue<number>, onMessage: () => boolean) => Effect.Effect<void>
): Promise<number> => {
  let best = Number.POSITIVE_INFINITY
  for (let p = 0; p <= passes; p++) {
    const t0 = performance.now()
    await Effect.runPromise(Effect.gen(function*() {
      const queue = yield* Queue.unbounded<number>()
      let received = 0
      const fiber = yield* Effect.fork(consumer(queue, () => ++received === n))
      for (let i = 0; i < n; i++) {
        queue.unsafeOffer(i)
        yield* Effect.yieldNow()
      }
      yield* Fiber.join(fiber)
    }))
    if (p > 0) best = Math.min(best, ((performance.now() - t0) * 1000) / n)
  }
  return best
}

class StepInfo extends Context.Tag("bench/StepInfo")<StepInfo, { readonly id: string }>() {}

/** A step that records a start and a result event and publishes both; `provide` wraps its code in provideService. */
const recordedStep = (pubsub: PubSub.PubSub<unknown>, log: Array<unknown>, provide: boolean) => {
  const code = Effect.sync(() => ({ n: 1 }))
  return Effect.suspend(() => {
    const start = { type: "start", at: Date.now() }
    log.push(start)
    return PubSub.publish(pubsub, start).pipe(
      Effect.zipRight(Effect.exit(provide ? Effect.provideService(code, StepInfo, { id: "s" }) : code)),
      Effect.flatMap((exit) => {
        const result = { type: "result", exit, at: Date.now() }
        log.push(result)
        if (log.length > 1000) log.length = 0
        return PubSub.publish(pubsub, result)
      })
    )
  })
}

const main = Effect.gen(function*() {
  const scope = yield* Scope.make()
  const pubsub = yield* PubSub.unbounded<unknown>()
  const log: Array<unknown> = []
  const rows: Array<[string, number]> = []
  rows.push(["1. parallel of 10: Effect.forEach, unbounded", yield* Effect.promise(() => measure(5_000, viaForEach))])
  rows.push(["1. parallel of 10: fork each, await in order", yield* Effect.promise(() => measure(5_000, forkEach(false)))])
  rows.push(["1. parallel of 10: fork each, take ended fibers' exits, else await", yield* Effect.promise(() => measure(5_000, forkEach(true)))])
  rows.push(["2. forkIn, then await", yield* Effect.promise(() => measure(50_000, forkOnly(scope)))])
  rows.push(["2. forkIn behind a start gate, then await", yield* Effect.promise(() => measure(50_000, forkWithGate(scope)))])
  rows.push([
    "3. per message: Stream.fromQueue + runForEach",
    yield* Effect.promise(() =>
      consume(50_000, (queue, onMessage) =>
        Stream.fromQueue(queue, { maxChunkSize: 1 }).pipe(
          Stream.runForEach(() => onMessage() ? Effect.fail("done" as const) : Effect.void),
          Effect.ignore
        ))
    )
  ])
  rows.push([
    "3. per message: Stream.fromQueue + Stream.toPull loop",
    yield* Effect.promise(() =>
      consume(50_000, (queue, onMessage) =>
        Effect.scoped(Effect.flatMap(Stream.toPull(Stream.fromQueue(queue, { maxChunkSize: 1 })), (pull) =>
          Effect.gen(function*() {
            while (true) {
              yield* pull
              if (onMessage()) return
            }
          }))).pipe(Effect.ignore))
    )
  ])
  rows.push([
    "3. per message: Queue.take loop",
    yield* Effect.promise(() =>
      consume(50_000, (queue, onMessage) =>
        Effect.gen(function*() {
          while (true) {
            yield* Queue.take(queue)
            if (onMessage()) return
          }
        }))
    )
  ])
  rows.push(["4. recorded step", yield* Effect.promise(() => measure(100_000, recordedStep(pubsub, log, false)))])
  rows.push([
    "4. recorded step, code under provideService",
    yield* Effect.promise(() => measure(100_000, recordedStep(pubsub, log, true)))
  ])
  const semaphore = yield* Effect.makeSemaphore(1)
  const mutex = Mutex.make()
  rows.push(["5. free lock: Semaphore.withPermits(1)", yield* Effect.promise(() => measure(200_000, semaphore.withPermits(1)(Effect.void)))])
  rows.push(["5. free lock: stepwise's Mutex.withLock", yield* Effect.promise(() => measure(200_000, mutex.withLock(Effect.void)))])
  console.log(`# Effect micro-benchmarks (Node ${process.version}; min of ${passes} passes)\n`)
  console.log("| pattern | µs |")
  console.log("|---|---:|")
  for (const [name, us] of rows) console.log(`| ${name} | ${us.toFixed(2)} |`)
})

Effect.runPromise(main).catch((error) => {
  console.error(error)
  process.exit(1)
})
