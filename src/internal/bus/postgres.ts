/**
 * The event bus on Postgres alone: tables hold the messages, LISTEN/NOTIFY only wakes readers up.
 *
 * Tables (prefix `stepwise_bus_`): `channels` (one row per channel, the publishers' lock), `messages` (every event
 * published, `id` from a bigserial), `groups` (the consumer groups of each channel), `deliveries` (one row per event
 * per group, the work a group's members share) and `readers` (how far behind each layer's readers are). Channels are
 * stored and notified under a key: the name itself, or `#` and its SHA-256 when it is long (or odd), so that any name
 * fits an index entry and a NOTIFY payload (the payload is only ever that key, never an event).
 *
 * Publishing is one statement: it upserts the channel's row (`INSERT ... ON CONFLICT DO UPDATE`), inserts the events
 * selected from that upsert's result (so their `nextval` runs only once the row is locked), and inserts a delivery per
 * event for each group of the channel. Once it committed, the publish waits for `pg_notify(<fixed channel>, key)`,
 * sent in one statement for every publish of the layer since the last one (see `notify` for why not in the insert).
 *
 * Why a reader that reads `WHERE channel = key AND id > cursor ORDER BY id` never skips an event: ids of one channel
 * are taken in commit order. A publisher takes the channel row's lock before its ids and holds it until it commits;
 * a second publisher waits for that lock, so its ids are taken after the first committed (sequences only grow), and
 * Postgres releases a transaction's locks only after it is visible to every later snapshot. So whenever a reader's
 * snapshot shows an event of the channel, it also shows every event of that channel with a smaller id: the rows a
 * reader has not seen yet all have ids above its cursor, and a reader that saw id N has seen all of the channel's ids
 * up to N. (Within a batch the events are inserted in order: the insert selects them `ORDER BY` their position, and
 * the id defaults are computed above that sort.) The janitor may delete the channel row; the next publisher inserts
 * it again under the same rule (concurrent first inserts wait on each other's index entry), and ids come from one
 * sequence, so they never go back.
 *
 * A plain subscription starts at the sequence's last value, read after `subscribe` was called: every event committed
 * before has an id up to it, and every publish that starts once `subscribe` returned takes a larger one. All the
 * subscriptions of a layer share one LISTEN connection, a `pg` client of its own: `@effect/sql-pg`'s `PgClient.listen`
 * (0.53) swallows the error of its shared connection and keeps it while it has listeners, so that after the server
 * drops it they hear nothing more, and it offers no hook to read what was missed. A notification marks
 * its channel to be read; a few reader fibers read the marked channels in batches, one statement for many channels,
 * each channel once for all its subscriptions (from their lowest cursor), and hand each subscription the events past
 * its own cursor. When the LISTEN connection is lost the layer connects again (backing off while the database is
 * down), LISTENs, and only then marks every channel, so whatever was published in between is read from the table:
 * nothing lost, nothing twice. Every few seconds a safety net pings that connection and checks, in one statement,
 * whether any channel has events past its cursor; it is the fallback, never the main path.
 *
 * Groups: a member takes up to 16 deliveries of its group, `FOR UPDATE SKIP LOCKED`, leasing them for
 * `redeliverAfter`; its next pull deletes them (the ack) in the same statement as it takes the next ones. While the
 * layer lives it extends the leases of what its members hold; a delivery whose member is gone (scope closed, process
 * dead) is taken by another member once its lease runs out. A group lives while some process has a member (each
 * process refreshes its groups' rows); one without a member for `retention` is forgotten with its deliveries.
 *
 * Retention: the bus is for live delivery (history is in the store). A janitor in each layer deletes, in one statement
 * and at a jittered interval, the messages older than `retention` that no delivery points at and that every live
 * layer's readers are past (each layer reports, with its heartbeat, the lowest cursor of its channels that have events
 * left to read), the channel rows not published to for `retention`, the groups not seen for `retention` and the
 * deliveries of no group.
 *
 * Statements wait for one of the pool's connections in this process, in order of arrival; `position`, group
 * registration and NOTIFY coalesce concurrent calls into one statement.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { createHash } from "node:crypto"
import { createRequire } from "node:module"
import type { BusEvent, SubscribeOptions } from "../../EventBus.js"
import { decodeIncoming, EventBus, skipMalformed } from "../../EventBus.js"
import { EventBusError } from "../../WorkflowError.js"
import { redactUrl } from "../url.js"
import * as Retry from "../retry.js"
import { wallClock, wallSleep } from "../wallClock.js"

// -----------------------------------------------------------------------------------------------------------------
// The few parts of `pg` (node-postgres, the driver under `@effect/sql-pg`) used for the LISTEN connection. Typed here
// because `@types/pg` is not installed.

interface PgNotification {
  readonly channel: string
  readonly payload?: string | undefined
}

interface PgListenClient {
  connect(): Promise<void>
  query(
    text: string,
    values?: ReadonlyArray<unknown>
  ): Promise<{ readonly rows: ReadonlyArray<Record<string, unknown>> }>
  end(): Promise<void>
  on(event: "notification", listener: (message: PgNotification) => void): void
  on(event: "error", listener: (error: Error) => void): void
  on(event: "end", listener: () => void): void
}

interface PgModule {
  readonly Client: new(config: {
    readonly connectionString: string
    readonly connectionTimeoutMillis: number
    readonly keepAlive: boolean
    readonly application_name: string
  }) => PgListenClient
}

const Pg = createRequire(import.meta.url)("pg") as PgModule

// -----------------------------------------------------------------------------------------------------------------

/** Options of the Postgres bus (the public ones are documented on `Postgres.layerBus`). */
export interface Options {
  readonly url: string
  readonly redeliverAfter?: Duration.DurationInput
  readonly retention?: Duration.DurationInput
  /** Table prefix, `stepwise_bus_` unless a test isolates itself; also names the NOTIFY channel. */
  readonly prefix?: string
  /** How often the safety net checks the LISTEN connection and the channels (5 seconds). */
  readonly safetyNet?: Duration.DurationInput
  /** The pool's size: statements at once (10). */
  readonly maxConnections?: number
}

/** What a layer holds in memory, for tests that check nothing is left behind and for the reconnect tests. */
export interface Introspection {
  /** Channels with a subscription in this layer. */
  readonly channels: number
  /** (channel, group) pairs with a member in this layer. */
  readonly groups: number
  /** Channels waiting to be read. */
  readonly pending: number
  /** The server process of the LISTEN connection, while it is up. */
  readonly listenerPid: number | undefined
  /** How many times the LISTEN connection was made again after it was lost. */
  readonly reconnects: number
}

/** At most this many events per pull for a member of a group (as on the memory bus). */
const groupChunk = 16
/** Rows per channel in one read. */
const pageSize = 128
/** Channels in one read. */
const readBatch = 128
/** Fibers that read channels, each one batch at a time. */
const readers = 4
/** Statements at once (the pool's size) unless told: more wait in this process, not in the pool, whose wait times out. */
const defaultMaxConnections = 10
/** How long the layer waits for the database when it is built, and the LISTEN connection when it connects. */
const connectTimeoutMillis = 3000
/**
 * How long a statement waits for a connection of the pool. Longer than `connectTimeoutMillis`: pg-pool times the wait
 * with a timer, which fires before the pool hands over a connection if the process was busy for that long.
 */
const poolTimeoutMillis = 15_000

/** The key a channel is stored and notified under: its name, or a hash when the name is long or could be mistaken. */
export const channelKey = (channel: string): string =>
  channel.length <= 200 && !channel.startsWith("#") && !channel.includes("\u0000") && Buffer.byteLength(channel) <= 200
    ? channel
    : `#${createHash("sha256").update(channel).digest("hex")}`

const describe = (error: SqlError): string => {
  const cause = error.cause instanceof Error ? error.cause.message : undefined
  return cause !== undefined && cause !== "" && cause !== error.message ? `${error.message}: ${cause}` : error.message
}

const describeUnknown = (error: unknown): string => error instanceof Error ? error.message : String(error)

/** A (channel key, group) pair as one string; a key never holds a NUL (see `channelKey`). */
const pair = (key: string, group: string): string => `${key}\u0000${group}`

const unpair = (entry: string): readonly [key: string, group: string] => {
  const at = entry.indexOf("\u0000")
  return [entry.slice(0, at), entry.slice(at + 1)]
}

/**
 * Coalesces concurrent calls into one statement: every caller gets the result of a `run` that started after it called
 * (never of one already under way, whose snapshot could be older than the call), with the keys of every call since the
 * previous `run`. One `run` at a time, in a fiber of the scope.
 */
const coalesce = <K, A, E>(
  run: (keys: ReadonlyArray<K>) => Effect.Effect<A, E>
): Effect.Effect<(key: K) => Effect.Effect<A, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    let next: { readonly keys: Set<K>; readonly done: Deferred.Deferred<A, E> } | undefined
    const signal = yield* Queue.bounded<void>(1)
    // Callers still waiting when the scope closes are interrupted rather than left waiting for ever.
    yield* Effect.addFinalizer(() => next === undefined ? Effect.void : Deferred.interrupt(next.done))
    yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      yield* Queue.take(signal)
      const batch = next
      next = undefined
      if (batch === undefined) return
      yield* Deferred.complete(batch.done, run([...batch.keys])).pipe(
        Effect.onInterrupt(() => Deferred.interrupt(batch.done))
      )
    })))
    return (key: K) =>
      Effect.suspend(() => {
        if (next === undefined) {
          next = { keys: new Set(), done: Deferred.unsafeMake(FiberId.none) }
          Queue.unsafeOffer(signal, undefined)
        }
        next.keys.add(key)
        return Deferred.await(next.done)
      })
  })

const tableNames = (prefix: string) => ({
  channels: `${prefix}channels`,
  messages: `${prefix}messages`,
  groups: `${prefix}groups`,
  deliveries: `${prefix}deliveries`,
  readers: `${prefix}readers`,
  migrations: `${prefix}migrations`,
  notify: `${prefix}wake`
})

const migrations = (
  t: ReturnType<typeof tableNames>
): Record<string, Effect.Effect<void, SqlError, SqlClient.SqlClient>> => ({
  "1_bus_init": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE IF NOT EXISTS ${sql(t.channels)} (
      channel TEXT PRIMARY KEY,
      published_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )`
    yield* sql`CREATE TABLE IF NOT EXISTS ${sql(t.messages)} (
      id BIGSERIAL PRIMARY KEY,
      channel TEXT NOT NULL,
      data TEXT NOT NULL,
      created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )`
    yield* sql`CREATE INDEX IF NOT EXISTS ${sql(`${t.messages}_by_channel`)} ON ${sql(t.messages)} (channel, id)`
    yield* sql`CREATE INDEX IF NOT EXISTS ${sql(`${t.messages}_by_age`)} ON ${sql(t.messages)} (created_at)`
    yield* sql`CREATE TABLE IF NOT EXISTS ${sql(t.groups)} (
      channel TEXT NOT NULL,
      grp TEXT NOT NULL,
      seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
      PRIMARY KEY (channel, grp)
    )`
    yield* sql`CREATE TABLE IF NOT EXISTS ${sql(t.deliveries)} (
      id BIGSERIAL PRIMARY KEY,
      channel TEXT NOT NULL,
      grp TEXT NOT NULL,
      message_id BIGINT NOT NULL,
      leased_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
      leased_by TEXT
    )`
    yield* sql`CREATE INDEX IF NOT EXISTS ${sql(`${t.deliveries}_by_group`)} ON ${sql(t.deliveries)} (channel, grp, id)`
    yield* sql`CREATE INDEX IF NOT EXISTS ${sql(`${t.deliveries}_by_message`)} ON ${sql(t.deliveries)} (message_id)`
    yield* sql`CREATE TABLE IF NOT EXISTS ${sql(t.readers)} (
      instance TEXT PRIMARY KEY,
      lag_from BIGINT,
      seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )`
  })
})

// -----------------------------------------------------------------------------------------------------------------

interface Plain {
  cursor: number
  readonly queue: Queue.Queue<BusEvent>
}

interface Member {
  readonly group: string
  /** At most one pending wake-up. */
  readonly wake: Queue.Queue<void>
  readonly closed: Deferred.Deferred<void>
  /** Ids of the deliveries it emitted and has not acknowledged yet (acknowledged by its next pull). */
  inflight: ReadonlyArray<string>
}

interface ChannelState {
  readonly channel: string
  readonly key: string
  readonly plain: Set<Plain>
  readonly members: Set<Member>
  /** Woken since its last read began: it must be read (again). */
  dirty: boolean
  /** In the queue of channels to read. */
  queued: boolean
  /** Being read: one read of a channel at a time. */
  reading: boolean
}

interface Registration {
  readonly key: string
  readonly group: string
  count: number
}

interface Row {
  readonly id: string
  readonly data: string | null
}

interface ChannelRow extends Row {
  readonly key: string
}

/** A row of a take: no delivery (a null id) when there was nothing to take. */
interface TakeRow {
  readonly id: string | null
  readonly data: string | null
  readonly wait_ms: number | null
}

/**
 * Builds the bus over its own connections to the database at `options.url`: a pool for statements and one LISTEN
 * connection. Creates its tables. Fails with an `EventBusError` naming the URL when the database cannot be reached.
 */
export const make = (options: Options): Effect.Effect<
  { readonly bus: EventBus["Type"]; readonly introspect: Effect.Effect<Introspection> },
  EventBusError,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const prefix = options.prefix ?? "stepwise_bus_"
    if (!/^[a-z_][a-z0-9_]{0,40}$/.test(prefix)) return yield* Effect.dieMessage(`Invalid table prefix "${prefix}"`)
    const maxConnections = options.maxConnections ?? defaultMaxConnections
    if (!Number.isInteger(maxConnections) || maxConnections < 1) {
      return yield* Effect.dieMessage(`Invalid maxConnections ${maxConnections}: a whole number of connections, at least 1`)
    }
    const t = tableNames(prefix)
    const where = redactUrl(options.url)
    const leaseMillis = Duration.toMillis(Duration.decode(options.redeliverAfter ?? "10 seconds"))
    const retentionMillis = Duration.toMillis(Duration.decode(options.retention ?? "1 minute"))
    const safetyNetMillis = Duration.toMillis(Duration.decode(options.safetyNet ?? "5 seconds"))
    const instance = crypto.randomUUID()
    const layerError = (reason: string) => new EventBusError({ channel: "*", reason })

    // Fails fast (and names the URL) when the database cannot be reached.
    yield* Effect.tryPromise({
      try: async () => {
        const probe = new Pg.Client({
          connectionString: options.url,
          connectionTimeoutMillis: connectTimeoutMillis,
          keepAlive: false,
          application_name: `stepwise-bus ${prefix}`
        })
        probe.on("error", () => {})
        try {
          await probe.connect()
        } finally {
          await probe.end().catch(() => {})
        }
      },
      catch: (error) => layerError(`cannot connect to Postgres at ${where} (${describeUnknown(error)})`)
    })

    const sql = yield* PgClient.make({
      url: Redacted.make(options.url),
      connectTimeout: Duration.millis(poolTimeoutMillis),
      maxConnections,
      applicationName: `stepwise-bus ${prefix}`
    }).pipe(
      Effect.provideServiceEffect(Reactivity.Reactivity, Reactivity.make),
      Effect.withClock(wallClock),
      Effect.mapError((error) => layerError(`cannot connect to Postgres at ${where} (${describe(error)})`))
    )

    yield* Migrator.make({})({ loader: Migrator.fromRecord(migrations(t)), table: t.migrations }).pipe(
      Effect.provideService(SqlClient.SqlClient, sql),
      // Two layers starting together: one migrates, the other waits for its lock or retries.
      Effect.retry(Schedule.intersect(Schedule.spaced("200 millis"), Schedule.recurs(25))),
      Effect.withClock(wallClock),
      Effect.catchAllCause((cause) =>
        Effect.fail(layerError(`cannot create the bus tables in ${where} (${Cause.squash(cause)})`))
      )
    )

    // A slot per connection, taken in order of arrival (an Effect semaphore lets a newcomer take a freed permit before
    // the fibers that waited, so that a stream of publishes could starve the readers).
    const slots = yield* Queue.bounded<void>(maxConnections)
    /** Every statement goes through here (see `maxConnections`). */
    const limited = <A, E, R>(statement: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.zipRight(restore(Queue.offer(slots, undefined)), Effect.ensuring(restore(statement), Queue.take(slots)))
      )

    const channels = new Map<string, ChannelState>()
    const registrations = new Map<string, Registration>()
    /** The LISTEN connection while it is up. */
    let session: { readonly client: PgListenClient; readonly lost: Deferred.Deferred<void> } | undefined
    let listenerPid: number | undefined
    let reconnects = 0
    const toRead = yield* Queue.unbounded<ChannelState>()

    const enqueue = (state: ChannelState) => {
      if (state.queued || state.reading) return
      state.queued = true
      Queue.unsafeOffer(toRead, state)
    }

    const wake = (state: ChannelState) => {
      for (const member of state.members) Queue.unsafeOffer(member.wake, undefined)
      if (state.plain.size === 0) return
      state.dirty = true
      enqueue(state)
    }
    const wakeAll = () => {
      for (const state of channels.values()) wake(state)
    }

    /**
     * Runs `effect` until it succeeds, waiting longer after each failure (up to 2 s): the database may come back. Warns
     * at the first failure only.
     */
    const persist = <A>(what: string, effect: Effect.Effect<A, SqlError>) =>
      Effect.gen(function*() {
        let delay = 50
        while (true) {
          const result = yield* Effect.either(effect)
          if (Either.isRight(result)) return result.right
          const message = `Postgres bus: ${what} failed, retrying until it succeeds`
          yield* delay === 50
            ? Effect.logWarning(message, describe(result.left))
            : Effect.logDebug(message, describe(result.left))
          yield* wallSleep(delay)
          delay = Math.min(2000, delay * 2)
        }
      })

    /**
     * Runs `effect` through an outage of the database (a restart, a lost connection) as the engines ride out theirs
     * (`Retry.outage`: backoff up to 5 s apart, for up to 2 minutes), warning at the first failure; then fails with
     * the last error. For what a caller waits on, such as a subscription being made.
     */
    const rideOut = <A>(what: string, effect: Effect.Effect<A, SqlError>) => {
      let warned = false
      return effect.pipe(
        Effect.tapError((error) =>
          Effect.suspend(() => {
            const message = `Postgres bus: ${what} failed, retrying for up to 2 minutes`
            if (warned) return Effect.logDebug(message, describe(error))
            warned = true
            return Effect.logWarning(message, describe(error))
          })
        ),
        Effect.retry(Retry.outage),
        Effect.withClock(wallClock)
      )
    }

    const decode = (channel: string, row: Row): Effect.Effect<BusEvent | undefined> => {
      if (row.data === null) return skipMalformed(channel, `the message of delivery ${row.id} is gone`)
      let parsed: unknown
      try {
        parsed = JSON.parse(row.data)
      } catch (error) {
        return skipMalformed(channel, `not JSON: ${describeUnknown(error)}`)
      }
      return decodeIncoming(channel, parsed)
    }

    // ---------------------------------------------------------------------------------------------------------------
    // plain subscriptions: the channels woken are read in batches, each once for all its subscriptions in this layer

    const readChannels = (keys: ReadonlyArray<string>, cursors: ReadonlyArray<number>) =>
      limited(sql<ChannelRow>`SELECT k.key, m.id, m.data
        FROM unnest(${keys}::text[], ${cursors}::bigint[]) AS k(key, cursor)
        CROSS JOIN LATERAL (
          SELECT id, data FROM ${sql(t.messages)} WHERE channel = k.key AND id > k.cursor ORDER BY id LIMIT ${pageSize}
        ) AS m
        ORDER BY m.id`)

    /**
     * Reads the channels from the lowest cursor of their subscriptions and hands each subscription the events past its
     * own cursor, in order. A subscription that arrived during the read with a lower cursor is left for the next read.
     */
    const read = (batch: ReadonlyArray<ChannelState>) =>
      Effect.gen(function*() {
        const states: Array<ChannelState> = []
        const froms: Array<number> = []
        for (const state of batch) {
          state.queued = false
          if (channels.get(state.key) !== state || state.plain.size === 0) continue
          let from = Infinity
          for (const sub of state.plain) from = Math.min(from, sub.cursor)
          state.reading = true
          state.dirty = false
          states.push(state)
          froms.push(from)
        }
        if (states.length === 0) return
        const rows = yield* persist("reading channels", readChannels(states.map((state) => state.key), froms))
        const byKey = new Map<string, Array<ChannelRow>>()
        for (const row of rows) {
          const list = byKey.get(row.key)
          if (list === undefined) byKey.set(row.key, [row])
          else list.push(row)
        }
        for (let i = 0; i < states.length; i++) {
          const state = states[i]!
          const from = froms[i]!
          const found = byKey.get(state.key) ?? []
          const events: Array<readonly [number, BusEvent]> = []
          for (const row of found) {
            const event = yield* decode(state.channel, row)
            if (event !== undefined) events.push([Number(row.id), event])
          }
          const last = found.length === 0 ? from : Number(found[found.length - 1]!.id)
          for (const sub of state.plain) {
            if (sub.cursor < from) {
              state.dirty = true
              continue
            }
            if (sub.cursor >= last) continue
            for (const [id, event] of events) {
              // Not `Queue.offer`: that would interrupt this reader if the subscription ended meanwhile.
              if (id > sub.cursor) Queue.unsafeOffer(sub.queue, event)
            }
            sub.cursor = last
          }
          state.reading = false
          if (found.length === pageSize) state.dirty = true
          if (state.dirty && channels.get(state.key) === state && state.plain.size > 0) enqueue(state)
        }
      })

    const reader = Effect.forever(
      Effect.flatMap(Queue.takeBetween(toRead, 1, readBatch), (batch) => read(Chunk.toReadonlyArray(batch)))
    )

    const acquire = (channel: string, key: string): ChannelState => {
      let state = channels.get(key)
      if (state === undefined) {
        state = { channel, key, plain: new Set(), members: new Set(), dirty: false, queued: false, reading: false }
        channels.set(key, state)
      }
      return state
    }

    const release = (state: ChannelState) => {
      if (state.plain.size > 0 || state.members.size > 0 || channels.get(state.key) !== state) return
      channels.delete(state.key)
    }

    /**
     * Where a new subscription starts: the last id the sequence gave, for every channel at once. An event committed
     * before has an id up to it; one published after the subscription (publish started once subscribe returned) gets a
     * larger id, as ids only grow; a publish under way meanwhile is concurrent and may go either way.
     */
    const position = yield* coalesce(() =>
      limited(sql<{ readonly id: string }>`SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS id
        FROM ${sql(`${t.messages}_id_seq`)}`).pipe(Effect.map((rows) => Number(rows[0]?.id ?? 0)))
    )

    const subscribePlain = (channel: string) =>
      Effect.gen(function*() {
        const key = channelKey(channel)
        // Made while the database is down (a restart), a subscription waits for it rather than failing its reader.
        const cursor = yield* rideOut(`subscribing to "${channel}"`, position(undefined)).pipe(
          Effect.mapError((error) => new EventBusError({ channel, reason: `could not subscribe: ${describe(error)}` }))
        )
        const queue = yield* Queue.unbounded<BusEvent>()
        const sub: Plain = { cursor, queue }
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            const state = acquire(channel, key)
            state.plain.add(sub)
            // A notification that came before this subscription had a state was dropped: read once now.
            wake(state)
            return state
          }),
          (state) =>
            Effect.suspend(() => {
              state.plain.delete(sub)
              release(state)
              return Queue.shutdown(queue)
            })
        )
        return Stream.fromQueue(queue)
      })

    // ---------------------------------------------------------------------------------------------------------------
    // groups

    /** Upserts groups, in one order in every process so that two upserts never wait on each other's rows. */
    const upsertGroups = (pairs: ReadonlyArray<readonly [key: string, group: string]>) => {
      const sorted = [...pairs].sort(([k1, g1], [k2, g2]) => k1 < k2 ? -1 : k1 > k2 ? 1 : g1 < g2 ? -1 : g1 > g2 ? 1 : 0)
      const keys = sorted.map(([key]) => key)
      const groups = sorted.map(([, group]) => group)
      return sql`INSERT INTO ${sql(t.groups)} (channel, grp)
        SELECT g.channel, g.grp FROM unnest(${keys}::text[], ${groups}::text[]) WITH ORDINALITY AS g(channel, grp, ord)
        ORDER BY g.ord
        ON CONFLICT (channel, grp) DO UPDATE SET seen_at = now()`
    }

    /** Registers a group (of every call since the last statement, in one). */
    const registerGroup = yield* coalesce((pairs: ReadonlyArray<string>) =>
      limited(upsertGroups(pairs.map(unpair))).pipe(Effect.asVoid)
    )

    const take = (key: string, group: string, acks: ReadonlyArray<string>) =>
      limited(sql<TakeRow>`WITH acked AS (
          DELETE FROM ${sql(t.deliveries)} WHERE id = ANY(${acks}::bigint[])
        ), taken AS (
          UPDATE ${sql(t.deliveries)} SET
            leased_until = now() + ${leaseMillis}::float8 * interval '1 millisecond',
            leased_by = ${instance}
          WHERE id IN (
            SELECT id FROM ${sql(t.deliveries)}
            WHERE channel = ${key} AND grp = ${group} AND leased_until < now() AND id <> ALL(${acks}::bigint[])
            ORDER BY id LIMIT ${groupChunk}
            FOR UPDATE SKIP LOCKED
          )
          RETURNING id, message_id
        )
        SELECT taken.id, m.data,
          (SELECT (EXTRACT(EPOCH FROM MIN(leased_until) - now()) * 1000)::float8 FROM ${sql(t.deliveries)}
            WHERE channel = ${key} AND grp = ${group} AND leased_until >= now()) AS wait_ms
        FROM (SELECT 1) AS one
        LEFT JOIN taken ON true
        LEFT JOIN ${sql(t.messages)} m ON m.id = taken.message_id
        ORDER BY taken.id`)

    /**
     * One pull of a member: acknowledges what it emitted last, takes the next deliveries, and waits (for a
     * notification, the end of a lease, or the safety net) while there are none. Ends once its scope closed.
     */
    const pull = (channel: string, key: string, member: Member) =>
      Effect.gen(function*() {
        // Pulled again after its scope closed: what it emitted last was handled, so it is acknowledged still.
        const ended = Effect.suspend(() => {
          const acks = member.inflight
          member.inflight = []
          const ack = acks.length === 0
            ? Effect.void
            : limited(sql`DELETE FROM ${sql(t.deliveries)} WHERE id = ANY(${acks}::bigint[])`).pipe(
              Effect.catchAll((error) =>
                Effect.logWarning(`Postgres bus: acknowledging on channel "${channel}" failed`, describe(error))
              )
            )
          return Effect.zipRight(ack, Effect.fail(Option.none<EventBusError>()))
        })
        while (true) {
          if (yield* Deferred.isDone(member.closed)) return yield* ended
          const acks = member.inflight
          const result = yield* Effect.raceFirst(
            Effect.map(
              persist(`taking from channel "${channel}" (group "${member.group}")`, take(key, member.group, acks)),
              Option.some
            ),
            Effect.as(Deferred.await(member.closed), Option.none())
          )
          if (Option.isNone(result)) return yield* ended
          const rows = result.value.filter((row): row is Row & TakeRow => row.id !== null)
          member.inflight = rows.map((row) => row.id)
          const events: Array<BusEvent> = []
          for (const row of rows) {
            const event = yield* decode(channel, row)
            if (event !== undefined) events.push(event)
          }
          if (events.length > 0) return Chunk.unsafeFromArray(events)
          // Only malformed ones: acknowledged by the next take, at once.
          if (rows.length > 0) continue
          const waitMs = result.value[0]?.wait_ms ?? null
          const wait = waitMs === null ? safetyNetMillis : Math.max(1, Math.min(safetyNetMillis, Math.ceil(waitMs)))
          yield* Effect.raceAll([Queue.take(member.wake), wallSleep(wait), Deferred.await(member.closed)])
        }
      })

    const subscribeGroup = (channel: string, group: string) =>
      Effect.gen(function*() {
        const key = channelKey(channel)
        yield* rideOut(`joining group "${group}" of "${channel}"`, registerGroup(pair(key, group))).pipe(
          Effect.mapError((error) =>
            new EventBusError({ channel, reason: `could not join group "${group}": ${describe(error)}` })
          )
        )
        const member: Member = {
          group,
          wake: yield* Queue.bounded<void>(1),
          closed: yield* Deferred.make<void>(),
          inflight: []
        }
        const registration = pair(key, group)
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            const state = acquire(channel, key)
            state.members.add(member)
            const entry = registrations.get(registration)
            if (entry === undefined) registrations.set(registration, { key, group, count: 1 })
            else entry.count++
            return state
          }),
          (state) =>
            Effect.sync(() => {
              state.members.delete(member)
              Deferred.unsafeDone(member.closed, Exit.void)
              const entry = registrations.get(registration)
              if (entry !== undefined && --entry.count === 0) registrations.delete(registration)
              release(state)
            })
        )
        return Stream.repeatEffectChunkOption(pull(channel, key, member))
      })

    /**
     * The lowest cursor of the subscriptions whose channel has events they have not read yet (woken and not read since,
     * or all of them while the LISTEN connection is down), or null: the janitor keeps every message above it.
     */
    const lagFrom = (): number | null => {
      let bound = Infinity
      for (const state of channels.values()) {
        if (state.plain.size === 0) continue
        if (session !== undefined && !state.dirty && !state.queued && !state.reading) continue
        for (const sub of state.plain) bound = Math.min(bound, sub.cursor)
      }
      return bound === Infinity ? null : bound
    }
    let reportedLag: number | null = null

    /**
     * Tells the janitors how far behind this layer's readers are, keeps its groups alive and extends the leases of what
     * its members hold.
     */
    const heartbeat = Effect.suspend(() => {
      const lag = lagFrom()
      if (registrations.size === 0 && lag === null && reportedLag === null) return Effect.void
      const groups = [...registrations.values()].map((entry) => [entry.key, entry.group] as const)
      const held: Array<string> = []
      for (const state of channels.values()) {
        for (const member of state.members) held.push(...member.inflight)
      }
      return limited(sql`WITH seen AS (${upsertGroups(groups)}), lag AS (
          INSERT INTO ${sql(t.readers)} (instance, lag_from) VALUES (${instance}, ${lag})
          ON CONFLICT (instance) DO UPDATE SET lag_from = EXCLUDED.lag_from, seen_at = now()
        )
        UPDATE ${sql(t.deliveries)} SET leased_until = now() + ${leaseMillis}::float8 * interval '1 millisecond'
        WHERE id = ANY(${held}::bigint[]) AND leased_by = ${instance}`).pipe(
        Effect.tap(() => {
          reportedLag = lag
        }),
        Effect.asVoid,
        Effect.catchAll((error) => Effect.logWarning("Postgres bus: heartbeat failed", describe(error)))
      )
    })

    // ---------------------------------------------------------------------------------------------------------------
    // publishing

    /**
     * Wakes the subscribers of a channel in every process, in one statement for every publish of this layer since the
     * previous one, on the LISTEN connection (idle otherwise, so a notification does not wait for the pool) or, while
     * that one is down, the pool. Not in the publishing transaction: Postgres serializes the commits of transactions
     * that notify, on one lock held until the commit is flushed, so that concurrent publishers would wait on each
     * other's disk writes (here, 8 connections published 600 to 3,000 times a second with the NOTIFY inside, 1,900 to
     * 3,500 with it after). A transaction that only notifies has nothing to flush. A failure loses no event: the
     * channel's readers catch up at its next wake-up or from the safety net.
     */
    const notify = yield* coalesce((keys: ReadonlyArray<string>) => {
      const current = session
      const viaPool = limited(sql`SELECT pg_notify(${t.notify}, k) FROM unnest(${keys}::text[]) AS k`).pipe(
        Effect.mapError(describe)
      )
      const sent: Effect.Effect<unknown, string> = current === undefined ? viaPool : Effect.tryPromise({
        try: () => current.client.query("SELECT pg_notify($1, k) FROM unnest($2::text[]) AS k", [t.notify, keys]),
        catch: describeUnknown
      }).pipe(
        // The LISTEN connection is going down: the pool's may still be up.
        Effect.orElse(() => viaPool)
      )
      return sent.pipe(
        Effect.asVoid,
        Effect.catchAll((reason) => Effect.logWarning("Postgres bus: NOTIFY failed", reason))
      )
    })

    const publishAll = (channel: string, events: ReadonlyArray<BusEvent>): Effect.Effect<void, EventBusError> =>
      Effect.suspend(() => {
        if (events.length === 0) return Effect.void
        let batch: string
        try {
          batch = JSON.stringify(events.map((event) => JSON.stringify(event)))
        } catch (error) {
          return Effect.fail(
            new EventBusError({ channel, reason: `the event is not JSON-serializable (${describeUnknown(error)})` })
          )
        }
        const key = channelKey(channel)
        return limited(sql`WITH ch AS (
            INSERT INTO ${sql(t.channels)} AS c (channel) VALUES (${key})
            ON CONFLICT (channel) DO UPDATE SET published_at = now()
            RETURNING c.channel
          ), inserted AS (
            INSERT INTO ${sql(t.messages)} (channel, data)
            SELECT ch.channel, e.data FROM ch, json_array_elements_text(${batch}::json) WITH ORDINALITY AS e(data, ord)
            ORDER BY e.ord
            RETURNING id
          )
          INSERT INTO ${sql(t.deliveries)} (channel, grp, message_id)
          SELECT g.channel, g.grp, inserted.id FROM inserted, ${sql(t.groups)} g
          WHERE g.channel = ${key}
          ORDER BY inserted.id`).pipe(
          Effect.mapError((error) => new EventBusError({ channel, reason: `could not publish: ${describe(error)}` })),
          Effect.zipRight(notify(key))
        )
      })

    const publish = (channel: string, event: BusEvent) => publishAll(channel, [event])

    // ---------------------------------------------------------------------------------------------------------------
    // the LISTEN connection

    const connectListener = (lost: Deferred.Deferred<void>) =>
      Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const client = new Pg.Client({
              connectionString: options.url,
              connectionTimeoutMillis: connectTimeoutMillis,
              keepAlive: true,
              application_name: `stepwise-bus-listen ${prefix}`
            })
            client.on("error", () => Deferred.unsafeDone(lost, Exit.void))
            client.on("end", () => Deferred.unsafeDone(lost, Exit.void))
            client.on("notification", (message) => {
              if (message.channel !== t.notify || message.payload === undefined) return
              const state = channels.get(message.payload)
              if (state !== undefined) wake(state)
            })
            try {
              await client.connect()
              await client.query(`LISTEN ${t.notify}`)
              const rows = await client.query("SELECT pg_backend_pid() AS pid")
              return { client, pid: Number(rows.rows[0]?.["pid"]) }
            } catch (error) {
              client.end().catch(() => {})
              throw error
            }
          },
          catch: (error) => layerError(`cannot LISTEN on Postgres at ${where} (${describeUnknown(error)})`)
        }),
        ({ client }) =>
          Effect.promise(() => client.end().catch(() => {})).pipe(
            Effect.timeoutOption(1000),
            Effect.withClock(wallClock)
          )
      )

    const ready = yield* Deferred.make<void, EventBusError>()

    /** One connection, from connecting to losing it. Fails only when it could not connect and LISTEN. */
    const listenOnce = Effect.scoped(Effect.gen(function*() {
      const lost = yield* Deferred.make<void>()
      const { client, pid } = yield* connectListener(lost)
      session = { client, lost }
      listenerPid = pid
      if (yield* Deferred.isDone(ready)) reconnects++
      else yield* Deferred.succeed(ready, undefined)
      // Listening: now whatever was published while nobody listened is read from the tables.
      wakeAll()
      yield* Deferred.await(lost)
      session = undefined
      listenerPid = undefined
      yield* Effect.logWarning(`Postgres bus: lost the LISTEN connection to ${where}, reconnecting`)
    }))

    const listenLoop = Effect.gen(function*() {
      let delay = 0
      let warned = false
      while (true) {
        if (delay > 0) yield* wallSleep(delay)
        const result = yield* Effect.either(listenOnce)
        if (Either.isRight(result)) {
          delay = 0
          warned = false
          continue
        }
        if (!(yield* Deferred.isDone(ready))) return yield* Deferred.fail(ready, result.left)
        if (!warned) yield* Effect.logWarning(`Postgres bus: ${result.left.reason}; retrying until it is back`)
        warned = true
        delay = Math.min(2000, Math.max(100, delay * 2))
      }
    })

    yield* Effect.replicateEffect(Effect.forkScoped(reader), readers)
    yield* Effect.forkScoped(listenLoop)
    yield* Deferred.await(ready)

    /**
     * The fallback, never the main path: checks that the LISTEN connection answers, and wakes the channels whose
     * table has events past their cursor (one statement for all of them).
     */
    const safetyNet = Effect.gen(function*() {
      const current = session
      if (current !== undefined) {
        const alive = yield* Effect.tryPromise(() => current.client.query("SELECT 1")).pipe(
          Effect.timeoutOption(3000),
          Effect.withClock(wallClock),
          Effect.map(Option.isSome),
          Effect.orElseSucceed(() => false)
        )
        if (!alive) {
          current.client.end().catch(() => {})
          Deferred.unsafeDone(current.lost, Exit.void)
        }
      }
      const keys: Array<string> = []
      const cursors: Array<number> = []
      for (const state of channels.values()) {
        if (state.plain.size === 0) continue
        let cursor = Infinity
        for (const sub of state.plain) cursor = Math.min(cursor, sub.cursor)
        keys.push(state.key)
        cursors.push(cursor)
      }
      if (keys.length === 0) return
      const behind = yield* limited(sql<{ readonly key: string }>`SELECT k.key
        FROM unnest(${keys}::text[], ${cursors}::bigint[]) AS k(key, cursor)
        WHERE EXISTS (SELECT 1 FROM ${sql(t.messages)} m WHERE m.channel = k.key AND m.id > k.cursor)`).pipe(
        Effect.orElseSucceed(() => [])
      )
      for (const { key } of behind) {
        const state = channels.get(key)
        if (state !== undefined) wake(state)
      }
    })

    const janitor = limited(sql`WITH old_messages AS (
        DELETE FROM ${sql(t.messages)} m
        WHERE m.created_at < now() - ${retentionMillis}::float8 * interval '1 millisecond'
          AND m.id <= COALESCE(
            (SELECT MIN(lag_from) FROM ${sql(t.readers)}
              WHERE seen_at >= now() - ${retentionMillis}::float8 * interval '1 millisecond'),
            9223372036854775807)
          AND NOT EXISTS (SELECT 1 FROM ${sql(t.deliveries)} d WHERE d.message_id = m.id)
      ), dead_readers AS (
        DELETE FROM ${sql(t.readers)} WHERE seen_at < now() - ${retentionMillis}::float8 * interval '1 millisecond'
      ), old_channels AS (
        DELETE FROM ${sql(t.channels)} WHERE published_at < now() - ${retentionMillis}::float8 * interval '1 millisecond'
      ), dead_groups AS (
        DELETE FROM ${sql(t.groups)} WHERE seen_at < now() - ${retentionMillis}::float8 * interval '1 millisecond'
        RETURNING channel, grp
      )
      DELETE FROM ${sql(t.deliveries)} d
      WHERE NOT EXISTS (SELECT 1 FROM ${sql(t.groups)} g WHERE g.channel = d.channel AND g.grp = d.grp)
        OR EXISTS (SELECT 1 FROM dead_groups x WHERE x.channel = d.channel AND x.grp = d.grp)`).pipe(
      Effect.asVoid,
      Effect.catchAll((error) => Effect.logWarning("Postgres bus: the janitor failed", describe(error)))
    )

    const every = (millis: () => number, effect: Effect.Effect<void>) =>
      Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.suspend(() => wallSleep(millis())), effect)))

    // A layer that closes stops holding the janitors back at once.
    yield* Effect.addFinalizer(() =>
      sql`DELETE FROM ${sql(t.readers)} WHERE instance = ${instance}`.pipe(
        Effect.timeoutOption(1000),
        Effect.withClock(wallClock),
        Effect.ignore
      )
    )
    const beatMillis = Math.max(20, Math.min(leaseMillis, retentionMillis) / 3)
    const janitorMillis = Math.max(50, Math.min(30_000, retentionMillis / 2))
    yield* every(() => beatMillis, heartbeat)
    yield* every(() => safetyNetMillis, safetyNet)
    // Jittered, so that the layers of many processes do not clean up in step.
    yield* every(() => janitorMillis * (0.5 + Math.random()), janitor)

    const subscribe = (channel: string, options?: SubscribeOptions) =>
      options?.group === undefined ? subscribePlain(channel) : subscribeGroup(channel, options.group)

    return {
      bus: EventBus.of({ publish, publishAll, subscribe }),
      introspect: Effect.map(Queue.size(toRead), (size) => ({
        channels: channels.size,
        groups: registrations.size,
        // Negative while readers wait for work.
        pending: Math.max(0, size),
        listenerPid,
        reconnects
      }))
    }
  })
