/**
 * The evented engine across processes: three worker processes and a client process (test/fixtures/cluster.ts), on
 * Redis + Postgres and on Postgres alone, each deployment in a database of its own. The client starts 100 runs of a
 * workflow with writes, a foreach, a parallel, a retrying step and a sleep, and follows each run's stream and events live; in the middle, one
 * worker is killed with SIGKILL. Every run completes with the right result; no attempt of a step runs twice, the
 * attempt each step committed ran once, and only steps the killed worker was executing ran again; every stream and
 * event log the client read is the store's, gap-free and duplicate-free.
 *
 * 100 runs, not 200 as before: the client starts them all at once and the workers take every run they are sent (no
 * cap), so at the kill the runs are under way together and the victim holds its share of them, dozens, at every kind
 * of step; twice the runs made the test twice as long. The soak (test/soak.test.ts) kills at other moments. The
 * processes run the cluster fixture bundled (test/bundle.ts).
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { RunStore } from "stepwise"
import * as Postgres from "stepwise/postgres"
import { postgresEnabled, redisEnabled, redisUrl } from "./backends.js"
import { checkRuns } from "./fixtures/check.js"
import { createEffects, stepsOfRun } from "./fixtures/clusterWorkflow.js"
import { clusterBundle, followedBy, freshDatabase, type Proc, printed, start } from "./fixtures/harness.js"

const runs = 100

const deployments = [
  ...(postgresEnabled && redisEnabled ? [{ name: "Redis + Postgres", bus: "redis" }] : []),
  ...(postgresEnabled ? [{ name: "Postgres alone", bus: "postgres" }] : [])
] as const

describe.skipIf(deployments.length === 0)("the evented engine in separate processes", () => {
  for (const deployment of deployments) {
    it.scopedLive(`${deployment.name}: 3 workers and a client, one worker killed mid-way; nothing lost or run twice`, () =>
      Effect.gen(function*() {
        const db = yield* freshDatabase()
        const store = Postgres.layer({ url: db.url, maxConnections: 2 })
        const context = yield* Layer.build(store)
        const sql = yield* Effect.provide(SqlClient.SqlClient, context)
        yield* createEffects(sql)
        const env = {
          BUS: deployment.bus,
          DATABASE_URL: db.url,
          REDIS_URL: redisUrl,
          REDIS_PREFIX: `stepwise-cluster:${db.name}:`,
          RUN_PREFIX: "run"
        }
        const fixture = yield* clusterBundle
        const workers: Array<Proc> = []
        for (const id of ["worker-1", "worker-2", "worker-3"]) {
          workers.push(yield* start({ ...env, ROLE: "worker", WORKER_ID: id }, { fixture }))
        }
        for (const w of workers) yield* printed(w, "ready")
        const client = yield* start({ ...env, ROLE: "client", RUNS: String(runs) }, { fixture })

        // Killed once about a third of the user code has run: steps of it are executing, others are queued.
        const expectedEffects = runs * stepsOfRun.length
        while (true) {
          const [row] = yield* sql<{ count: number }>`SELECT count(*)::int AS count FROM cluster_effects`
          const count = row?.count ?? 0
          if (count >= expectedEffects / 3) break
          if (client.child.exitCode !== null) break
          yield* Effect.sleep("20 millis")
        }
        const victim = workers[0]!
        victim.child.kill("SIGKILL")
        yield* Effect.promise(() => victim.exited)
        const killedAt = Date.now()

        const storeService = yield* Effect.provide(RunStore.RunStore, context)
        yield* printed(client, "done run", 120_000).pipe(Effect.tapDefect(() =>
          Effect.gen(function*() {
            // Which runs did not finish, and where they are.
            const unfinished = yield* storeService.listRuns({ statuses: ["pending", "running", "waiting"] })
            for (const run of unfinished.slice(0, 5)) {
              const steps = (yield* storeService.getSteps(run.runId)).steps
              console.error(run.runId, run.status, run.owner, JSON.stringify(steps.map((s) => [s.path, s.status, s.worker, s.attempt])))
              for (const w of workers) {
                for (const line of [...w.lines, ...w.stderr.split("\n")]) {
                  if (line.includes(run.runId + " ")) console.error("LOG", line.slice(0, 400))
                }
              }
            }
            console.error(`${unfinished.length} runs unfinished`)
            const activity = yield* sql<{ state: string; wait: string; age: string; query: string }>`SELECT state,
              coalesce(wait_event_type || ':' || wait_event, '') AS wait, (now() - xact_start)::text AS age,
              left(query, 160) AS query FROM pg_stat_activity WHERE datname = ${db.name} AND pid <> pg_backend_pid()`
            for (const a of activity) console.error("PG", a.state, a.wait, a.age, a.query.replace(/\s+/g, " "))
          }).pipe(Effect.ignore)
        ))
        const followed = followedBy(client)
        expect(followed).toHaveLength(runs)

        // Right results; no step ran again once committed, and each committed attempt ran once; every stream and
        // event log the client followed live is the store's, with no gap and no duplicate.
        const { figures, problems } = yield* checkRuns({ store: storeService, sql, prefix: "run", count: runs, followed })
        expect(problems).toEqual([])
        expect(figures).toMatchObject({ runs, lost: 0, stuck: 0, rerunCompleted: 0, gaps: 0, duplicates: 0, wrong: 0 })
        // Attempts that ran again are those the killed worker was executing (or, on a machine so loaded that a live
        // worker's heartbeat came later than the lease, attempts of a live worker taken for dead, fenced off).
        const effects = yield* sql<{ worker: string }>`SELECT worker FROM cluster_effects`
        console.log(
          `${deployment.name}: ${runs} runs, ${effects.length} executions of user code (${figures.reexecuted} of ` +
            `earlier attempts, after the kill), done ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`
        )
      }), 180_000)
  }
})
