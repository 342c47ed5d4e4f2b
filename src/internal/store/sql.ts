/**
 * The RunStore on `@effect/sql`: SQLite (embedded) and Postgres (shared by many workers). Tables come from the
 * migrator; the dialect differences (one-statement appends on Postgres, short transactions on SQLite) stay here.
 *
 * Dense indices, in one statement per append. Postgres: the statement bumps a counter row (the run's `event_count`,
 * the stream's `size`) and inserts at the counter's old value, so concurrent writers serialize on that row and never
 * collide or leave holes. SQLite runs one writer at a time, so the statement inserts at `MAX(idx) + 1` (read through
 * the primary key), and sizes are read the same way; its counter columns stay unused.
 *
 * Claims and fences. Each step row carries its `claim` key and its fence (`call_id`), so that a claim is one
 * conditional write of the step row, and a write made under a fence checks the fence in the statement that writes.
 * SQLite runs one statement (or short transaction) at a time: the check and the write are atomic as they are.
 * Postgres, under READ COMMITTED, with writers in many processes: every statement that writes a step row holds the
 * run's row from before it touches the step row until it commits (a claim or a fenced write locks it `FOR UPDATE`
 * first, a plain step write updates it first), and a fenced append (events, chunks, a stream's close) first locks the
 * run's row `FOR UPDATE` too, then reads its fences' step rows `FOR SHARE`, which sees their latest committed version
 * whatever the statement's snapshot. So a claim either commits before the append reads the fence, which then fails,
 * or waits for the append to commit; and every statement takes the run's row before any step row. (Weaker modes for
 * appends, `FOR NO KEY UPDATE` and `FOR KEY SHARE`, deadlocked under load: lock upgrades and update chains.)
 */
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as RunStore from "./model.js"
import { claimKey, fenceOf } from "./model.js"
import { RunStoreError, StepFencedError, StreamClosedError } from "../../WorkflowError.js"
import type { WorkflowEvent } from "../../WorkflowEvent.js"

/** How long a store keeps the heartbeat of an engine instance that went silent (the memory store too). */
export const workerRetentionMillis = 7 * 24 * 60 * 60 * 1000

const migrations: Record<string, Effect.Effect<void, SqlError, SqlClient.SqlClient>> = {
  "1_stepwise_init": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE IF NOT EXISTS stepwise_runs (
      run_id TEXT PRIMARY KEY,
      workflow_id TEXT NOT NULL,
      status TEXT NOT NULL,
      input TEXT NOT NULL,
      output TEXT,
      error TEXT,
      failed_step TEXT,
      suspended TEXT,
      owner TEXT,
      heartbeat_at BIGINT,
      event_count INTEGER NOT NULL DEFAULT 0,
      created_at BIGINT NOT NULL,
      updated_at BIGINT NOT NULL
    )`
    yield* sql`CREATE INDEX IF NOT EXISTS stepwise_runs_by_status ON stepwise_runs (workflow_id, status)`
    yield* sql`CREATE TABLE IF NOT EXISTS stepwise_events (
      run_id TEXT NOT NULL,
      idx INTEGER NOT NULL,
      data TEXT NOT NULL,
      PRIMARY KEY (run_id, idx)
    )`
    yield* sql`CREATE TABLE IF NOT EXISTS stepwise_steps (
      run_id TEXT NOT NULL,
      path TEXT NOT NULL,
      data TEXT NOT NULL,
      PRIMARY KEY (run_id, path)
    )`
    yield* sql`CREATE TABLE IF NOT EXISTS stepwise_streams (
      run_id TEXT NOT NULL,
      namespace TEXT NOT NULL,
      size INTEGER NOT NULL DEFAULT 0,
      closed INTEGER NOT NULL DEFAULT 0,
      PRIMARY KEY (run_id, namespace)
    )`
    yield* sql`CREATE TABLE IF NOT EXISTS stepwise_chunks (
      run_id TEXT NOT NULL,
      namespace TEXT NOT NULL,
      idx INTEGER NOT NULL,
      data TEXT NOT NULL,
      PRIMARY KEY (run_id, namespace, idx)
    )`
  }),
  // Counts the step writes of each run, so that engines know whether step records they hold are current. Postgres
  // bumps the count in the statement that writes the step; SQLite stamps each step row with the run's next count and
  // a trigger copies it to the run, which spares a statement per step write.
  "2_stepwise_steps_version": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`ALTER TABLE stepwise_runs ADD COLUMN steps_version BIGINT NOT NULL DEFAULT 0`
    yield* sql.onDialectOrElse({
      pg: () => Effect.void,
      orElse: () =>
        Effect.all([
          sql`ALTER TABLE stepwise_steps ADD COLUMN version BIGINT NOT NULL DEFAULT 0`,
          sql`CREATE TRIGGER stepwise_step_inserted AFTER INSERT ON stepwise_steps BEGIN
            UPDATE stepwise_runs SET steps_version = NEW.version WHERE run_id = NEW.run_id;
          END`,
          sql`CREATE TRIGGER stepwise_step_updated AFTER UPDATE OF version ON stepwise_steps BEGIN
            UPDATE stepwise_runs SET steps_version = NEW.version WHERE run_id = NEW.run_id;
          END`
        ], { discard: true })
    })
  }),
  // Postgres stamps each step row with its write's count too, so that a reader can ask for the rows written since.
  "3_stepwise_step_row_versions": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.onDialectOrElse({
      pg: () => sql`ALTER TABLE stepwise_steps ADD COLUMN version BIGINT NOT NULL DEFAULT 0`,
      orElse: () => Effect.void
    })
  }),
  // The last heartbeat of each engine instance, so that a run's owner can tell whether the instance executing one of
  // its steps is alive.
  "4_stepwise_workers": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE IF NOT EXISTS stepwise_workers (
      worker_id TEXT PRIMARY KEY,
      heartbeat_at BIGINT NOT NULL
    )`
  }),
  // What claims and fenced writes compare, beside each step record, so that each is one conditional statement:
  // `claim` (model.ts `claimKey`) and `call_id` (`fenceOf`). The records of unfinished runs are given theirs, computed
  // by those same functions; a row that does not parse is left without (reading it fails its run, as before).
  "5_stepwise_step_claims": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`ALTER TABLE stepwise_steps ADD COLUMN claim TEXT`
    yield* sql`ALTER TABLE stepwise_steps ADD COLUMN call_id TEXT`
    const rows = yield* sql<{ run_id: string; path: string; data: string }>`SELECT s.run_id, s.path, s.data
      FROM stepwise_steps s JOIN stepwise_runs r ON r.run_id = s.run_id
      WHERE r.status NOT IN ('success', 'failed', 'canceled')`
    const keys: Array<{ run_id: string; path: string; claim: string | null; call_id: string | null }> = []
    for (const row of rows) {
      let record: RunStore.StepRecord | undefined
      try {
        record = (JSON.parse(row.data) as { readonly v?: RunStore.StepRecord }).v
      } catch {
        continue
      }
      if (typeof record !== "object" || record === null) continue
      const claim = claimKey(record)
      const callId = fenceOf(record)
      if (claim !== null || callId !== null) keys.push({ run_id: row.run_id, path: row.path, claim, call_id: callId })
    }
    // Postgres: 500 rows a statement; SQLite (in process): a statement a row, by its primary key.
    yield* sql.onDialectOrElse({
      pg: () =>
        Effect.forEach(Array.from({ length: Math.ceil(keys.length / 500) }, (_, i) => i), (i) =>
          sql`UPDATE stepwise_steps s SET claim = x.claim, call_id = x.call_id
            FROM json_to_recordset(${JSON.stringify(keys.slice(i * 500, (i + 1) * 500))}::json)
              AS x(run_id text, path text, claim text, call_id text)
            WHERE s.run_id = x.run_id AND s.path = x.path`, { discard: true }),
      orElse: () =>
        Effect.forEach(keys, (key) =>
          sql`UPDATE stepwise_steps SET claim = ${key.claim}, call_id = ${key.call_id}
            WHERE run_id = ${key.run_id} AND path = ${key.path}`, { discard: true })
    })
  }),
  // SQLite: a step's record and the event announcing it in one statement. The statement that writes the step row
  // carries the event in `event`; a trigger appends it to the log after the log's last and clears the column, within
  // that statement. Before, the pair was a transaction of four statements (BEGIN, the step row, the event, COMMIT).
  // Postgres writes both in one statement already (CTEs).
  "6_stepwise_step_events": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.onDialectOrElse({
      pg: () => Effect.void,
      orElse: () =>
        Effect.all([
          sql`ALTER TABLE stepwise_steps ADD COLUMN event TEXT`,
          sql`CREATE TRIGGER stepwise_step_event_inserted AFTER INSERT ON stepwise_steps
            WHEN NEW.event IS NOT NULL BEGIN
              INSERT INTO stepwise_events (run_id, idx, data) VALUES (NEW.run_id,
                (SELECT COALESCE(MAX(idx) + 1, 0) FROM stepwise_events WHERE run_id = NEW.run_id), NEW.event);
              UPDATE stepwise_steps SET event = NULL WHERE run_id = NEW.run_id AND path = NEW.path;
            END`,
          sql`CREATE TRIGGER stepwise_step_event_updated AFTER UPDATE OF event ON stepwise_steps
            WHEN NEW.event IS NOT NULL BEGIN
              INSERT INTO stepwise_events (run_id, idx, data) VALUES (NEW.run_id,
                (SELECT COALESCE(MAX(idx) + 1, 0) FROM stepwise_events WHERE run_id = NEW.run_id), NEW.event);
              UPDATE stepwise_steps SET event = NULL WHERE run_id = NEW.run_id AND path = NEW.path;
            END`
        ], { discard: true })
    })
  }),
  // The run's trace context (`RunRecord.trace`, JSON), so that walks anywhere continue the run's trace.
  "7_stepwise_run_trace": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`ALTER TABLE stepwise_runs ADD COLUMN trace TEXT`
  }),
  // SQLite: a run's row and the events written with it (its start, with `createRun`; its end, with `updateRun`) in
  // one statement, as migration 6 does for steps: the statement carries the events (a JSON array of their JSON texts)
  // in `events`, and a trigger appends them after the log's last and clears the column. Before, creating a run with
  // its event was a transaction of four statements. Postgres writes both in one statement (CTEs).
  "8_stepwise_run_events": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const append = sql.literal(`INSERT INTO stepwise_events (run_id, idx, data)
        SELECT NEW.run_id, base.first + j.key, j.value FROM json_each(NEW.events) AS j,
          (SELECT COALESCE(MAX(idx) + 1, 0) AS first FROM stepwise_events WHERE run_id = NEW.run_id) AS base;
      UPDATE stepwise_runs SET events = NULL WHERE run_id = NEW.run_id;`)
    yield* sql.onDialectOrElse({
      pg: () => Effect.void,
      orElse: () =>
        Effect.all([
          sql`ALTER TABLE stepwise_runs ADD COLUMN events TEXT`,
          sql`CREATE TRIGGER stepwise_run_events_inserted AFTER INSERT ON stepwise_runs
            WHEN NEW.events IS NOT NULL BEGIN ${append} END`,
          sql`CREATE TRIGGER stepwise_run_events_updated AFTER UPDATE OF events ON stepwise_runs
            WHEN NEW.events IS NOT NULL BEGIN ${append} END`
        ], { discard: true })
    })
  })
}

/**
 * Runs the migrations up to and including `last` (by default all of them). Only tests stop early, to build a database
 * as an older release left it.
 */
export const migrateThrough = (last?: string) => {
  const ids = Object.keys(migrations)
  const upTo = last === undefined ? ids.length : ids.indexOf(last) + 1
  if (upTo === 0) return Effect.dieMessage(`There is no migration named "${last}"; there are: ${ids.join(", ")}`)
  const chosen = Object.fromEntries(ids.slice(0, upTo).map((id) => [id, migrations[id]!]))
  return Migrator.make({})({ loader: Migrator.fromRecord(chosen), table: "stepwise_migrations" }).pipe(
    // Two processes starting together: one migrates, the other sees the lock and tries again.
    Effect.retry(Schedule.intersect(Schedule.spaced("200 millis"), Schedule.recurs(25))),
    Effect.asVoid
  )
}

/** Creates or updates the tables. Safe to run from several processes at once. */
export const migrate = migrateThrough()

// -----------------------------------------------------------------------------------------------------------------
// values as JSON text: wrapped, so that `undefined` survives; bytes as base64

const bytesKey = "$stepwise:bytes"

function replacer(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const original = this[key]
  if (original instanceof Uint8Array) return { [bytesKey]: Buffer.from(original).toString("base64") }
  return value
}

const reviver = (_key: string, value: unknown): unknown => {
  if (typeof value === "object" && value !== null && bytesKey in value) {
    const encoded = (value as Record<string, unknown>)[bytesKey]
    if (typeof encoded === "string") return new Uint8Array(Buffer.from(encoded, "base64"))
  }
  return value
}

/**
 * Whether a value may hold bytes (a `Uint8Array`, `Buffer` included), which only the replacer writes as base64. Most
 * values (chunks of text, step outputs) hold none and are written without it: a replacer is a call from JSON.stringify
 * into JS for every key, which was 14-18% of a writer's CPU (bench:cluster profile). Past `budget` objects it gives up
 * and says yes, so that a large or cyclic value costs no more than before.
 */
const mayHoldBytes = (value: unknown): boolean => {
  let budget = 10_000
  const visit = (v: unknown): boolean => {
    if (typeof v !== "object" || v === null) return false
    if (v instanceof Uint8Array || --budget < 0) return true
    // what JSON.stringify writes of it is what `toJSON` answers, which this does not look into (a Date's is text)
    if (typeof (v as { readonly toJSON?: unknown }).toJSON === "function") return !(v instanceof Date)
    if (Array.isArray(v)) {
      for (const item of v) if (visit(item)) return true
      return false
    }
    for (const key in v) if (visit((v as Record<string, unknown>)[key])) return true
    return false
  }
  return visit(value)
}

const toJson = (value: unknown): string =>
  mayHoldBytes(value) ? JSON.stringify({ v: value }, replacer) : JSON.stringify({ v: value })

/** An event for the `event` column of a SQLite step write (migration 6), or NULL for none. */
const eventJson = (event: WorkflowEvent | undefined): string | null => event === undefined ? null : toJson(event)

/**
 * The value in a row's JSON text; throws when it is not one. Text without the bytes key is parsed without the reviver,
 * which JSON.parse would call for every key (16% of a reader's CPU, bench:cluster profile).
 */
const decodeText = (text: unknown): unknown => {
  if (typeof text !== "string") throw new Error(`expected JSON text, found ${text === null ? "NULL" : typeof text}`)
  const parsed = (text.includes(bytesKey) ? JSON.parse(text, reviver) : JSON.parse(text)) as unknown
  if (typeof parsed !== "object" || parsed === null) throw new Error("not a stepwise value")
  return (parsed as { readonly v?: unknown }).v
}

const corrupt = (what: string, runId: string, error: unknown) =>
  new RunStoreError({
    operation: "decode",
    runId,
    reason: `the row of ${what} is corrupt (${error instanceof Error ? error.message : String(error)})`
  })

const fromJson = (text: unknown, what: string, runId: string): Effect.Effect<unknown, RunStoreError> =>
  Effect.try({ try: () => decodeText(text), catch: (error) => corrupt(what, runId, error) })

/** The values of rows' `data`, in one loop (no Effect per row); fails naming the first corrupt row. */
const fromJsonRows = <Row extends { readonly data: unknown }>(
  rows: ReadonlyArray<Row>,
  what: (row: Row) => string,
  runId: string
): Effect.Effect<Array<unknown>, RunStoreError> =>
  Effect.suspend(() => {
    const values: Array<unknown> = new Array(rows.length)
    for (let i = 0; i < rows.length; i++) {
      try {
        values[i] = decodeText(rows[i]!.data)
      } catch (error) {
        return Effect.fail(corrupt(what(rows[i]!), runId, error))
      }
    }
    return Effect.succeed(values)
  })

const optionalJson = (text: unknown, what: string, runId: string) =>
  text === null || text === undefined ? Effect.succeed(undefined) : fromJson(text, what, runId)

// -----------------------------------------------------------------------------------------------------------------

interface RunRow {
  readonly run_id: string
  readonly workflow_id: string
  readonly status: string
  readonly input: string
  readonly output: string | null
  readonly error: string | null
  readonly failed_step: string | null
  readonly suspended: string | null
  readonly owner: string | null
  readonly heartbeat_at: number | string | null
  readonly created_at: number | string
  readonly updated_at: number | string
  readonly steps_version: number | string
  readonly trace: string | null
}

/**
 * The columns of a `RunRow`, named rather than `*`: the result of a prepared statement (Postgres, see pgClient.ts)
 * must not change shape when a migration adds a column.
 */
const runColumns = `run_id, workflow_id, status, input, output, error, failed_step, suspended, owner, heartbeat_at,
  created_at, updated_at, steps_version, trace`

/** A store failure, with the driver's own words (a deadlock, a lost connection) after `@effect/sql`'s. */
const fail = (operation: string, runId?: string) => (error: SqlError): RunStoreError =>
  new RunStoreError({
    operation,
    ...(runId === undefined ? {} : { runId }),
    reason: error.cause instanceof Error && error.cause.message !== "" && error.cause.message !== error.message
      ? `${error.message}: ${error.cause.message}`
      : error.message
  })

const noSuchRun = (operation: string, runId: string): RunStoreError =>
  new RunStoreError({ operation, runId, reason: "no such run" })

/** The number a one-row write answers, or that the run does not exist when it wrote no row. */
const firstRow = <R>(operation: string, runId: string, value: (row: R) => number | string) =>
(rows: ReadonlyArray<R>): Effect.Effect<number, RunStoreError> =>
  rows.length === 0 ? Effect.fail(noSuchRun(operation, runId)) : Effect.succeed(Number(value(rows[0]!)))

/** The index of the first row a batch append inserted (rows come back in no promised order). */
const firstIndex = (rows: ReadonlyArray<{ readonly idx: number }>): number => {
  let first = Number(rows[0]!.idx)
  for (const row of rows) first = Math.min(first, Number(row.idx))
  return first
}

/** A batch as one JSON array of each item's JSON text, so that one statement inserts every row. */
const batchJson = (items: ReadonlyArray<unknown>): string => JSON.stringify(items.map(toJson))

/** Builds the SQL store over the `SqlClient` of the context, after running the migrations. */
export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* Effect.mapError(migrate, (e) => new RunStoreError({ operation: "migrate", reason: e.message }))
  const isPg = sql.onDialectOrElse({ pg: () => true, orElse: () => false })

  /**
   * A run row as a record. A JSON field that no longer decodes is left out and named in `corrupt` rather than failing
   * the read: one corrupt row would otherwise fail every listing that meets it (the engines' scan for runs to take
   * over among them), and the run itself could never be failed.
   */
  const toRecord = (row: RunRow): Effect.Effect<RunStore.RunRecord> =>
    Effect.gen(function*() {
      const what = `run ${row.run_id}`
      const problems: Array<string> = []
      const field = (decoded: Effect.Effect<unknown, RunStoreError>) =>
        Effect.catchAll(decoded, (error) => Effect.sync(() => (problems.push(error.reason), undefined)))
      const input = yield* field(fromJson(row.input, `the input of ${what}`, row.run_id))
      const output = yield* field(optionalJson(row.output, `the output of ${what}`, row.run_id))
      const error = yield* field(optionalJson(row.error, `the error of ${what}`, row.run_id))
      const suspended = yield* field(optionalJson(row.suspended, `the suspended steps of ${what}`, row.run_id))
      const trace = yield* field(optionalJson(row.trace, `the trace context of ${what}`, row.run_id))
      return {
        runId: row.run_id,
        workflowId: row.workflow_id,
        status: row.status as RunStore.RunStatus,
        input,
        ...(output === undefined ? {} : { output }),
        ...(error === undefined ? {} : { error: error as RunStore.RunRecord["error"] & {} }),
        ...(row.failed_step === null ? {} : { failedStep: row.failed_step }),
        ...(suspended === undefined ? {} : { suspended: suspended as ReadonlyArray<RunStore.SuspendedStep> }),
        ...(row.owner === null ? {} : { owner: row.owner }),
        ...(row.heartbeat_at === null ? {} : { heartbeatAt: Number(row.heartbeat_at) }),
        createdAt: Number(row.created_at),
        updatedAt: Number(row.updated_at),
        stepsVersion: Number(row.steps_version),
        ...(trace === undefined ? {} : { trace: trace as RunStore.TraceContext }),
        ...(problems.length === 0 ? {} : { corrupt: problems.join("; ") })
      }
    })

  /**
   * The run and its first event (if any) in one statement, so that a process that dies in between leaves neither:
   * on Postgres a CTE, on SQLite the row carries the event for the trigger of migration 8.
   */
  const createRun = (record: RunStore.RunRecord, event?: WorkflowEvent) => {
    const values = sql`${record.runId}, ${record.workflowId}, ${record.status}, ${toJson(record.input)},
      ${record.owner ?? null}, ${record.heartbeatAt ?? null}, ${record.createdAt}, ${record.updatedAt},
      ${record.trace === undefined ? null : toJson(record.trace)}`
    const created = event === undefined
      ? sql<{ run_id: string }>`INSERT INTO stepwise_runs
          (run_id, workflow_id, status, input, owner, heartbeat_at, created_at, updated_at, trace)
          VALUES (${values})
          ON CONFLICT (run_id) DO NOTHING
          RETURNING run_id`
      : isPg
      ? sql<{ run_id: string }>`WITH r AS (
          INSERT INTO stepwise_runs
            (run_id, workflow_id, status, input, owner, heartbeat_at, created_at, updated_at, trace, event_count)
          VALUES (${values}, 1)
          ON CONFLICT (run_id) DO NOTHING
          RETURNING run_id
        ), e AS (
          INSERT INTO stepwise_events (run_id, idx, data) SELECT run_id, 0, ${toJson(event)} FROM r
        )
        SELECT run_id FROM r`
      : sql<{ run_id: string }>`INSERT INTO stepwise_runs
          (run_id, workflow_id, status, input, owner, heartbeat_at, created_at, updated_at, trace, events)
          VALUES (${values}, ${batchJson([event])})
          ON CONFLICT (run_id) DO NOTHING
          RETURNING run_id`
    return created.pipe(Effect.map((rows) => rows.length === 1), Effect.mapError(fail("create run", record.runId)))
  }

  const getRun = (runId: string) =>
    sql<RunRow>`SELECT ${sql.literal(runColumns)} FROM stepwise_runs WHERE run_id = ${runId}`.pipe(
      Effect.mapError(fail("read run", runId)),
      Effect.flatMap((rows) => rows.length === 0 ? Effect.succeed(undefined) : toRecord(rows[0]!))
    )

  const updateRun = (runId: string, patch: RunStore.RunPatch, events?: ReadonlyArray<WorkflowEvent>) =>
    Effect.gen(function*() {
      const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      const set: Record<string, unknown> = { updated_at: now }
      if (patch.status !== undefined) set["status"] = patch.status
      if ("output" in patch) set["output"] = toJson(patch.output)
      if (patch.error !== undefined) set["error"] = toJson(patch.error)
      if (patch.failedStep !== undefined) set["failed_step"] = patch.failedStep
      if (patch.suspended !== undefined) set["suspended"] = toJson(patch.suspended)
      if (patch.owner !== undefined) set["owner"] = patch.owner
      if (patch.heartbeatAt !== undefined) set["heartbeat_at"] = patch.heartbeatAt
      if (events !== undefined && events.length > 0) return yield* updateRunWithEvents(runId, set, events)
      // A finished run stays as it is: a walk in another process that read the run before it finished must not
      // set it running again.
      const rows = yield* sql<{ run_id: string }>`UPDATE stepwise_runs SET ${sql.update(set)}
        WHERE run_id = ${runId} AND status NOT IN ('success', 'failed', 'canceled') RETURNING run_id`.pipe(
        Effect.mapError(fail("update run", runId))
      )
      if (rows.length === 0) {
        const existing = yield* sql<{ run_id: string }>`SELECT run_id FROM stepwise_runs WHERE run_id = ${runId}`.pipe(
          Effect.mapError(fail("update run", runId))
        )
        if (existing.length === 0) return yield* noSuchRun("update run", runId)
      }
    })

  /**
   * `updateRun` with events, in one statement: the row is written whatever its status, so that the events are
   * appended with it, and each column keeps its value when the run is finished (a finished run stays as it is).
   */
  const updateRunWithEvents = (runId: string, set: Record<string, unknown>, events: ReadonlyArray<WorkflowEvent>) => {
    const columns = Object.keys(set).map((column) =>
      sql`${sql(column)} = CASE WHEN status IN ('success', 'failed', 'canceled') THEN ${sql(column)} ELSE ${
        set[column]
      } END`
    )
    const assignments = sql.join(", ", false)(columns)
    const n = events.length
    const batch = batchJson(events)
    const written = isPg
      ? sql<{ idx: number }>`WITH c AS (
          UPDATE stepwise_runs SET ${assignments}, event_count = event_count + ${n} WHERE run_id = ${runId}
          RETURNING event_count - ${n} AS first
        )
        INSERT INTO stepwise_events (run_id, idx, data)
        SELECT ${runId}, c.first + t.ord - 1, t.value
        FROM c, json_array_elements_text(${batch}::json) WITH ORDINALITY AS t(value, ord)
        RETURNING idx`
      // The trigger of migration 8 appends the events.
      : sql<{ idx: number }>`UPDATE stepwise_runs SET ${assignments}, events = ${batch} WHERE run_id = ${runId}
          RETURNING 0 AS idx`
    return written.pipe(
      Effect.mapError(fail("update run", runId)),
      Effect.flatMap((rows) => rows.length === 0 ? Effect.fail(noSuchRun("update run", runId)) : Effect.void)
    )
  }

  const listRuns = (filter: RunStore.RunFilter) =>
    Effect.gen(function*() {
      const clauses = [
        ...(filter.workflowId === undefined ? [] : [sql`workflow_id = ${filter.workflowId}`]),
        ...(filter.statuses === undefined ? [] : [sql.in("status", filter.statuses)])
      ]
      const where = clauses.length === 0 ? sql`` : sql`WHERE ${sql.and(clauses)}`
      // Runs created in the same millisecond come in the order of their ids, which is arbitrary but stable.
      const order = filter.order === "newest-first" ? sql`ORDER BY created_at DESC, run_id DESC` : sql`ORDER BY created_at, run_id`
      const limit = filter.limit === undefined ? sql`` : sql`LIMIT ${Math.max(0, Math.floor(filter.limit))}`
      const rows = yield* sql<RunRow>`SELECT ${sql.literal(runColumns)} FROM stepwise_runs ${where} ${order} ${limit}`
        .pipe(Effect.mapError(fail("list runs")))
      return yield* Effect.forEach(rows, toRecord)
    })

  /** SQLite: appends an event after the log's last (SQLite has one writer at a time), if the run exists. */
  const sqliteAppend = (runId: string, data: string) =>
    sql<{ idx: number }>`INSERT INTO stepwise_events (run_id, idx, data)
      SELECT ${runId}, (SELECT COALESCE(MAX(idx) + 1, 0) FROM stepwise_events WHERE run_id = ${runId}), ${data}
      WHERE EXISTS (SELECT 1 FROM stepwise_runs WHERE run_id = ${runId})
      RETURNING idx`

  const appendEvent = (runId: string, event: WorkflowEvent) => {
    const data = toJson(event)
    const appended = isPg
      ? sql<{ idx: number }>`WITH c AS (
          UPDATE stepwise_runs SET event_count = event_count + 1 WHERE run_id = ${runId} RETURNING event_count - 1 AS idx
        )
        INSERT INTO stepwise_events (run_id, idx, data) SELECT ${runId}, idx, ${data} FROM c RETURNING idx`
      : sqliteAppend(runId, data)
    return appended.pipe(
      Effect.mapError(fail("append event", runId)),
      Effect.flatMap(firstRow("append event", runId, (row) => row.idx))
    )
  }

  const appendEvents = (
    runId: string,
    events: ReadonlyArray<WorkflowEvent>,
    fences?: ReadonlyArray<RunStore.StepFence>
  ): Effect.Effect<number, RunStoreError | StepFencedError> => {
    if (fences !== undefined && fences.length > 0 && events.length > 0) return fencedAppendEvents(runId, events, uniqueFences(fences))
    const n = events.length
    if (n === 0) {
      return Effect.flatMap(getRun(runId), (run) =>
        run === undefined
          ? Effect.fail(noSuchRun("append events", runId))
          : Effect.map(readEvents(runId, 0, 0), (page) => page.size))
    }
    const batch = batchJson(events)
    const appended = isPg
      ? sql<{ idx: number }>`WITH c AS (
          UPDATE stepwise_runs SET event_count = event_count + ${n} WHERE run_id = ${runId}
          RETURNING event_count - ${n} AS first
        )
        INSERT INTO stepwise_events (run_id, idx, data)
        SELECT ${runId}, c.first + t.ord - 1, t.value
        FROM c, json_array_elements_text(${batch}::json) WITH ORDINALITY AS t(value, ord)
        RETURNING idx`
      : sql<{ idx: number }>`INSERT INTO stepwise_events (run_id, idx, data)
          SELECT ${runId}, base.first + j.key, j.value
          FROM json_each(${batch}) AS j,
            (SELECT COALESCE(MAX(idx) + 1, 0) AS first FROM stepwise_events WHERE run_id = ${runId}) AS base
          WHERE EXISTS (SELECT 1 FROM stepwise_runs WHERE run_id = ${runId})
          RETURNING idx`
    return appended.pipe(
      Effect.mapError(fail("append events", runId)),
      Effect.flatMap((rows) =>
        rows.length === 0 ? Effect.fail(noSuchRun("append events", runId)) : Effect.succeed(firstIndex(rows))
      )
    )
  }

  /** `appendEvents` under fences: one statement that checks them and appends (see the module's doc). */
  const fencedAppendEvents = (
    runId: string,
    events: ReadonlyArray<WorkflowEvent>,
    fences: ReadonlyArray<RunStore.StepFence>
  ): Effect.Effect<number, RunStoreError | StepFencedError> => {
    const n = events.length
    const batch = batchJson(events)
    const appended = isPg
      ? sql<{ idx: number }>`WITH ${pgFences(runId, fences)}, c AS (
          UPDATE stepwise_runs SET event_count = event_count + ${n}
          WHERE run_id = ${runId} AND (SELECT COUNT(*) FROM f) = ${fences.length}
          RETURNING event_count - ${n} AS first
        )
        INSERT INTO stepwise_events (run_id, idx, data)
        SELECT ${runId}, c.first + t.ord - 1, t.value
        FROM c, json_array_elements_text(${batch}::json) WITH ORDINALITY AS t(value, ord)
        RETURNING idx`
      : sql<{ idx: number }>`INSERT INTO stepwise_events (run_id, idx, data)
          SELECT ${runId}, base.first + j.key, j.value
          FROM json_each(${batch}) AS j,
            (SELECT COALESCE(MAX(idx) + 1, 0) AS first FROM stepwise_events WHERE run_id = ${runId}) AS base
          WHERE EXISTS (SELECT 1 FROM stepwise_runs WHERE run_id = ${runId}) AND ${sqliteFencesHold(runId, fences)}
          RETURNING idx`
    return appended.pipe(
      Effect.mapError(fail("append events", runId)),
      Effect.flatMap((rows): Effect.Effect<number, RunStoreError | StepFencedError> =>
        rows.length > 0 ? Effect.succeed(firstIndex(rows)) : Effect.flatMap(
          brokenFences(runId, fences, "append events"),
          (broken): Effect.Effect<never, RunStoreError | StepFencedError> =>
            Effect.fail(broken.length > 0 ? fenced(runId, broken) : noSuchRun("append events", runId))
        ))
    )
  }

  const readEvents = (runId: string, from: number, max: number) =>
    Effect.gen(function*() {
      const counts = isPg
        ? yield* sql<{ size: number }>`SELECT event_count AS size FROM stepwise_runs WHERE run_id = ${runId}`
        : yield* sql<{ size: number }>`SELECT COALESCE(MAX(idx) + 1, 0) AS size FROM stepwise_events WHERE run_id = ${runId}`
      const size = counts.length === 0 ? 0 : Number(counts[0]!.size)
      if (max <= 0 || from >= size) return { events: [], size }
      const rows = yield* sql<{ idx: number; data: string }>`SELECT idx, data FROM stepwise_events
        WHERE run_id = ${runId} AND idx >= ${from} ORDER BY idx LIMIT ${max}`
      const events = (yield* fromJsonRows(rows, (row) => `event ${row.idx} of run ${runId}`, runId)) as Array<WorkflowEvent>
      return { events, size }
    }).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(fail("read events", runId)(e))))

  /** Bumps the run's step count, stores the record and appends the event (if any): one commit. */
  const putStep = (runId: string, record: RunStore.StepRecord, event?: WorkflowEvent, fence?: RunStore.StepFence) => {
    if (fence !== undefined) {
      if (fence.path !== record.path) {
        return Effect.dieMessage(`A fenced step write must be at its fence's path (${record.path} under ${fence.path})`)
      }
      // Replaced only while the claim is live: an outcome, once recorded, is not written over (a retried write of the
      // same record finds itself there, below).
      const live = sql`call_id = ${fence.stepCallId} AND claim LIKE 'running:%'`
      return Effect.flatMap(conditionalPut(runId, record, event, live), (version) =>
        version !== undefined ? Effect.succeed(version) : Effect.flatMap(
          landed(runId, record),
          (version) => version !== undefined ? Effect.succeed(version) : Effect.fail(fenced(runId, [fence]))
        ))
    }
    const stepData = toJson(record)
    const claim = claimKey(record)
    const callId = fenceOf(record)
    const written = isPg
      ? (event === undefined
        ? sql<{ version: number | string }>`WITH c AS (
            UPDATE stepwise_runs SET steps_version = steps_version + 1 WHERE run_id = ${runId}
            RETURNING steps_version AS version
          ), s AS (
            INSERT INTO stepwise_steps (run_id, path, data, version, claim, call_id)
            SELECT ${runId}, ${record.path}, ${stepData}, version, ${claim}, ${callId} FROM c
            ON CONFLICT (run_id, path) DO UPDATE SET data = excluded.data, version = excluded.version,
              claim = excluded.claim, call_id = excluded.call_id
          )
          SELECT version FROM c`
        : sql<{ version: number | string }>`WITH c AS (
            UPDATE stepwise_runs SET steps_version = steps_version + 1, event_count = event_count + 1
            WHERE run_id = ${runId}
            RETURNING steps_version AS version, event_count - 1 AS idx
          ), s AS (
            INSERT INTO stepwise_steps (run_id, path, data, version, claim, call_id)
            SELECT ${runId}, ${record.path}, ${stepData}, version, ${claim}, ${callId} FROM c
            ON CONFLICT (run_id, path) DO UPDATE SET data = excluded.data, version = excluded.version,
              claim = excluded.claim, call_id = excluded.call_id
          ), e AS (
            INSERT INTO stepwise_events (run_id, idx, data) SELECT ${runId}, idx, ${toJson(event)} FROM c
          )
          SELECT version FROM c`)
      // The triggers of migrations 2 and 6 set the run's count to the row's version and append the event.
      : sql<{ version: number | string }>`INSERT INTO stepwise_steps
          (run_id, path, data, version, claim, call_id, event)
          SELECT ${runId}, ${record.path}, ${stepData}, steps_version + 1, ${claim}, ${callId}, ${eventJson(event)}
          FROM stepwise_runs WHERE run_id = ${runId}
          ON CONFLICT (run_id, path) DO UPDATE SET data = excluded.data, version = excluded.version,
            claim = excluded.claim, call_id = excluded.call_id, event = excluded.event
          RETURNING version`
    return written.pipe(
      Effect.mapError(fail("store step result", runId)),
      Effect.flatMap(firstRow("store step result", runId, (row) => row.version))
    )
  }

  /**
   * Writes a step record (and its event) only if `condition` holds of the step row at its path, or, with no
   * condition, only if there is no row there yet; answers the new version, or `undefined` when nothing was written.
   * Fails when the run does not exist. On Postgres, the run's row is locked `FOR UPDATE` before the step row is read
   * (see the module's doc); on SQLite the statement, or the transaction with the event, runs alone.
   */
  const conditionalPut = (
    runId: string,
    record: RunStore.StepRecord,
    event: WorkflowEvent | undefined,
    condition: Statement.Fragment | undefined,
    commit: "synchronous" | "asynchronous" = "synchronous"
  ): Effect.Effect<number | undefined, RunStoreError> => {
    // Postgres: an asynchronous commit returns before its WAL reaches the disk (see `claimStep`).
    const answer = commit === "synchronous"
      ? sql`SELECT version FROM c`
      : sql`SELECT version, set_config('synchronous_commit', 'off', true) FROM c`
    const stepData = toJson(record)
    const claim = claimKey(record)
    const callId = fenceOf(record)
    const { path } = record
    const written: Effect.Effect<ReadonlyArray<{ version: number | string }>, SqlError> = isPg
      ? (() => {
        const step = condition === undefined
          ? sql`INSERT INTO stepwise_steps (run_id, path, data, version, claim, call_id)
              SELECT ${runId}, ${path}, ${stepData}, version, ${claim}, ${callId} FROM v
              ON CONFLICT (run_id, path) DO NOTHING
              RETURNING version`
          : sql`UPDATE stepwise_steps SET data = ${stepData}, version = v.version, claim = ${claim}, call_id = ${callId}
              FROM v WHERE run_id = ${runId} AND path = ${path} AND ${condition}
              RETURNING v.version`
        return event === undefined
          ? sql<{ version: number | string }>`WITH v AS MATERIALIZED (
              SELECT steps_version + 1 AS version FROM stepwise_runs WHERE run_id = ${runId} FOR UPDATE
            ), s AS (${step}), c AS (
              UPDATE stepwise_runs SET steps_version = s.version FROM s WHERE run_id = ${runId} RETURNING s.version
            )
            ${answer}`
          : sql<{ version: number | string }>`WITH v AS MATERIALIZED (
              SELECT steps_version + 1 AS version FROM stepwise_runs WHERE run_id = ${runId} FOR UPDATE
            ), s AS (${step}), c AS (
              UPDATE stepwise_runs SET steps_version = s.version, event_count = event_count + 1 FROM s
              WHERE run_id = ${runId}
              RETURNING s.version, event_count - 1 AS idx
            ), e AS (
              INSERT INTO stepwise_events (run_id, idx, data) SELECT ${runId}, idx, ${toJson(event)} FROM c
            )
            ${answer}`
      })()
      // The triggers of migrations 2 and 6 set the run's count to the row's version and append the event.
      : condition === undefined
      ? sql<{ version: number | string }>`INSERT INTO stepwise_steps (run_id, path, data, version, claim, call_id, event)
          SELECT ${runId}, ${path}, ${stepData}, steps_version + 1, ${claim}, ${callId}, ${eventJson(event)}
          FROM stepwise_runs WHERE run_id = ${runId}
          ON CONFLICT (run_id, path) DO NOTHING
          RETURNING version`
      : sql<{ version: number | string }>`UPDATE stepwise_steps SET data = ${stepData},
          version = (SELECT steps_version + 1 FROM stepwise_runs WHERE run_id = ${runId}),
          claim = ${claim}, call_id = ${callId}, event = ${eventJson(event)}
          WHERE run_id = ${runId} AND path = ${path} AND ${condition}
          RETURNING version`
    return written.pipe(
      Effect.mapError(fail("store step result", runId)),
      Effect.flatMap((rows) =>
        rows.length > 0
          ? Effect.succeed(Number(rows[0]!.version))
          : Effect.flatMap(getRun(runId), (run) =>
            run === undefined ? Effect.fail(noSuchRun("store step result", runId)) : Effect.succeed(undefined))
      )
    )
  }

  /**
   * The version of the write that stored exactly this record at its path, if the row holds it: a conditional write
   * retried after it landed (its answer lost) finds its own record there.
   */
  const landed = (runId: string, record: RunStore.StepRecord) =>
    sql<{ data: string; version: number | string }>`SELECT data, version FROM stepwise_steps
      WHERE run_id = ${runId} AND path = ${record.path}`.pipe(
      Effect.map((rows) => rows.length > 0 && rows[0]!.data === toJson(record) ? Number(rows[0]!.version) : undefined),
      Effect.mapError(fail("store step result", runId))
    )

  const claimStep = (
    runId: string,
    record: RunStore.StepRecord,
    expected: RunStore.StepRecord | undefined,
    event?: WorkflowEvent
  ): Effect.Effect<number | undefined, RunStoreError> => {
    const key = expected === undefined ? undefined : claimKey(expected)
    if (key === null) return Effect.succeed(undefined)
    // On Postgres a claim commits asynchronously: the commit of the step's outcome, which is synchronous and comes
    // after it in the log, makes it durable too. A server crash in between (not a crash of this process, for which
    // the commit is done) may lose the claim, with its event; the step then is as if it had never started, and runs
    // again, as after a crash of the process running it; its result cannot land without the claim. That saves a
    // flush to disk per step, which is most of the cost of a write.
    return Effect.flatMap(
      conditionalPut(runId, record, event, key === undefined ? undefined : sql`claim = ${key}`, "asynchronous"),
      (version) => version !== undefined ? Effect.succeed(version) : landed(runId, record)
    )
  }

  const uniqueFences = (fences: ReadonlyArray<RunStore.StepFence>): ReadonlyArray<RunStore.StepFence> => {
    if (fences.length <= 1) return fences
    const seen = new Map<string, RunStore.StepFence>()
    for (const fence of fences) seen.set(`${fence.stepCallId}\u0000${fence.path}`, fence)
    return seen.size === fences.length ? fences : Array.from(seen.values())
  }

  /** A statement's fences, as one JSON array. */
  const fencesJson = (fences: ReadonlyArray<RunStore.StepFence>) =>
    JSON.stringify(fences.map(({ path, stepCallId }) => ({ path, stepCallId })))

  const fenced = (runId: string, fences: ReadonlyArray<RunStore.StepFence>) =>
    new StepFencedError({ runId, fences: fences.map(({ path, stepCallId }) => ({ path, stepCallId })) })

  /**
   * Postgres: the step rows of the fences that hold, locked `FOR SHARE` (their latest committed version) once the run's
   * row is locked `FOR UPDATE` (see the module's doc). CTEs: `l` locks the run, `f` lists the fences that hold. The
   * scalar subquery on `l` is evaluated before `f` scans, so the run's row is always locked first.
   */
  const pgFences = (runId: string, fences: ReadonlyArray<RunStore.StepFence>) =>
    sql`l AS MATERIALIZED (
        SELECT run_id FROM stepwise_runs WHERE run_id = ${runId} FOR UPDATE
      ), f AS MATERIALIZED (
        SELECT s.path FROM stepwise_steps s
        JOIN json_to_recordset(${fencesJson(fences)}::json) AS x(path text, "stepCallId" text)
          ON s.path = x.path AND s.call_id = x."stepCallId"
        WHERE s.run_id = (SELECT run_id FROM l)
        FOR SHARE OF s
      )`

  /** SQLite: whether every fence holds (a condition of the statement that writes). */
  const sqliteFencesHold = (runId: string, fences: ReadonlyArray<RunStore.StepFence>) =>
    sql`(SELECT COUNT(*) FROM stepwise_steps s, json_each(${fencesJson(fences)}) AS x
      WHERE s.run_id = ${runId} AND s.path = json_extract(x.value, '$.path')
        AND s.call_id = json_extract(x.value, '$.stepCallId')) = ${fences.length}`

  /**
   * After a fenced write wrote nothing: the fences that do not hold now (a fence never holds again once it stopped),
   * or nothing when they all do (the write failed for another reason).
   */
  const brokenFences = (runId: string, fences: ReadonlyArray<RunStore.StepFence>, operation: string) =>
    sql<{ path: string; call_id: string | null }>`SELECT path, call_id FROM stepwise_steps
      WHERE run_id = ${runId} AND ${sql.in("path", fences.map((fence) => fence.path))}`.pipe(
      Effect.map((rows) => {
        const current = new Map(rows.map((row) => [row.path, row.call_id]))
        return fences.filter((fence) => current.get(fence.path) !== fence.stepCallId)
      }),
      Effect.mapError(fail(operation, runId))
    )

  /** One statement, so the records and the version come from one snapshot. Rows from before migration 2 have 0. */
  const getSteps = (runId: string, since = -1) =>
    sql<{ version: number | string; path: string | null; data: string | null }>`SELECT
        r.steps_version AS version, s.path, s.data
      FROM stepwise_runs r LEFT JOIN stepwise_steps s ON s.run_id = r.run_id AND s.version > ${since}
      WHERE r.run_id = ${runId}`.pipe(
      Effect.mapError(fail("read step results", runId)),
      Effect.flatMap((rows) =>
        Effect.map(
          fromJsonRows(
            rows.filter((row) => row.path !== null),
            (row) => `the step result at path ${row.path} of run ${runId}`,
            runId
          ),
          (steps): RunStore.StepRecords => ({
            steps: steps as Array<RunStore.StepRecord>,
            version: rows.length === 0 ? 0 : Number(rows[0]!.version)
          })
        )
      )
    )

  const appendChunks = (
    runId: string,
    namespace: string,
    chunks: ReadonlyArray<unknown>,
    given?: ReadonlyArray<RunStore.StepFence>
  ): Effect.Effect<number, RunStoreError | StreamClosedError | StepFencedError> => {
    if (chunks.length === 0) return Effect.succeed(0)
    const fences = given === undefined || given.length === 0 ? undefined : uniqueFences(given)
    const batch = batchJson(chunks)
    const n = chunks.length
    const appended = isPg
      ? (fences === undefined
        ? sql<{ idx: number }>`WITH s AS (
            INSERT INTO stepwise_streams (run_id, namespace, size, closed) VALUES (${runId}, ${namespace}, ${n}, 0)
            ON CONFLICT (run_id, namespace) DO UPDATE SET size = stepwise_streams.size + ${n}
              WHERE stepwise_streams.closed = 0
            RETURNING size - ${n} AS first
          )
          INSERT INTO stepwise_chunks (run_id, namespace, idx, data)
          SELECT ${runId}, ${namespace}, s.first + t.ord - 1, t.value
          FROM s, json_array_elements_text(${batch}::json) WITH ORDINALITY AS t(value, ord)
          RETURNING idx`
        : sql<{ idx: number }>`WITH ${pgFences(runId, fences)}, s AS (
            INSERT INTO stepwise_streams (run_id, namespace, size, closed)
            SELECT ${runId}, ${namespace}, ${n}, 0 WHERE (SELECT COUNT(*) FROM f) = ${fences.length}
            ON CONFLICT (run_id, namespace) DO UPDATE SET size = stepwise_streams.size + ${n}
              WHERE stepwise_streams.closed = 0
            RETURNING size - ${n} AS first
          )
          INSERT INTO stepwise_chunks (run_id, namespace, idx, data)
          SELECT ${runId}, ${namespace}, s.first + t.ord - 1, t.value
          FROM s, json_array_elements_text(${batch}::json) WITH ORDINALITY AS t(value, ord)
          RETURNING idx`)
      : sql<{ idx: number }>`INSERT INTO stepwise_chunks (run_id, namespace, idx, data)
          SELECT ${runId}, ${namespace}, base.first + j.key, j.value
          FROM json_each(${batch}) AS j,
            (SELECT COALESCE(MAX(idx) + 1, 0) AS first FROM stepwise_chunks
              WHERE run_id = ${runId} AND namespace = ${namespace}) AS base
          WHERE NOT EXISTS (SELECT 1 FROM stepwise_streams
            WHERE run_id = ${runId} AND namespace = ${namespace} AND closed = 1)
            ${fences === undefined ? sql.literal("") : sql`AND ${sqliteFencesHold(runId, fences)}`}
          RETURNING idx`
    return appended.pipe(
      Effect.mapError(fail("append chunks", runId)),
      Effect.flatMap((rows): Effect.Effect<number, RunStoreError | StreamClosedError | StepFencedError> => {
        if (rows.length > 0) return Effect.succeed(firstIndex(rows))
        const closed = new StreamClosedError({ runId, namespace })
        if (fences === undefined) return Effect.fail(closed)
        return Effect.flatMap(
          brokenFences(runId, fences, "append chunks"),
          (broken) => Effect.fail(broken.length > 0 ? fenced(runId, broken) : closed)
        )
      })
    )
  }

  const closeStream = (
    runId: string,
    namespace: string,
    fence?: RunStore.StepFence
  ): Effect.Effect<void, RunStoreError | StepFencedError> => {
    if (fence === undefined) {
      return sql`INSERT INTO stepwise_streams (run_id, namespace, size, closed) VALUES (${runId}, ${namespace}, 0, 1)
        ON CONFLICT (run_id, namespace) DO UPDATE SET closed = 1`.pipe(
        Effect.asVoid,
        Effect.mapError(fail("close stream", runId))
      )
    }
    const closed = isPg
      ? sql`WITH ${pgFences(runId, [fence])}
          INSERT INTO stepwise_streams (run_id, namespace, size, closed)
          SELECT ${runId}, ${namespace}, 0, 1 WHERE EXISTS (SELECT 1 FROM f)
          ON CONFLICT (run_id, namespace) DO UPDATE SET closed = 1
          RETURNING run_id`
      : sql`INSERT INTO stepwise_streams (run_id, namespace, size, closed)
          SELECT ${runId}, ${namespace}, 0, 1 WHERE ${sqliteFencesHold(runId, [fence])}
          ON CONFLICT (run_id, namespace) DO UPDATE SET closed = 1
          RETURNING run_id`
    return closed.pipe(
      Effect.mapError(fail("close stream", runId)),
      Effect.flatMap((rows) => rows.length > 0 ? Effect.void : Effect.fail(fenced(runId, [fence])))
    )
  }

  const readChunks = (runId: string, namespace: string, from: number, max: number) =>
    Effect.gen(function*() {
      const streams = isPg
        ? yield* sql<{ size: number; closed: number }>`SELECT size, closed FROM stepwise_streams
          WHERE run_id = ${runId} AND namespace = ${namespace}`
        : yield* sql<{ size: number; closed: number }>`SELECT
            (SELECT COALESCE(MAX(idx) + 1, 0) FROM stepwise_chunks WHERE run_id = ${runId} AND namespace = ${namespace})
              AS size,
            (SELECT COALESCE(MAX(closed), 0) FROM stepwise_streams WHERE run_id = ${runId} AND namespace = ${namespace})
              AS closed`
      if (streams.length === 0) return { chunks: [], size: 0, closed: false }
      const size = Number(streams[0]!.size)
      const closed = Number(streams[0]!.closed) === 1
      if (max <= 0 || from >= size) return { chunks: [], size, closed }
      const rows = yield* sql<{ idx: number; data: string }>`SELECT idx, data FROM stepwise_chunks
        WHERE run_id = ${runId} AND namespace = ${namespace} AND idx >= ${from} ORDER BY idx LIMIT ${max}`
      const chunks = yield* fromJsonRows(rows, (row) => `chunk ${row.idx} of stream "${namespace}" of run ${runId}`, runId)
      return { chunks, size, closed }
    }).pipe(Effect.catchTag("SqlError", (e) => Effect.fail(fail("read chunks", runId)(e))))

  const claimRun = (runId: string, owner: string, now: number, staleBefore: number) =>
    sql<{ run_id: string }>`UPDATE stepwise_runs SET owner = ${owner}, heartbeat_at = ${now}
      WHERE run_id = ${runId}
        AND (owner IS NULL OR owner = ${owner} OR heartbeat_at IS NULL OR heartbeat_at < ${staleBefore})
      RETURNING run_id`.pipe(Effect.map((rows) => rows.length === 1), Effect.mapError(fail("claim run", runId)))

  const heartbeat = (owner: string, now: number) =>
    Effect.all([
      sql`UPDATE stepwise_runs SET heartbeat_at = ${now}
        WHERE owner = ${owner} AND status IN ('pending', 'running', 'waiting')`,
      sql`INSERT INTO stepwise_workers (worker_id, heartbeat_at) VALUES (${owner}, ${now})
        ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`,
      sql`DELETE FROM stepwise_workers WHERE heartbeat_at < ${now - workerRetentionMillis}`
    ]).pipe(Effect.asVoid, Effect.mapError(fail("heartbeat")))

  const workerHeartbeats = (workers: ReadonlyArray<string>) =>
    workers.length === 0
      ? Effect.succeed(new Map<string, number>())
      : sql<{ worker_id: string; heartbeat_at: number | string }>`SELECT worker_id, heartbeat_at FROM stepwise_workers
          WHERE ${sql.in("worker_id", workers)}`.pipe(
          Effect.map((rows) => new Map(rows.map((row) => [row.worker_id, Number(row.heartbeat_at)]))),
          Effect.mapError(fail("read worker heartbeats"))
        )

  const store: RunStore.Shape = {
    createRun,
    getRun,
    updateRun,
    listRuns,
    appendEvent,
    appendEvents,
    readEvents,
    putStep,
    claimStep,
    getSteps,
    appendChunks,
    closeStream,
    readChunks,
    claimRun,
    heartbeat,
    workerHeartbeats
  }
  return store
})
