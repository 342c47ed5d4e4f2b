/**
 * The kill soak: trials of 20 runs of the cluster workflow (test/fixtures/clusterWorkflow.ts: writes, a foreach, a
 * parallel, a retrying step, a sleep) on one backend, each with a SIGKILL at a random moment, then a check of every
 * run (test/fixtures/check.ts).
 *
 * - `redis` (Redis + Postgres) and `postgres` (Postgres alone): 3 evented worker processes and 1 client process, which
 *   live across trials. Each trial kills one worker (60%), two workers (20%) or the client (20%) and starts it again
 *   under the same name; a restarted client asks for the trial's runs again and follows them from the start.
 * - `sqlite`: one process with the default engine over SQLite, which starts, executes and follows the runs; each trial
 *   kills it and starts it again.
 *
 * With `cover`, the trials take the kinds of kill in turn and spread their moments (see `SoakOptions`), so that a few
 * trials meet each kind and early, middle and late moments.
 *
 * Each backend gets a database (or file) of its own, dropped at the end. The processes run the fixture bundled.
 */
import { SqlClient } from "@effect/sql"
import { Effect, Layer, Random } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { RunStore } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Sqlite from "stepwise/sqlite"
import { redisUrl } from "../backends.js"
import { addFigures, checkRuns, emptyFigures, type Figures } from "../fixtures/check.js"
import { createEffects, stepsOfRun } from "../fixtures/clusterWorkflow.js"
import { clusterBundle, followedBy, freshDatabase, kill, printed, type Proc, spawnFixture } from "../fixtures/harness.js"

export type Backend = "redis" | "postgres" | "sqlite"

export const backendNames: Record<Backend, string> = {
  redis: "Redis + Postgres",
  postgres: "Postgres alone",
  sqlite: "SQLite, default engine"
}

export interface SoakOptions {
  readonly backend: Backend
  readonly trials: number
  readonly runsPerTrial?: number
  /** How long a trial's runs may take after its kill before those not done count as stuck. */
  readonly stuckAfterMillis?: number
  /**
   * Instead of drawing each trial's kill on its own: the kinds of kill (one worker, two workers, the client) in turn,
   * from a random one, and the moments one in each equal slice of the range, the slices in a random order. Three
   * trials then kill each kind once, one early, one midway and one late (which kind meets which moment varies).
   */
  readonly cover?: boolean
  /** Progress lines. */
  readonly log?: (line: string) => void
}

export interface SoakResult {
  readonly backend: Backend
  readonly trials: number
  readonly figures: Figures
  readonly kills: { workers: number; clients: number }
  readonly problems: ReadonlyArray<string>
  readonly seconds: number
}

const lease = "3 seconds"
/** How long a process may take to start: on a loaded machine, a dozen starting at once take a while. */
const startWithin = 180_000

/** One backend's trials. */
export const soak = (options: SoakOptions): Effect.Effect<SoakResult, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const began = Date.now()
    const { backend, trials } = options
    const runsPerTrial = options.runsPerTrial ?? 20
    const stuckAfter = options.stuckAfterMillis ?? 60_000
    const log = options.log ?? (() => {})
    const fixture = yield* clusterBundle

    // The backend's storage, and the test's own connection to it.
    let env: Record<string, string>
    let storeLayer: Layer.Layer<RunStore.RunStore | SqlClient.SqlClient, unknown>
    if (backend === "sqlite") {
      const dir = mkdtempSync(join(tmpdir(), "stepwise-soak-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const file = join(dir, "soak.db")
      env = { SQLITE_FILE: file, LEASE: lease }
      storeLayer = Sqlite.layer({ filename: file })
    } else {
      const db = yield* freshDatabase()
      env = {
        BUS: backend,
        DATABASE_URL: db.url,
        REDIS_URL: redisUrl,
        REDIS_PREFIX: `stepwise-soak:${db.name}:`,
        LEASE: lease,
        REDELIVER_AFTER: "2 seconds"
      }
      storeLayer = Postgres.layer({ url: db.url, maxConnections: 2 })
    }
    const context = yield* Layer.build(storeLayer)
    const sql = yield* Effect.provide(SqlClient.SqlClient, context)
    const store = yield* Effect.provide(RunStore.RunStore, context)
    yield* createEffects(sql)

    // The processes, alive across trials, and spares: processes started ahead of need, loaded and waiting to be told
    // who they are, which replace killed ones in the time it takes to connect. All are killed at the end.
    const procs = new Map<string, Proc>()
    const spares: Array<Proc> = []
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => [...procs.values(), ...spares].forEach((p) => p.child.kill("SIGKILL")))
    )
    const roleOf = (name: string) =>
      name === "client" ? { ROLE: "client" } : { ROLE: backend === "sqlite" ? "standalone" : "worker", WORKER_ID: name }
    const addSpare = Effect.sync(() => spares.push(spawnFixture({ ...env, STANDBY: "1" }, { fixture, stdin: true })))
    const spawn = (name: string) =>
      Effect.gen(function*() {
        const spare = spares.shift()
        let proc: Proc
        if (spare === undefined || spare.child.exitCode !== null) {
          proc = spawnFixture({ ...env, ...roleOf(name) }, { fixture, stdin: true })
        } else {
          yield* printed(spare, "standby", startWithin)
          spare.child.stdin!.write(`go ${Object.entries(roleOf(name)).map(([k, v]) => `${k}=${v}`).join(" ")}\n`)
          proc = spare
        }
        procs.set(name, proc)
        yield* addSpare
        return proc
      })
    const workerNames = backend === "sqlite" ? ["solo"] : ["worker-1", "worker-2", "worker-3"]
    for (const name of workerNames) procs.set(name, spawnFixture({ ...env, ...roleOf(name) }, { fixture, stdin: true }))
    if (backend !== "sqlite") procs.set("client", spawnFixture({ ...env, ...roleOf("client") }, { fixture, stdin: true }))
    yield* addSpare
    yield* addSpare
    /** The process that starts and follows runs. */
    const followerName = backend === "sqlite" ? "solo" : "client"
    const ask = (prefix: string) => Effect.sync(() => procs.get(followerName)!.child.stdin!.write(`follow ${prefix} ${runsPerTrial}\n`))

    const figures = emptyFigures()
    const problems: Array<string> = []
    const kills = { workers: 0, clients: 0 }
    // With `cover`: the slices of the kill moments in a random order, and the kind of the first trial's kill.
    const slices = Array.from(yield* Random.shuffle(Array.from({ length: trials }, (_, i) => i)))
    const firstKind = yield* Random.nextIntBetween(0, 3)
    for (let trial = 0; trial < trials; trial++) {
      for (const proc of procs.values()) yield* printed(proc, "ready", startWithin)
      const prefix = `t${trial}`
      yield* ask(prefix)

      // A random moment: once a random share (5% to 80%) of the trial's user code has run (with `cover`, a random share
      // within the trial's slice of that range).
      const share = 0.05 + 0.75 * (options.cover === true ? (slices[trial]! + (yield* Random.next)) / trials : yield* Random.next)
      const target = Math.ceil(runsPerTrial * stepsOfRun.length * share)
      const waitUntil = Date.now() + 20_000
      while (Date.now() < waitUntil) {
        const [row] = yield* sql<{ count: number | string }>`SELECT count(*) AS count FROM cluster_effects
          WHERE run_id LIKE ${`${prefix}-%`}`
        if (Number(row?.count ?? 0) >= target) break
        if (procs.get(followerName)!.lines.includes(`done ${prefix}`)) break
        yield* Effect.sleep("10 millis")
      }

      // The victims: one worker, sometimes two, sometimes the client (with `cover`, each in turn).
      const dice = options.cover === true ? [0.5, 0.3, 0.1][(firstKind + trial) % 3]! : yield* Random.next
      const victims = backend === "sqlite"
        ? ["solo"]
        : dice < 0.2
        ? ["client"]
        : dice < 0.4
        ? Array.from(yield* Random.shuffle(workerNames)).slice(0, 2)
        : [workerNames[yield* Random.nextIntBetween(0, workerNames.length)]!]
      for (const name of victims) {
        yield* kill(procs.get(name)!)
        if (name === "client") kills.clients++
        else kills.workers++
      }
      const killedAt = Date.now()
      for (const name of victims) yield* spawn(name)
      // A new follower asks for the trial's runs again: it follows them from the start.
      if (victims.includes(followerName)) {
        yield* printed(procs.get(followerName)!, "ready", startWithin)
        yield* ask(prefix)
      }

      for (const name of victims) yield* printed(procs.get(name)!, "ready", startWithin)
      const readyAfter = (Date.now() - killedAt) / 1000
      const follower = procs.get(followerName)!
      const deadline = killedAt + stuckAfter
      while (!follower.lines.includes(`done ${prefix}`) && Date.now() < deadline) {
        if (follower.child.exitCode !== null) break
        yield* Effect.sleep("20 millis")
      }
      const followed = followedBy(follower).filter((f) => f.runId.startsWith(`${prefix}-`))
      const checked = yield* checkRuns({ store, sql, prefix, count: runsPerTrial, followed })
      addFigures(figures, checked.figures)
      problems.push(...checked.problems.map((p) => `trial ${trial} (killed ${victims.join(", ")}): ${p}`))
      log(
        `${backendNames[backend]}: trial ${trial + 1}/${trials}, killed ${victims.join(" and ")}, ` +
          `done ${((Date.now() - killedAt) / 1000).toFixed(1)} s later (ready again after ${readyAfter.toFixed(1)} s)` +
          (checked.problems.length === 0 ? "" : `; ${checked.problems.length} problems: ${Array.from(checked.problems).slice(0, 3).join("; ")}`)
      )
      if (follower.child.exitCode !== null) {
        return yield* Effect.dieMessage(`the ${followerName} process exited: ${follower.stderr.slice(-2000)}`)
      }
    }
    return { backend, trials, figures, kills, problems, seconds: (Date.now() - began) / 1000 }
  }))

/** The soak's table, one row per backend (a Markdown table). */
export const table = (results: ReadonlyArray<SoakResult>): string => {
  const header = [
    "backend",
    "trials",
    "runs",
    "runs lost",
    "runs stuck past 60 s",
    "completed steps re-run",
    "stream gaps",
    "stream duplicates",
    "results wrong",
    "earlier attempts run (retries, interrupted; allowed)",
    "time"
  ]
  const rows = results.map((r) => [
    backendNames[r.backend],
    r.trials,
    r.figures.runs,
    r.figures.lost,
    r.figures.stuck,
    r.figures.rerunCompleted,
    r.figures.gaps,
    r.figures.duplicates,
    r.figures.wrong,
    r.figures.reexecuted,
    `${Math.round(r.seconds)} s`
  ].map(String))
  return [header, header.map(() => "---"), ...rows].map((row) => `| ${row.join(" | ")} |`).join("\n")
}
