/**
 * What the Redis bus does beyond the shared contract: failing clearly when the server is unreachable, and going on
 * when its connections are dropped or its keys vanish.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Exit, Stream } from "effect"
import { Redis as RedisClient } from "ioredis"
import { EventBus } from "stepwise"
import * as Redis from "stepwise/redis"
import { redisEnabled, redisUrl } from "./backends.js"

const event = (n: number): EventBus.BusEvent => ({ type: "test", runId: "r", data: n })
const take = <A, E>(stream: Stream.Stream<A, E>, n: number) =>
  Effect.map(Stream.runCollect(Stream.take(stream, n)), Chunk.toArray)

const raw = redisEnabled ? new RedisClient(redisUrl, { lazyConnect: true }) : undefined
afterAll(() => raw?.disconnect())
let serial = 0
const prefix = () => `stepwise-test:${process.pid}:${Date.now()}:${serial++}:`

describe("Redis.layerBus", () => {
  it.live("an unreachable server fails the layer with an EventBusError naming the URL, without the password", () =>
    Effect.gen(function*() {
      const started = Date.now()
      const exit = yield* Effect.exit(Effect.scoped(Effect.asVoid(
        Redis.layerBus({ url: "redis://user:secret@127.0.0.1:1", connectTimeout: "1 second" }).pipe(
          (layer) => Effect.provide(EventBus.EventBus, layer)
        )
      )))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Exit.isFailure(exit) ? exit.cause.toString() : ""
      expect(error).toContain("EventBusError")
      expect(error).toContain("cannot connect to Redis at redis://user@127.0.0.1:1")
      expect(error).not.toContain("secret")
      expect(Date.now() - started).toBeLessThan(5000)
    }))

  it.scopedLive.skipIf(!redisEnabled)("subscribers go on without loss after the server drops every connection", () =>
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const plain = yield* bus.subscribe("dropped")
      const member = yield* bus.subscribe("dropped", { group: "g" })
      yield* bus.publish("dropped", event(0))
      expect((yield* take(plain, 1)).map((e) => e.data)).toEqual([0])
      expect((yield* take(member, 1)).map((e) => e.data)).toEqual([0])
      // Both are blocked in a read now; the server drops them (and the publisher's connection).
      const readers = Effect.all([take(plain, 3), take(member, 3)], { concurrency: "unbounded" }).pipe(Effect.fork)
      const reading = yield* readers
      yield* Effect.sleep("100 millis")
      const killed = yield* Effect.promise(() => raw!.client("KILL", "TYPE", "normal", "SKIPME", "yes"))
      expect(Number(killed)).toBeGreaterThanOrEqual(3)
      for (const n of [1, 2, 3]) yield* bus.publish("dropped", event(n))
      const [fromPlain, fromMember] = yield* reading.await.pipe(Effect.flatten)
      expect(fromPlain.map((e) => e.data)).toEqual([1, 2, 3])
      expect(fromMember.map((e) => e.data)).toEqual([1, 2, 3])
    }).pipe(Effect.provide(Redis.layerBus({ url: redisUrl, prefix: prefix() }))))

  it.scopedLive.skipIf(!redisEnabled)("a group whose channel was deleted (expired) is made again and loses nothing published since", () => {
    const keyPrefix = prefix()
    return Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const member = yield* bus.subscribe("expiring", { group: "g" })
      yield* bus.publish("expiring", event(0))
      expect((yield* take(member, 1)).map((e) => e.data)).toEqual([0])
      yield* Effect.promise(() => raw!.del(`${keyPrefix}expiring`))
      yield* bus.publish("expiring", event(1))
      yield* bus.publish("expiring", event(2))
      expect((yield* take(member, 2)).map((e) => e.data)).toEqual([1, 2])
    }).pipe(Effect.provide(Redis.layerBus({ url: redisUrl, prefix: keyPrefix })))
  })

  it.scopedLive.skipIf(!redisEnabled)("a channel expires after its last publish", () => {
    const keyPrefix = prefix()
    return Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      yield* bus.publish("short-lived", event(0))
      const ttl = yield* Effect.promise(() => raw!.pttl(`${keyPrefix}short-lived`))
      expect(ttl).toBeGreaterThan(4000)
      expect(ttl).toBeLessThanOrEqual(5000)
    }).pipe(Effect.provide(Redis.layerBus({ url: redisUrl, prefix: keyPrefix, channelTtl: "5 seconds" })))
  })
})
