/**
 * Figure 1 of bench:durable alone, with what a durable step costs the store: µs per step of the 10-step linear
 * workflow on the default engine, and per step the store calls, SQL statements and (Postgres) commits and WAL
 * flushes.
 *
 *   npx tsx bench/durable/steps.ts [postgres|postgres-unprepared|sqlite|memory ...] [--runs 300] [--reps 3] [--log]
 *
 * Runs from the sources (the root tsconfig maps "stepwise" to src). Statements are counted in the drivers
 * (node-postgres's `Client.query`, better-sqlite3's `Statement` runs), so `BEGIN`/`COMMIT` count too; `--log` prints
 * each distinct statement of one run with its count. `postgres-unprepared` is the Postgres store with
 * `preparedStatements: false`. Repetitions interleave the stores, as in bench:durable. Commits and flushes come from `pg_stat_database` and
 * `pg_stat_wal` (the whole server's: run it on a quiet server).
 */
import { Effect, Layer, Schema } from "effect"
import { mkdtempSync, readFileSync } from "node:fs"
import { loadavg, tmpdir } from "node:os"
import { join } from "node:path"
import { createRequire } from "node:module"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Sqlite from "stepwise/sqlite"

const require = createRequire(import.meta.url)
const args = process.argv.slice(2)
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`)
  return i === -1 ? fallback : Number(args[i + 1])
}
const runs = flag("runs", 300)
const reps = flag("reps", 3)
const log = args.includes("--log")
const chosen = args.filter((a, i) => !a.startsWith("--") && !args[i - 1]?.startsWith("--runs") && !args[i - 1]?.startsWith("--reps"))
const stores = chosen.length > 0 ? chosen : ["memory", "sqlite", "postgres"]
const databaseUrl = process.env["DATABASE_URL"] ?? Postgres.defaultUrl

// -- statements, counted in the drivers
const statements = new Map<string, number>()
// by their text as sent (normalized only for printing: a regexp over every statement's text showed in profiles)
const count = (text: string) => statements.set(text, (statements.get(text) ?? 0) + 1)
const shown = (text: string) => text.replace(/\s+/g, " ").trim().slice(0, 160)
const pg = require("pg") as { Client: { prototype: { query: (...a: Array<unknown>) => unknown } } }
const query = pg.Client.prototype.query
// the server processes of this process's connections, for their CPU time
const backends = new Set<number>()
pg.Client.prototype.query = function(this: { processID?: number }, ...a: Array<unknown>) {
  if (this.processID !== undefined) backends.add(this.processID)
  const q = a[0]
  count(typeof q === "string" ? q : (q as { text?: string }).text ?? "?")
  return query.apply(this, a)
}
const Database = require("better-sqlite3") as { prototype: { prepare: (source: string) => object } }
const prepare = Database.prototype.prepare
Database.prototype.prepare = function(this: unknown, source: string) {
  const statement = prepare.call(this, source) as Record<string, (...a: Array<unknown>) => unknown>
  for (const method of ["run", "all", "get", "iterate"]) {
    const original = statement[method]!
    statement[method] = function(this: unknown, ...a: Array<unknown>) {
      count(source)
      return original.apply(this, a)
    }
  }
  return statement
}
/** CPU time (µs) of the server processes that served this process, from /proc (the server on this machine). */
const serverCpu = () => {
  let ticks = 0
  for (const pid of backends) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
      ticks += Number(fields[11]) + Number(fields[12]) // utime, stime
    } catch {
      backends.delete(pid) // gone: its connection closed with its pool
    }
  }
  return ticks * 10_000 // USER_HZ 100
}
const total = () => [...statements.values()].reduce((a, b) => a + b, 0)

// -- store calls, counted by a decorator of the RunStore
const calls = new Map<string, number>()
const counted = Layer.effect(
  RunStore.RunStore,
  Effect.map(RunStore.RunStore, (store) =>
    Object.fromEntries(Object.entries(store).map(([name, f]) => [name, (...a: Array<unknown>) => {
      calls.set(name, (calls.get(name) ?? 0) + 1)
      return (f as (...a: Array<unknown>) => unknown)(...a)
    }])) as unknown as RunStore.RunStore["Type"])
)

const noop = (i: number) =>
  Step.make({ id: `s${i}`, inputSchema: Schema.Number, outputSchema: Schema.Number, execute: ({ inputData }) => Effect.succeed(inputData) })
const linear = Workflow.commit(Array.from({ length: 10 }, (_, i) => noop(i)).reduce(
  (b, step) => Workflow.andThen(step)(b),
  Workflow.make({ id: "bench-linear", inputSchema: Schema.Number, outputSchema: Schema.Number }) as Workflow.Builder<"bench-linear", number, number, number, never, never>
))

const dir = mkdtempSync(join(tmpdir(), "stepwise-steps-"))
const storeLayer = (name: string, rep: number): Layer.Layer<RunStore.RunStore, unknown> =>
  name === "memory"
    ? RunStore.layerMemory
    : name === "sqlite"
    ? Sqlite.layer({ filename: join(dir, `steps-${rep}.db`) })
    : Postgres.layer({ url: databaseUrl, preparedStatements: name !== "postgres-unprepared" })

const serverCounters = Effect.gen(function*() {
  const { Client } = require("pg") as {
    Client: new(options: { connectionString: string }) => {
      connect(): Promise<void>
      query(text: string): Promise<{ rows: Array<{ commits: string; syncs: string }> }>
      end(): Promise<void>
    }
  }
  const client = new Client({ connectionString: databaseUrl })
  yield* Effect.promise(() => client.connect())
  const rows = yield* Effect.promise(() =>
    client.query(`SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits,
      (SELECT wal_sync FROM pg_stat_wal) AS syncs`)
  )
  yield* Effect.promise(() => client.end())
  return { commits: Number(rows.rows[0]!.commits), syncs: Number(rows.rows[0]!.syncs) }
})

const measure = (name: string, rep: number) =>
  Effect.gen(function*() {
    const engine = yield* WorkflowEngine.WorkflowEngine
    yield* Effect.flatMap(engine.start(linear, 0), (r) => r.result) // warm-up
    statements.clear()
    calls.clear()
    yield* Effect.flatMap(engine.start(linear, 1), (r) => r.result)
    const oneRun = new Map(statements)
    const oneRunCalls = new Map(calls)
    const before = name.startsWith("postgres") ? yield* serverCounters : undefined
    const s0 = total()
    const c0 = process.cpuUsage()
    const server0 = serverCpu()
    const t0 = performance.now()
    for (let i = 0; i < runs; i++) yield* Effect.flatMap(engine.start(linear, i), (r) => r.result)
    const us = ((performance.now() - t0) * 1000) / (runs * 10)
    const cpu = process.cpuUsage(c0)
    const clientCpu = (cpu.user + cpu.system) / (runs * 10)
    const serverCpuPerStep = (serverCpu() - server0) / (runs * 10)
    const after = name.startsWith("postgres") ? yield* serverCounters : undefined
    return { us, clientCpu, serverCpu: serverCpuPerStep, statements: (total() - s0) / (runs * 10), oneRun, oneRunCalls, before, after }
  }).pipe(
    Effect.provide(WorkflowEngine.layerDefault.pipe(
      Layer.provideMerge(Layer.merge(EventBus.layerMemory, Layer.provide(counted, storeLayer(name, rep))))
    )),
    Effect.scoped
  )

const program = Effect.gen(function*() {
  console.log(`load average ${loadavg().map((x) => x.toFixed(2)).join(" ")}; ${runs} runs of 10 steps, ${reps} reps`)
  const results = new Map<string, Array<Effect.Effect.Success<ReturnType<typeof measure>>>>()
  for (let rep = 0; rep < reps; rep++) {
    for (const name of rep % 2 === 0 ? stores : [...stores].reverse()) {
      results.set(name, [...(results.get(name) ?? []), yield* measure(name, rep)])
    }
  }
  for (const [name, all] of results) {
    const results = all
    const sorted = results.map((r) => r.us).sort((a, b) => a - b)
    const last = results.at(-1)!
    const med = (xs: Array<number>) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
    const perStep = (n: number) => (n / (runs * 10)).toFixed(2)
    const server = last.before && last.after
      ? `, commits/step ${perStep(last.after.commits - last.before.commits)}, WAL flushes/step ${perStep(last.after.syncs - last.before.syncs)}`
      : ""
    console.log(
      `${name}: µs/step median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} (${sorted.map((x) => x.toFixed(0)).join(", ")}); ` +
        `CPU µs/step client ${med(results.map((r) => r.clientCpu)).toFixed(0)}` +
        (!name.startsWith("postgres") ? "" : `, server ${med(results.map((r) => r.serverCpu)).toFixed(0)}`) +
        `; statements/step ${last.statements.toFixed(2)}${server}`
    )
    console.log(`  store calls in one run: ${[...last.oneRunCalls].map(([k, v]) => `${k} ${v}`).join(", ")}`)
    if (log) for (const [text, n] of last.oneRun) console.log(`  ${String(n).padStart(3)} × ${shown(text)}`)
  }
})

Effect.runPromise(program).catch((error) => {
  console.error(error)
  process.exit(1)
})
