/**
 * The bus contract (test/busContract.ts), unchanged, against every bus layer.
 */
import { PgClient } from "@effect/sql-pg"
import { afterAll } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { Redis as RedisClient } from "ioredis"
import { EventBus } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Redis from "stepwise/redis"
import { channelKey } from "../src/internal/bus/postgres.js"
import { databaseUrl, postgresEnabled, redisEnabled, redisUrl } from "./backends.js"
import { busContract } from "./busContract.js"
import { publishRawPostgres, publishRawRedis } from "./fixtures/harness.js"

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
    publishRaw: publishRawRedis(client, prefix),
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

// The Postgres bus in tables of the contract's own (a fixed prefix: they do not pile up from run to run).
const pgPrefix = "stepwise_bus_contract_"
const pgTable = (name: string) => `${pgPrefix}${name}`
const pg = Layer.unwrapEffect(Effect.sync(() => PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 2 })))
const withSql = <A>(f: (sql: PgClient.PgClient) => Effect.Effect<A, unknown>) =>
  Effect.flatMap(PgClient.PgClient, f).pipe(Effect.provide(pg))

busContract("Postgres", postgresEnabled, { wire: true, processes: true }, () => {
  const redeliverAfter = "1 second"
  return {
    layer: Postgres.layerBus({ url: databaseUrl, prefix: pgPrefix, redeliverAfter, retention: "2 seconds" }),
    publishRaw: (channel, text) => withSql((sql) => publishRawPostgres(sql, pgPrefix)(channel, text)),
    // A member that leases deliveries for the lease and never acknowledges them.
    takeAndDie: (channel, group, n) =>
      withSql((sql) =>
        sql<{ id: string }>`UPDATE ${sql(pgTable("deliveries"))}
          SET leased_until = now() + interval '1 second', leased_by = 'dead-member'
          WHERE id IN (
            SELECT id FROM ${sql(pgTable("deliveries"))}
            WHERE channel = ${channelKey(channel)} AND grp = ${group} AND leased_until < now()
            ORDER BY id LIMIT ${n} FOR UPDATE SKIP LOCKED
          ) RETURNING id`
      ).pipe(Effect.map((rows) => rows.length)),
    leftovers: (names) =>
      withSql((sql) => {
        const keys = names.map(channelKey)
        return sql<{ left: string }>`SELECT
          (SELECT count(*) FROM ${sql(pgTable("messages"))} WHERE channel = ANY(${keys}::text[])) +
          (SELECT count(*) FROM ${sql(pgTable("channels"))} WHERE channel = ANY(${keys}::text[])) +
          (SELECT count(*) FROM ${sql(pgTable("deliveries"))} WHERE channel = ANY(${keys}::text[])) AS left`
      }).pipe(Effect.map((rows) => Number(rows[0]?.left ?? 0))),
    cleanupWithin: "20 seconds",
    redeliverAfter
  }
})
