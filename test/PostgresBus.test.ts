/**
 * The Postgres bus (`Postgres.layerBus`): delivery and order, groups, redelivery, malformed rows, large events,
 * retention, a lost LISTEN connection, an outage and the layer's failures. Its tables have a prefix of their own, so
 * that this file runs beside the other suites on the same database.
 */
import { PgClient } from "@effect/sql-pg"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Cause, Chunk, ConfigProvider, Effect, Exit, Fiber, Layer, Logger, LogLevel, Redacted, Scope, Stream } from "effect"
import { createServer, type Server, type Socket } from "node:net"
import { connect } from "node:net"
import { EventBus } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as PgBus from "../src/internal/bus/postgres.js"
import { databaseUrl, postgresEnabled } from "./backends.js"

// Dropped at the end.
const prefix = `stepwise_bus_t${crypto.randomUUID().slice(0, 8)}_`
// Channel names unique to this run of the file.
const run = crypto.randomUUID().slice(0, 8)
const channel = (name: string) => `${run}.${name}`

const Sql = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 2 })

const makeBus = (options?: Omit<PgBus.Options, "url" | "prefix"> & { readonly url?: string }) =>
  PgBus.make({ url: databaseUrl, prefix, ...options })

const event = (data: unknown): EventBus.BusEvent => ({ type: "test", runId: "r", data })

/** Consumes `stream` in a fiber of the scope, into an array the test can watch. */
const collect = <A>(stream: Stream.Stream<A, EventBus.EventBusError>) =>
  Effect.gen(function*() {
    const got: Array<A> = []
    yield* Effect.forkScoped(Stream.runForEach(stream, (a) => Effect.sync(() => got.push(a))))
    return got
  })

/** Waits (real time) until `done` holds, failing with `what` after `millis`. */
const until = <R = never>(what: string, done: () => boolean | Effect.Effect<boolean, unknown, R>, millis = 5000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    while (true) {
      const result = done()
      if (typeof result === "boolean" ? result : yield* result) return
      if (Date.now() > deadline) return yield* Effect.dieMessage(`Timed out waiting until ${what}`)
      yield* Effect.sleep("20 millis")
    }
  })

const rowsOf = (channelLike: string) =>
  Effect.gen(function*() {
    const sql = yield* PgClient.PgClient
    const [row] = yield* sql<{ messages: string; channels: string; groups: string; deliveries: string }>`SELECT
      (SELECT count(*) FROM ${sql(`${prefix}messages`)} WHERE channel LIKE ${channelLike}) AS messages,
      (SELECT count(*) FROM ${sql(`${prefix}channels`)} WHERE channel LIKE ${channelLike}) AS channels,
      (SELECT count(*) FROM ${sql(`${prefix}groups`)} WHERE channel LIKE ${channelLike}) AS groups,
      (SELECT count(*) FROM ${sql(`${prefix}deliveries`)} WHERE channel LIKE ${channelLike}) AS deliveries`
    return {
      messages: Number(row!.messages),
      channels: Number(row!.channels),
      groups: Number(row!.groups),
      deliveries: Number(row!.deliveries)
    }
  })

const capturingLogger = () => {
  const logs: Array<string> = []
  const logger = Logger.make(({ message }) => logs.push(Array.isArray(message) ? message.join(" ") : String(message)))
  return { logs, layer: Logger.replace(Logger.defaultLogger, logger) }
}

/** A TCP proxy in front of the database that can play a server that went away and came back. */
interface Proxy {
  readonly url: string
  /** Drops every connection and refuses new ones. */
  readonly down: Effect.Effect<void>
  readonly up: Effect.Effect<void>
}

const proxy = (target: URL): Effect.Effect<Proxy, never, Scope.Scope> =>
  Effect.gen(function*() {
    const sockets = new Set<Socket>()
    let server: Server | undefined
    const listen = (port: number) =>
      Effect.async<number>((resume) => {
        const s = createServer((client) => {
          const upstream = connect({ host: target.hostname, port: Number(target.port || 5432) })
          sockets.add(client).add(upstream)
          const close = () => {
            client.destroy()
            upstream.destroy()
            sockets.delete(client)
            sockets.delete(upstream)
          }
          client.on("error", close).on("close", close)
          upstream.on("error", close).on("close", close)
          client.pipe(upstream).pipe(client)
        })
        s.listen(port, "127.0.0.1", () => {
          server = s
          resume(Effect.succeed((s.address() as { port: number }).port))
        })
      })
    const stop = Effect.async<void>((resume) => {
      for (const socket of sockets) socket.destroy()
      sockets.clear()
      if (server === undefined) return resume(Effect.void)
      server.close(() => resume(Effect.void))
      server = undefined
    })
    const port = yield* Effect.acquireRelease(listen(0), () => stop)
    const url = new URL(target.toString())
    url.port = String(port)
    return { url: url.toString(), down: stop, up: Effect.asVoid(listen(port)) }
  })

afterAll(async () => {
  if (!postgresEnabled) return
  await Effect.runPromise(Effect.gen(function*() {
    const sql = yield* PgClient.PgClient
    for (const table of ["channels", "messages", "groups", "deliveries", "readers", "migrations"]) {
      yield* sql`DROP TABLE IF EXISTS ${sql(`${prefix}${table}`)}`
    }
  }).pipe(Effect.provide(Sql)))
})

describe.runIf(postgresEnabled)("Postgres.layerBus", () => {
  it.live("every subscriber gets each event published after it subscribed, once, in one order, with many publishers", () =>
    Effect.gen(function*() {
      const c = channel("order")
      const a = yield* makeBus()
      const b = yield* makeBus()
      yield* a.bus.publish(c, event("before")) // before anyone subscribed: not delivered
      const fromA = yield* collect(yield* a.bus.subscribe(c))
      const fromB = yield* collect(yield* b.bus.subscribe(c))
      // Eight publishers in two layers ("processes"), singles and batches, all at once.
      yield* Effect.forEach(Array.from({ length: 8 }, (_, p) => p), (p) =>
        Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (i) => {
          const bus = p % 2 === 0 ? a.bus : b.bus
          return i % 2 === 0
            ? bus.publish(c, event({ p, i: i * 3 }))
            : EventBus.publishAll(bus, c, [event({ p, i: i * 3 }), event({ p, i: i * 3 + 1 }), event({ p, i: i * 3 + 2 })])
        }, { discard: true }), { concurrency: "unbounded", discard: true })
      const total = 8 * (10 + 10 * 3)
      yield* until("both subscribers have every event", () => fromA.length >= total && fromB.length >= total)
      yield* Effect.sleep("200 millis")
      expect(fromA.length).toBe(total)
      // Both saw the same order, which is the table's order, and in it each publisher's events are in its order.
      expect(fromB).toEqual(fromA)
      const sql = yield* PgClient.PgClient
      const stored = yield* sql<{ data: string }>`SELECT data FROM ${sql(`${prefix}messages`)}
        WHERE channel = ${c} ORDER BY id`
      expect(stored.map((row) => JSON.parse(row.data))).toEqual([event("before"), ...fromA])
      for (let p = 0; p < 8; p++) {
        const mine = fromA.map((e) => e.data as { p: number; i: number }).filter((d) => d.p === p).map((d) => d.i)
        expect(mine.length).toBe(40)
        expect([...mine].sort((x, y) => x - y)).toEqual(mine)
      }
    }).pipe(Effect.scoped, Effect.provide(Sql)))

  it.live("members of a group in two layers share the events, each to exactly one, and acknowledged ones are deleted", () =>
    Effect.gen(function*() {
      const c = channel("group")
      const a = yield* makeBus()
      const b = yield* makeBus()
      const watcher = yield* collect(yield* a.bus.subscribe(c))
      // Consumers that take a moment per event.
      const work = (events: Stream.Stream<EventBus.BusEvent, EventBus.EventBusError>) =>
        events.pipe(Stream.tap(() => Effect.sleep("2 millis")), Stream.map((e) => e.data as number))
      const m1 = yield* collect(work(yield* a.bus.subscribe(c, { group: "workers" })))
      const m2 = yield* collect(work(yield* b.bus.subscribe(c, { group: "workers" })))
      yield* Effect.forEach(Array.from({ length: 100 }, (_, i) => i), (i) => a.bus.publish(c, event(i)), {
        concurrency: 4,
        discard: true
      })
      yield* until("the group handled every event", () => m1.length + m2.length >= 100)
      yield* Effect.sleep("200 millis")
      expect([...m1, ...m2].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i))
      expect(m1.length).toBeGreaterThan(0)
      expect(m2.length).toBeGreaterThan(0)
      expect(watcher.length).toBe(100) // a subscriber without a group gets them all
      // Each member pulled again after its last chunk: everything is acknowledged.
      yield* until("no delivery is left", () => Effect.map(rowsOf(c), (rows) => rows.deliveries === 0))
    }).pipe(Effect.scoped, Effect.provide(Sql)))

  it.live("members of a group in one layer share the events too", () =>
    Effect.gen(function*() {
      const c = channel("turns")
      const { bus } = yield* makeBus()
      const w1 = yield* bus.subscribe(c, { group: "workers" })
      const w2 = yield* bus.subscribe(c, { group: "workers" })
      const tagged = (name: string, events: Stream.Stream<EventBus.BusEvent, EventBus.EventBusError>) =>
        Stream.map(events, (e) => [name, e.data as number] as const)
      const shared = yield* Effect.fork(Stream.runCollect(Stream.take(Stream.merge(tagged("w1", w1), tagged("w2", w2)), 50)))
      // One at a time, with both members idle at each publish.
      for (let i = 0; i < 50; i++) yield* Effect.zipRight(bus.publish(c, event(i)), Effect.sleep("5 millis"))
      const got = Chunk.toArray(yield* Fiber.join(shared))
      expect(got.map(([, n]) => n).sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i))
      expect(new Set(got.map(([worker]) => worker)).size).toBe(2)
    }).pipe(Effect.scoped))

  it.live("what a member took and did not acknowledge goes to another member once its scope closed and its lease ran out", () =>
    Effect.gen(function*() {
      const c = channel("redeliver")
      const a = yield* makeBus({ redeliverAfter: "300 millis" })
      const b = yield* makeBus({ redeliverAfter: "300 millis" })
      // The first member takes a chunk and never pulls again (as if its handler crashed), then its scope closes.
      const memberScope = yield* Scope.make()
      const pull = yield* a.bus.subscribe(c, { group: "g" }).pipe(Effect.flatMap(Stream.toPull), Scope.extend(memberScope))
      yield* EventBus.publishAll(a.bus, c, [event(1), event(2), event(3)])
      const taken = yield* pull
      expect(Chunk.toArray(taken).map((e) => e.data)).toEqual([1, 2, 3])
      const other = yield* collect(Stream.map(yield* b.bus.subscribe(c, { group: "g" }), (e) => e.data))
      // While the first member's layer lives, it keeps its lease: nothing goes to the other member.
      yield* Effect.sleep("700 millis")
      expect(other).toEqual([])
      const closedAt = Date.now()
      yield* Scope.close(memberScope, Exit.void)
      yield* until("the other member got the events", () => other.length >= 3)
      expect(other).toEqual([1, 2, 3])
      expect(Date.now() - closedAt).toBeGreaterThanOrEqual(100)
      yield* Effect.sleep("500 millis")
      expect(other).toEqual([1, 2, 3])
    }).pipe(Effect.scoped, Effect.provide(Sql)))

  it.live("a subscription ends when its scope closes; the layer then holds nothing for it", () =>
    Effect.gen(function*() {
      const c = channel("unsubscribe")
      const { bus, introspect } = yield* makeBus()
      const staying = yield* collect(yield* bus.subscribe(c))
      const [plain, member] = yield* Effect.scoped(Effect.gen(function*() {
        const plain = yield* Effect.fork(Stream.runCollect(yield* bus.subscribe(c)))
        const member = yield* Effect.fork(Stream.runCollect(yield* bus.subscribe(c, { group: "g" })))
        yield* bus.publish(c, event(1))
        yield* until("the staying subscriber got the event", () => staying.length === 1)
        expect(yield* introspect).toMatchObject({ channels: 1, groups: 1 })
        return [plain, member] as const
      }))
      // Both streams ended (they would hang otherwise); the plain one had its event.
      expect(Chunk.toArray(yield* Fiber.join(plain)).map((e) => e.data)).toEqual([1])
      yield* Fiber.join(member)
      expect(yield* introspect).toMatchObject({ channels: 1, groups: 0 })
      yield* bus.publish(c, event(2))
      yield* until("the staying subscriber got the second event", () => staying.length === 2)
    }).pipe(Effect.scoped, Effect.provide(Sql)))

  it.live("malformed rows are logged with their channel and skipped; the subscriber keeps going", () => {
    const { layer, logs } = capturingLogger()
    return Effect.gen(function*() {
      const c = channel("garbage")
      const sql = yield* PgClient.PgClient
      const { bus } = yield* makeBus()
      const plain = yield* collect(yield* bus.subscribe(c))
      const member = yield* collect(yield* bus.subscribe(c, { group: "g" }))
      const messages = sql(`${prefix}messages`)
      const inserted = yield* sql<{ id: string }>`INSERT INTO ${messages} (channel, data)
        VALUES (${c}, 'not json at all'), (${c}, '{"type": 42}') RETURNING id`
      yield* sql`INSERT INTO ${sql(`${prefix}deliveries`)} (channel, grp, message_id)
        SELECT ${c}, 'g', unnest(${[...inserted.map((row) => row.id), "-1"]}::bigint[])`
      yield* sql`SELECT pg_notify(${`${prefix}wake`}, ${c})`
      yield* bus.publish(c, event("good"))
      yield* until("both got the good event", () => plain.length === 1 && member.length === 1)
      expect(plain).toEqual([event("good")])
      expect(member).toEqual([event("good")])
      const warnings = logs.filter((line) => line.includes(`Event bus failure on channel "${c}": skipping a malformed message`))
      expect(warnings.length).toBe(5) // two rows for the subscriber; two and a missing message for the member
      expect(logs.join("\n")).toContain("not JSON")
      // The member acknowledged the malformed deliveries too.
      yield* until("no delivery is left", () => Effect.map(rowsOf(c), (rows) => rows.deliveries === 0))
    }).pipe(Effect.scoped, Effect.provide(Sql), Effect.provide(layer))
  })

  it.live("carries a 1 MB event", () =>
    Effect.gen(function*() {
      const c = channel("big")
      const { bus } = yield* makeBus()
      const plain = yield* collect(yield* bus.subscribe(c))
      const member = yield* collect(yield* bus.subscribe(c, { group: "g" }))
      const big = event({ text: "é".repeat(500_000), n: [1, 2, 3] })
      yield* bus.publish(c, big)
      yield* bus.publish(c, event("after"))
      yield* until("both got both events", () => plain.length === 2 && member.length === 2)
      expect(plain).toEqual([big, event("after")])
      expect(member).toEqual([big, event("after")])
    }).pipe(Effect.scoped, Effect.provide(Sql)))

  it.live("after 10,000 channels, the tables hold nothing of them and the layer's maps are empty", () =>
    Effect.gen(function*() {
      const { bus, introspect } = yield* makeBus({ retention: "500 millis", redeliverAfter: "300 millis" })
      const names = Array.from({ length: 10_000 }, (_, i) => channel(`many.${i}`))
      yield* Effect.scoped(Effect.gen(function*() {
        // Every channel has a subscriber; every hundredth a group member instead. Each is pulled in turn, not consumed
        // in a fiber of its own: 10,000 fibers would take longer to interrupt than the rest of the test takes.
        const pulls = yield* Effect.forEach(
          names,
          (name, i) => Effect.flatMap(bus.subscribe(name, i % 100 === 0 ? { group: "g" } : undefined), Stream.toPull),
          { concurrency: 100 }
        )
        yield* Effect.forEach(names, (name, i) => bus.publish(name, event(i)), { concurrency: 200, discard: true })
        const got = yield* Effect.forEach(pulls, (pull) => Effect.map(pull, Chunk.toArray), { concurrency: 100 })
        expect(got.map((events) => events.map((e) => e.data))).toEqual(names.map((_, i) => [i]))
        expect(yield* introspect).toMatchObject({ channels: 10_000, groups: 100 })
      }))
      expect(yield* introspect).toMatchObject({ channels: 0, groups: 0, pending: 0 })
      yield* until(
        "the janitor removed every row of those channels",
        () => Effect.map(rowsOf(`${run}.many.%`), (rows) => Object.values(rows).every((n) => n === 0)),
        10_000
      )
      // A volume test: a minute on a quiet machine is ample, on a shared and loaded one (load 12 on 2 cores) it was not.
    }).pipe(Effect.scoped, Effect.provide(Sql)), 180_000)

  it.live("LISTEN survives the loss of its connection: what it missed is read at once, nothing twice", () =>
    Effect.gen(function*() {
      const c = channel("reconnect")
      const sql = yield* PgClient.PgClient
      // No safety net in this test: what arrives after the loss comes from listening again.
      const { bus, introspect } = yield* makeBus({ safetyNet: "1 hour" })
      const plain = yield* collect(Stream.map(yield* bus.subscribe(c), (e) => e.data as number))
      const member = yield* collect(Stream.map(yield* bus.subscribe(c, { group: "g" }), (e) => e.data as number))
      const publishRange = (from: number, to: number) =>
        Effect.forEach(Array.from({ length: to - from + 1 }, (_, i) => bus.publish(c, event(from + i))), (e) => e, {
          discard: true
        })
      yield* publishRange(1, 5)
      yield* until("the first events arrived", () => plain.length === 5 && member.length === 5)
      // Events 6 to 10 are in the tables but nobody was notified (as when the connection drops before their NOTIFY).
      const missed = [6, 7, 8, 9, 10].map((i) => JSON.stringify(event(i)))
      const rows = yield* sql<{ id: string }>`INSERT INTO ${sql(`${prefix}messages`)} (channel, data)
        SELECT ${c}, d FROM unnest(${missed}::text[]) WITH ORDINALITY AS x(d, n) ORDER BY n RETURNING id`
      yield* sql`INSERT INTO ${sql(`${prefix}deliveries`)} (channel, grp, message_id)
        SELECT ${c}, 'g', unnest(${rows.map((row) => row.id)}::bigint[])`
      yield* Effect.sleep("300 millis")
      expect(plain.length).toBe(5)
      const { listenerPid } = yield* introspect
      expect(listenerPid).toBeDefined()
      yield* sql`SELECT pg_terminate_backend(${listenerPid!})`
      yield* until("the layer listens again", () =>
        Effect.map(introspect, (i) => i.reconnects === 1 && i.listenerPid !== undefined))
      expect((yield* introspect).listenerPid).not.toBe(listenerPid)
      // Listening again, every subscription reads from where it was.
      yield* until("the events nobody was notified of arrived", () => plain.length === 10 && member.length === 10)
      yield* publishRange(11, 15)
      yield* until("every event arrived", () => plain.length >= 15 && member.length >= 15)
      yield* Effect.sleep("300 millis")
      const all = Array.from({ length: 15 }, (_, i) => i + 1)
      expect(plain).toEqual(all)
      expect([...member].sort((x, y) => x - y)).toEqual(all)
    }).pipe(Effect.scoped, Effect.provide(Sql)))

  it.live("subscriptions wait while the database is unreachable and go on when it is back", () =>
    Effect.gen(function*() {
      const c = channel("outage")
      const server = yield* proxy(new URL(databaseUrl))
      const { bus } = yield* makeBus({ url: server.url, safetyNet: "1 hour" })
      const direct = yield* makeBus()
      const plain = yield* collect(Stream.map(yield* bus.subscribe(c), (e) => e.data as number))
      const member = yield* collect(Stream.map(yield* bus.subscribe(c, { group: "g" }), (e) => e.data as number))
      yield* direct.bus.publish(c, event(1))
      yield* until("the first event arrived", () => plain.length === 1 && member.length === 1)
      yield* server.down
      yield* direct.bus.publish(c, event(2))
      // Publishing through the lost database fails, naming the channel.
      const failed = yield* Effect.flip(bus.publish(c, event(-1)))
      expect(failed.message).toContain(`on channel "${c}"`)
      yield* Effect.sleep("1 second")
      yield* direct.bus.publish(c, event(3))
      yield* server.up
      yield* until("the events published during the outage arrived", () => plain.length >= 3 && member.length >= 3, 8000)
      yield* bus.publish(c, event(4))
      yield* until("an event published after it arrived", () => plain.length >= 4 && member.length >= 4)
      yield* Effect.sleep("300 millis")
      expect(plain).toEqual([1, 2, 3, 4])
      expect([...member].sort((x, y) => x - y)).toEqual([1, 2, 3, 4])
    }).pipe(Effect.scoped, Effect.provide(Sql), Effect.provide(Logger.minimumLogLevel(LogLevel.Error))))

  it.live("a subscription made while the database is down waits for it and then gets what is published", () =>
    Effect.gen(function*() {
      const c = channel("subscribe-in-outage")
      const server = yield* proxy(new URL(databaseUrl))
      const { bus } = yield* makeBus({ url: server.url, safetyNet: "1 hour" })
      const direct = yield* makeBus()
      yield* server.down
      // Both subscriptions are asked for during the outage: they wait rather than fail their readers.
      const plainFiber = yield* Effect.fork(bus.subscribe(c))
      const memberFiber = yield* Effect.fork(bus.subscribe(c, { group: "g" }))
      yield* Effect.sleep("1500 millis")
      expect(plainFiber.unsafePoll()).toBeNull()
      expect(memberFiber.unsafePoll()).toBeNull()
      yield* server.up
      const plain = yield* collect(Stream.map(yield* Fiber.join(plainFiber), (e) => e.data as number))
      const member = yield* collect(Stream.map(yield* Fiber.join(memberFiber), (e) => e.data as number))
      yield* direct.bus.publish(c, event(1))
      yield* until("the event arrived at both", () => plain.length === 1 && member.length === 1, 8000)
      expect(plain).toEqual([1])
      expect(member).toEqual([1])
    }).pipe(Effect.scoped, Effect.provide(Sql), Effect.provide(Logger.minimumLogLevel(LogLevel.Error))))

  it.live("an unreachable database fails the layer at once, with an EventBusError naming the URL but not its password", () =>
    Effect.gen(function*() {
      const started = Date.now()
      const failure = yield* Effect.flip(Layer.build(Postgres.layerBus({ url: "postgres://app:s3cret@127.0.0.1:1/test" })))
      expect(Date.now() - started).toBeLessThan(5000)
      expect(failure._tag).toBe("EventBusError")
      expect(failure.message).toContain("postgres://app@127.0.0.1:1/test")
      expect(failure.message).not.toContain("s3cret")
    }).pipe(Effect.scoped))

  it.live("layerBusConfig reads the database's URL from DATABASE_URL", () =>
    Effect.gen(function*() {
      const failure = yield* Effect.flip(Layer.build(Postgres.layerBusConfig))
      expect(failure.message).toContain("postgres://config@127.0.0.1:1/elsewhere")
    }).pipe(
      Effect.scoped,
      Effect.withConfigProvider(
        ConfigProvider.fromMap(new Map([["DATABASE_URL", "postgres://config@127.0.0.1:1/elsewhere"]]))
      )
    ))

  it.live("layerBus provides the bus, in the tables it creates", () =>
    Effect.gen(function*() {
      const c = channel("public")
      const bus = yield* EventBus.EventBus
      const got = yield* collect(yield* bus.subscribe(c))
      yield* bus.publish(c, event("hello"))
      yield* until("the event arrived", () => got.length === 1)
      expect(got).toEqual([event("hello")])
      const sql = yield* PgClient.PgClient
      const rows = yield* sql`SELECT 1 FROM stepwise_bus_messages WHERE channel = ${c}`
      expect(rows.length).toBe(1)
    }).pipe(Effect.scoped, Effect.provide(Postgres.layerBus({ url: databaseUrl })), Effect.provide(Sql)))

  it.live("maxConnections bounds the pool: 200 publishes and reads at once over 2 connections, plus the LISTEN one", () =>
    Effect.gen(function*() {
      const ownPrefix = `stepwise_bus_p${crypto.randomUUID().slice(0, 8)}_`
      const { bus } = yield* PgBus.make({ url: databaseUrl, prefix: ownPrefix, maxConnections: 2 })
      const channels = Array.from({ length: 20 }, (_, i) => channel(`pool-${i}`))
      const got = yield* Effect.forEach(channels, (c) => Effect.flatMap(bus.subscribe(c), collect))
      const sql = yield* PgClient.PgClient
      let most = 0
      const count = sql<{ n: string }>`SELECT count(*) AS n FROM pg_stat_activity
        WHERE application_name IN (${`stepwise-bus ${ownPrefix}`}, ${`stepwise-bus-listen ${ownPrefix}`})`.pipe(
          Effect.map(([row]) => Number(row!.n))
        )
      const watcher = yield* Effect.forkScoped(Effect.forever(Effect.zipRight(
        Effect.map(count, (n) => {
          most = Math.max(most, n)
        }),
        Effect.sleep("5 millis")
      )))
      yield* Effect.forEach(channels, (c) =>
        Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) => bus.publish(c, event(i)), { discard: true }), {
        concurrency: "unbounded",
        discard: true
      })
      yield* until("every subscriber has its 10 events", () => got.every((events) => events.length === 10), 20_000)
      yield* Fiber.interrupt(watcher)
      for (const events of got) expect(events.map((e) => e.data)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
      expect(most).toBeGreaterThan(0)
      expect(most).toBeLessThanOrEqual(3)
      for (const table of ["channels", "messages", "groups", "deliveries", "readers", "migrations"]) {
        yield* sql`DROP TABLE IF EXISTS ${sql(`${ownPrefix}${table}`)}`
      }
    }).pipe(Effect.scoped, Effect.provide(Sql)))

  it.live("a maxConnections that is not a whole number of at least 1 is refused, saying so", () =>
    Effect.gen(function*() {
      for (const maxConnections of [0, -1, 2.5, Number.NaN]) {
        const exit = yield* Effect.exit(Layer.build(Postgres.layerBus({ url: databaseUrl, maxConnections })))
        expect(Exit.isFailure(exit)).toBe(true)
        expect(String(Exit.isFailure(exit) ? Cause.squash(exit.cause) : "")).toContain(`Invalid maxConnections ${maxConnections}`)
      }
    }).pipe(Effect.scoped))

  it.live("a publish that fails says which channel and why", () =>
    Effect.gen(function*() {
      const c = channel("unpublishable")
      const { bus } = yield* makeBus()
      const failure = yield* Effect.flip(bus.publish(c, event({ big: 1n })))
      expect(failure._tag).toBe("EventBusError")
      expect(failure.message).toContain(`on channel "${c}"`)
      expect(failure.message).toContain("not JSON-serializable")
    }).pipe(Effect.scoped))
})
