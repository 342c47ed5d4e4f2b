/**
 * The bus contract (test/busContract.ts), unchanged, against every bus layer.
 */
import { afterAll } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Redis as RedisClient } from "ioredis"
import { EventBus } from "stepwise"
import * as Redis from "stepwise/redis"
import { redisEnabled, redisUrl } from "./backends.js"
import { busContract } from "./busContract.js"

busContract("memory", true, { wire: false, processes: false }, () => {
  const { bus, channels } = Effect.runSync(EventBus.makeMemory)
  return {
    layer: Layer.succeed(EventBus.EventBus, bus),
    leftovers: () => channels.size,
    cleanupWithin: 0
  }
})

const raw = redisEnabled ? new RedisClient(redisUrl, { lazyConnect: true }) : undefined
afterAll(() => raw?.disconnect())
let prefixes = 0

busContract("Redis Streams", redisEnabled, { wire: true, processes: true }, () => {
  const prefix = `stepwise-test:${process.pid}:${prefixes++}:`
  const redeliverAfter = "1 second"
  const client = raw!
  const call = <A>(f: () => Promise<A>) => Effect.tryPromise(f)
  return {
    layer: Redis.layerBus({ url: redisUrl, prefix, redeliverAfter, channelTtl: "3 seconds" }),
    publishRaw: (channel, text) => call(() => client.xadd(prefix + channel, "*", "e", text)),
    takeAndDie: (channel, group, n) =>
      call(() => client.xreadgroup("GROUP", group, "dead-member", "COUNT", n, "STREAMS", prefix + channel, ">")).pipe(
        Effect.map((result) => {
          const streams = result as Array<[string, Array<unknown>]> | null
          return streams?.[0]?.[1].length ?? 0
        })
      ),
    leftovers: (names) =>
      Effect.gen(function*() {
        let left = 0
        for (let i = 0; i < names.length; i += 1000) {
          const keys = names.slice(i, i + 1000).map((name) => prefix + name)
          left += yield* call(() => client.exists(...keys))
        }
        return left
      }),
    cleanupWithin: "10 seconds",
    redeliverAfter
  }
})
