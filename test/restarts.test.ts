/**
 * Restarts of the servers themselves, under three worker processes and a client process (test/fixtures/cluster.ts):
 * a `redis-server` of the test's own killed and started again, empty, while runs stream; a Postgres cluster of the
 * test's own (store and bus) stopped and started again while steps commit. Runs pause, then complete: no run lost,
 * no committed step run again, and the client, which follows every run's stream and events live from the start, goes
 * on without a gap or a duplicate (checked against the store).
 *
 * The two tests run one after the other (run at once, under CI's load, a Postgres restart once left runs unfinished
 * past the 2 minutes allowed; see the closing note of 2026-12-07). The processes run the cluster fixture bundled
 * (test/bundle.ts).
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schedule } from "effect"
import { RunStore } from "stepwise"
import * as Postgres from "stepwise/postgres"
import { postgresEnabled, redisEnabled } from "./backends.js"
import { checkRuns } from "./fixtures/check.js"
import { createEffects, stepsOfRun } from "./fixtures/clusterWorkflow.js"
import { clusterBundle, followedBy, freshDatabase, printed, type Proc, start } from "./fixtures/harness.js"
import { type OwnServer, ownPostgres, ownPostgresAvailable, ownRedis } from "./fixtures/servers.js"

const runs = 40

/**
 * Starts three workers and a client over `env`, restarts `server` once a third of the user code has run, and checks
 * every run once the client followed them all.
 */
/**
 * What the store holds of the runs that did not finish: each one's status, owner and last heartbeat, and its steps
 * that did not succeed (path, step, status, attempt, the instance that claimed it). A restart that leaves runs
 * unfinished (seen once under CI's load, 2026-12-07) then says where they stopped.
 */
const unfinished = (store: RunStore.RunStore["Type"]) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    for (let n = 0; n < runs; n++) {
      const runId = `run-${n}`
      const record = yield* store.getRun(runId)
      if (record !== undefined && RunStore.isTerminal(record.status)) continue
      const steps = record === undefined ? [] : (yield* store.getSteps(runId)).steps.filter((step) => step.status !== "success")
      lines.push(
        `${runId}: ${record === undefined ? "not in the store" : `${record.status}, owner ${record.owner} (heartbeat ${
          record.heartbeatAt === undefined ? "never" : `${((Date.now() - record.heartbeatAt) / 1000).toFixed(1)} s ago`
        })`}; ${steps.map((step) => `${step.path} ${step.stepId} ${step.status} #${step.attempt ?? 0}${step.worker === undefined ? "" : ` on ${step.worker}`}`).join(", ") || "no step unfinished"}`
      )
    }
    return lines.length === 0 ? "the store holds every run finished" : `unfinished in the store:\n${lines.join("\n")}`
  }).pipe(Effect.catchAll((error) => Effect.succeed(`the store could not be read: ${error.message}`)))

const restartMidway = (options: {
  readonly env: Record<string, string>
  readonly databaseUrl: string
  readonly server: OwnServer
  readonly how: "crash" | "graceful"
}) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(Postgres.layer({ url: options.databaseUrl, maxConnections: 2 }))
    const sql = yield* Effect.provide(SqlClient.SqlClient, context)
    const store = yield* Effect.provide(RunStore.RunStore, context)
    yield* createEffects(sql)
    const fixture = yield* clusterBundle
    const workers: Array<Proc> = []
    for (const id of ["worker-1", "worker-2", "worker-3"]) {
      workers.push(yield* start({ ...options.env, ROLE: "worker", WORKER_ID: id }, { fixture }))
    }
    for (const w of workers) yield* printed(w, "ready")
    const client = yield* start({ ...options.env, ROLE: "client", RUNS: String(runs), RUN_PREFIX: "run" }, { fixture })
    while (true) {
      const [row] = yield* sql<{ count: number }>`SELECT count(*)::int AS count FROM cluster_effects`
      if ((row?.count ?? 0) >= (runs * stepsOfRun.length) / 3 || client.child.exitCode !== null) break
      yield* Effect.sleep("20 millis")
    }
    const before = followedBy(client).length
    yield* options.server.stop(options.how)
    yield* Effect.sleep("3 seconds")
    yield* options.server.start
    const restartedAt = Date.now()
    yield* printed(client, "done run", 120_000).pipe(
      Effect.catchAllDefect((defect) => Effect.flatMap(unfinished(store), (report) => Effect.die(new Error(`${String(defect)}\n${report}`))))
    )
    // The test's own pool may hold connections from before the restart: its reads are retried.
    const { figures, problems } = yield* checkRuns({ store, sql, prefix: "run", count: runs, followed: followedBy(client) })
      .pipe(Effect.retry(Schedule.spaced("500 millis").pipe(Schedule.intersect(Schedule.recurs(10)))))
    expect(problems).toEqual([])
    expect(figures).toMatchObject({ runs, lost: 0, stuck: 0, rerunCompleted: 0, gaps: 0, duplicates: 0, wrong: 0 })
    // The restart came while runs were under way.
    expect(before).toBeLessThan(runs)
    return { figures, after: (Date.now() - restartedAt) / 1000 }
  })

describe("server restarts", () => {
  describe.skipIf(!postgresEnabled || !redisEnabled)("a Redis restart", () => {
    it.scopedLive("killed and started again empty while runs stream: every run completes, nothing lost or run twice, readers go on", () =>
      Effect.gen(function*() {
        const redis = yield* ownRedis({ persist: false })
        const db = yield* freshDatabase()
        const { after, figures } = yield* restartMidway({
          env: { BUS: "redis", DATABASE_URL: db.url, REDIS_URL: redis.url, REDIS_PREFIX: "stepwise-restart:" },
          databaseUrl: db.url,
          server: redis,
          how: "crash"
        })
        console.log(`Redis restart: ${runs} runs done ${after.toFixed(1)} s after it, ${figures.reexecuted} attempts ran again`)
      }), 180_000)
  })

  // Without initdb/pg_ctl the test may skip only outside CI: under CI it runs and fails, saying what is missing.
  describe.skipIf(!ownPostgresAvailable && !process.env["CI"])("a Postgres restart", () => {
    it.scopedLive("stopped and started again while steps commit (store and bus): every run completes, nothing lost or run twice", () =>
      Effect.gen(function*() {
        const pg = yield* ownPostgres
        const { after, figures } = yield* restartMidway({
          env: { BUS: "postgres", DATABASE_URL: pg.url },
          databaseUrl: pg.url,
          server: pg,
          how: "crash"
        })
        console.log(`Postgres restart: ${runs} runs done ${after.toFixed(1)} s after it, ${figures.reexecuted} attempts ran again`)
      }), 180_000)
  })
})
