/**
 * Consuming a Stream element by element, for the engine's own long-lived consumers (bus subscriptions).
 *
 * `Stream.runForEach` sends every element through two channel executors, the stream's and the sink's; pulling the
 * stream's chunks with `Stream.toPull` goes through the stream's alone. And the consumer yields after each chunk (see
 * `forEachChunk`). In the evented engine, which receives two commands per step, the two together took about a fifth
 * off a step in memory: 124–133 µs before, 95–108 after, builds run in turns on one machine (the pull alone is about a
 * tenth cheaper per message in `npm run bench:micro`).
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/**
 * Where a Stream that only takes from a queue (the memory bus's subscriptions) keeps a pull that takes from that queue
 * directly. Pulling a Stream goes through Effect's channel executor, which cost about 20 fiber operations per pull, a
 * pull per command in the evented engine (two per step). The pull is a property of the very Stream object the bus's
 * `subscribe` answered: a decorator that changes the stream (`Stream.takeUntil`, a `map`) makes a new Stream, without
 * it, and is consumed the ordinary way; one that passes the stream on unchanged is consumed as the bus built it.
 */
const directPull = Symbol.for("stepwise/internal/bus/directPull")

interface DirectPull<A, E> {
  readonly [directPull]: Effect.Effect<Chunk.Chunk<A>, Option.Option<E>>
}

/**
 * `Stream.fromQueue(queue, { maxChunkSize })`, carrying a direct pull of the same chunks: at least one element, at
 * most `maxChunkSize`, and the end of the stream once the queue is shut down.
 */
export const fromQueue = <A>(queue: Queue.Dequeue<A>, maxChunkSize: number): Stream.Stream<A> => {
  const stream = Stream.fromQueue(queue, { maxChunkSize })
  const pull: Effect.Effect<Chunk.Chunk<A>, Option.Option<never>> = Effect.catchAllCause(
    Queue.takeBetween(queue, 1, maxChunkSize),
    (cause) =>
      Effect.flatMap(Queue.isShutdown(queue), (down) =>
        down && Cause.isInterrupted(cause) ? Effect.fail(Option.none()) : Effect.failCause(cause))
  )
  return Object.assign(stream, { [directPull]: pull })
}

const pullOf = <A, E, R>(stream: Stream.Stream<A, E, R>) =>
  directPull in stream
    ? Effect.succeed((stream as unknown as DirectPull<A, E>)[directPull])
    : Stream.toPull(stream)

/**
 * Runs `f` on every chunk of `stream`, in order, until the stream ends (then succeeds) or fails (then fails with its
 * error). The stream is opened in the caller's scope.
 */
export const forEachChunk = <A, E, R, R2>(
  stream: Stream.Stream<A, E, R>,
  f: (chunk: Chunk.Chunk<A>) => Effect.Effect<unknown, never, R2>
): Effect.Effect<void, E, R | R2 | Scope.Scope> =>
  Effect.flatMap(pullOf(stream), (pull) => {
    // Yields after each chunk, so that what `f` started (a fiber it forked, a reader it woke) runs before the next
    // pull; often it has sent the next element by then, and a pull that finds one waiting costs less than one that
    // waits.
    const loop: Effect.Effect<never, Option.Option<E>, R | R2> = Effect.flatMap(
      Effect.flatMap(pull, f),
      () => Effect.zipRight(Effect.yieldNow(), loop)
    )
    // Option.none() is the end of the stream.
    return Effect.catchAll(loop, Option.match({ onNone: () => Effect.void, onSome: Effect.fail }))
  })

/** Runs `f` on every element of `stream`, in order (see `forEachChunk`). */
export const forEach = <A, E, R, R2>(
  stream: Stream.Stream<A, E, R>,
  f: (a: A) => Effect.Effect<unknown, never, R2>
): Effect.Effect<void, E, R | R2 | Scope.Scope> =>
  forEachChunk(stream, (chunk) =>
    Chunk.size(chunk) === 1 ? f(Chunk.unsafeGet(chunk, 0)) : Effect.forEach(chunk, f, { discard: true }))
