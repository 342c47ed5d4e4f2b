/**
 * The engine's stream consumer (internal): every element in order, the end of the stream, its failure, and the
 * subscription closed with the caller's scope.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Exit, Queue, Scope, Stream } from "effect"
import * as Consume from "../src/internal/bus/consume.js"

describe("stream consumer", () => {
  it.scoped("hands every element over in order, across chunks of any size, and succeeds when the stream ends", () =>
    Effect.gen(function*() {
      const seen: Array<number> = []
      const stream = Stream.fromChunks(Chunk.make(1), Chunk.make(2, 3, 4), Chunk.empty(), Chunk.make(5))
      yield* Consume.forEach(stream, (n) => Effect.sync(() => seen.push(n)))
      expect(seen).toEqual([1, 2, 3, 4, 5])
    }))

  it.scoped("hands chunks over as they come", () =>
    Effect.gen(function*() {
      const seen: Array<ReadonlyArray<number>> = []
      yield* Consume.forEachChunk(
        Stream.fromChunks(Chunk.make(1, 2), Chunk.make(3)),
        (chunk) => Effect.sync(() => seen.push(Chunk.toReadonlyArray(chunk)))
      )
      expect(seen).toEqual([[1, 2], [3]])
    }))

  it.scoped("fails with the stream's error after handing over what came before it", () =>
    Effect.gen(function*() {
      const seen: Array<number> = []
      const stream = Stream.concat(Stream.make(1, 2), Stream.fail("broken" as const))
      const exit = yield* Effect.exit(Consume.forEach(stream, (n) => Effect.sync(() => seen.push(n))))
      expect(exit).toStrictEqual(Exit.fail("broken"))
      expect(seen).toEqual([1, 2])
    }))

  it.effect("waits for elements of a live source, and closing the caller's scope releases the stream", () =>
    Effect.gen(function*() {
      const queue = yield* Queue.unbounded<number>()
      let released = false
      const stream = Stream.fromQueue(queue).pipe(Stream.ensuring(Effect.sync(() => released = true)))
      const seen: Array<number> = []
      const scope = yield* Scope.make()
      const fiber = yield* Consume.forEach(stream, (n) => Effect.sync(() => seen.push(n))).pipe(
        Scope.extend(scope),
        Effect.fork
      )
      yield* Queue.offer(queue, 1)
      yield* Queue.offerAll(queue, [2, 3])
      yield* Effect.repeatN(Effect.yieldNow(), 10)
      expect(seen).toEqual([1, 2, 3])
      expect(released).toBe(false)
      yield* Queue.shutdown(queue)
      yield* fiber.await
      yield* Scope.close(scope, Exit.void)
      expect(released).toBe(true)
    }))

  it.effect("a stream over a queue hands over chunks of at most its size, and ends once the queue shuts down", () =>
    Effect.gen(function*() {
      const queue = yield* Queue.unbounded<number>()
      const seen: Array<ReadonlyArray<number>> = []
      const fiber = yield* Consume.forEachChunk(
        Consume.fromQueue(queue, 2),
        (chunk) => Effect.sync(() => seen.push(Chunk.toReadonlyArray(chunk)))
      ).pipe(Effect.scoped, Effect.fork)
      yield* Queue.offerAll(queue, [1, 2, 3, 4, 5])
      yield* Effect.repeatN(Effect.yieldNow(), 10)
      expect(seen).toEqual([[1, 2], [3, 4], [5]])
      yield* Queue.shutdown(queue)
      expect(yield* fiber.await).toStrictEqual(Exit.void)
    }))

  it.effect("a stream over a queue, changed by a decorator, is consumed as the Stream it became", () =>
    Effect.gen(function*() {
      const queue = yield* Queue.unbounded<number>()
      yield* Queue.offerAll(queue, [1, 2, 3])
      const seen: Array<number> = []
      yield* Consume.forEach(
        Consume.fromQueue(queue, 16).pipe(Stream.takeWhile((n) => n < 3)),
        (n) => Effect.sync(() => seen.push(n))
      ).pipe(Effect.scoped)
      expect(seen).toEqual([1, 2])
    }))
})
