/**
 * The evented engine across processes: three worker processes and a client process (test/fixtures/cluster.ts), on
 * Redis + Postgres and on Postgres alone, each deployment in a database of its own. The client starts 200 runs of a
 * workflow with writes, a foreach and a sleep, and follows each run's stream and events live; in the middle, one
 * worker is killed with SIGKILL. Every run completes with the right result; no attempt of a step runs twice, the
 * attempt each step committed ran once, and only steps the killed worker was executing ran again; every stream and
 * event log the client read is the store's, gap-free and duplicate-free.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { RunStore } from "stepwise"
import * as Postgres from "stepwise/postgres"
import { postgresEnabled, redisEnabled, redisUrl } from "./backends.js"
import type { Chunk } from "./fixtures/cluster.js"
import { freshDatabase, type Proc, printed, start } from "./fixtures/harness.js"

const runs = 200

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
        yield* sql`CREATE TABLE cluster_effects (
          run_id TEXT NOT NULL, step TEXT NOT NULL, item INTEGER NOT NULL, attempt INTEGER NOT NULL, worker TEXT NOT NULL
        )`
        const env = {
          BUS: deployment.bus,
          DATABASE_URL: db.url,
          REDIS_URL: redisUrl,
          REDIS_PREFIX: `stepwise-cluster:${db.name}:`,
          RUN_PREFIX: "run"
        }
        const workers: Array<Proc> = []
        for (const id of ["worker-1", "worker-2", "worker-3"]) {
          workers.push(yield* start({ ...env, ROLE: "worker", WORKER_ID: id }))
        }
        for (const w of workers) yield* printed(w, "ready")
        const client = yield* start({ ...env, ROLE: "client", RUNS: String(runs) })

        // Killed once about a third of the user code has run: steps of it are executing, others are queued.
        const expectedEffects = runs * 5
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
        yield* printed(client, "done", 120_000).pipe(Effect.tapDefect(() =>
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
        const followed = client.lines.filter((l) => l.startsWith("{")).map((l) =>
          JSON.parse(l) as { runId: string; result: unknown; chunks: Array<Chunk>; events: Array<string> }
        )
        expect(followed).toHaveLength(runs)

        const effects = yield* sql<{ run_id: string; step: string; item: number; attempt: number; worker: string }>`
          SELECT run_id, step, item, attempt, worker FROM cluster_effects`
        let reruns = 0
        let suspected = 0
        for (const run of followed) {
          const n = Number(run.runId.split("-")[1])
          // the right result
          expect(run.result, run.runId).toEqual({ total: n * 1000 + 60 })
          expect((yield* storeService.getRun(run.runId))?.status).toBe("success")

          // user code: no attempt twice; each step's committed attempt ran once; other attempts only on the dead worker
          const steps = (yield* storeService.getSteps(run.runId)).steps
          const mine = effects.filter((e) => e.run_id === run.runId)
          const byAttempt = new Map<string, number>()
          for (const e of mine) {
            const key = `${e.step}/${e.item}/${e.attempt}`
            byAttempt.set(key, (byAttempt.get(key) ?? 0) + 1)
          }
          for (const [key, count] of byAttempt) expect(count, `${run.runId} ${key}`).toBe(1)
          for (const item of [-1, 0, 1, 2, 3]) {
            const step = item === -1 ? "prepare" : "work"
            const committed = steps.find((s) => s.stepId === step && (item === -1 || s.path.endsWith(`[${item}]`)))
            const path = committed?.path ?? `${step} ${item}`
            expect(committed?.status, `${run.runId} ${path}`).toBe("success")
            const attempts = mine.filter((e) => e.step === step && e.item === item)
            expect(attempts.filter((e) => e.attempt === committed!.attempt), `${run.runId} ${path}`).toHaveLength(1)
            // Other attempts are earlier ones that the committed one superseded: the dead worker's, or (on a machine
            // so loaded that a live worker's heartbeat came later than the lease) one taken for dead, fenced off.
            for (const other of attempts.filter((e) => e.attempt !== committed!.attempt)) {
              expect(other.attempt, `${run.runId} ${path} attempt ${other.attempt}`).toBeLessThan(committed!.attempt!)
              reruns++
              if (other.worker !== "worker-1") suspected++
            }
          }

          // the stream and the event log as the client read them live are the store's: no gap, no duplicate
          const stored = yield* storeService.readChunks(run.runId, "", 0, 10_000)
          expect(run.chunks, run.runId).toEqual(stored.chunks)
          const log = yield* storeService.readEvents(run.runId, 0, 10_000)
          if (run.events.length !== log.events.length) {
            for (const w of workers) console.error(w.stderr.split("\n").filter((l) => l.includes(run.runId)).join("\n"))
            console.error(run.runId, JSON.stringify(log.events.slice(run.events.length - 3).map((e) => [e.type, e.payload])))
          }
          expect(run.events, run.runId).toEqual(log.events.map((e) => e.type))
          expect(run.events.filter((t) => t === "workflow-finish")).toHaveLength(1)
          // each step's committed attempt wrote all its chunks, in order
          for (const item of [0, 1, 2, 3]) {
            const committed = steps.find((s) => s.stepId === "work" && s.path.endsWith(`[${item}]`))!.attempt
            expect(
              run.chunks.filter((c) => c.step === "work" && c.item === item && c.attempt === committed).map((c) => c.seq)
            ).toEqual([0, 1, 2])
          }
        }
        console.log(
          `${deployment.name}: ${runs} runs, ${effects.length} executions of user code (${reruns} again after the kill, ` +
            `${suspected} of them attempts of live workers taken for dead), ` +
            `done ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill`
        )
      }), 180_000)
  }
})
