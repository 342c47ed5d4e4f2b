/**
 * Crash recovery with real processes: a worker is killed with SIGKILL (a) in the middle of a step, (b) during a
 * sleep, (c) between two steps; a new process on the same store (the same worker name, as a restarted worker) takes
 * the run over. Each run completes, each completed step executed exactly once, and the event log and stream are
 * gap-free. On SQLite and Postgres, with both engines.
 *
 * The tests run at once: most of their time is waiting (for a process to start, the workflow's sleep), and each has a
 * run, a worker name and on SQLite a file of its own. The worker runs bundled (test/bundle.ts), not through tsx.
 */
import { SqlClient } from "@effect/sql"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { spawn } from "node:child_process"
import { RunStore, WorkflowEvent } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Sqlite from "stepwise/sqlite"
import { databaseUrl, postgresEnabled, tempSqliteFile } from "./backends.js"
import { bundleScript } from "./bundle.js"

const fixture = await bundleScript("test/fixtures/crash-worker.ts")
afterAll(fixture.remove)

interface Exited {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

const worker = (env: Record<string, string>) =>
  Effect.async<Exited>((resume) => {
    const child = spawn(process.execPath, [fixture.file], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("exit", (code, signal) => resume(Effect.succeed({ code, signal, stdout, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const backends = [
  { name: "SQLite", store: "sqlite", db: tempSqliteFile, layer: (db: string) => Sqlite.layer({ filename: db }) },
  ...(postgresEnabled
    ? [{ name: "Postgres", store: "postgres", db: () => databaseUrl, layer: (db: string) => Postgres.layer({ url: db }) }]
    : [])
] as const

// The workers create the side-effect table too; on Postgres, where they share it, once beforehand: processes that
// create one table at the same time can collide even with IF NOT EXISTS.
if (postgresEnabled) {
  beforeAll(() =>
    Effect.runPromise(
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql`CREATE TABLE IF NOT EXISTS crash_side_effects (run_id TEXT NOT NULL, step TEXT NOT NULL, attempt INTEGER NOT NULL)`)
        .pipe(Effect.provide(Postgres.layer({ url: databaseUrl, maxConnections: 1 })), Effect.scoped)
    ))
}

for (const backend of backends) {
  for (const engine of ["default", "evented"] as const) {
    describe.concurrent(`recovery after SIGKILL: ${engine} engine on ${backend.name}`, () => {
      for (const killAt of ["mid-step", "sleeping", "between-steps"] as const) {
        it.live(`a run killed ${killAt.replace("-", " ")} completes in a new process`, () =>
          Effect.gen(function*() {
            const db = backend.db()
            const runId = `crash-${engine}-${killAt}-${crypto.randomUUID()}`
            const env = { STORE: backend.store, DB: db, ENGINE: engine, RUN_ID: runId, WORKER: `worker-${runId}` }

            const first = yield* worker({ ...env, MODE: "start", KILL_AT: killAt })
            expect(first.signal, first.stdout + first.stderr).toBe("SIGKILL")

            const started = Date.now()
            const second = yield* worker({ ...env, MODE: "recover" })
            expect(second.code, second.stderr).toBe(0)
            const { chunks, output } = JSON.parse(second.stdout.trim().split("\n").at(-1)!) as {
              output: number
              chunks: Array<string>
            }
            expect(output).toBe(23)

            yield* Effect.gen(function*() {
              const sql = yield* SqlClient.SqlClient
              const store = yield* RunStore.RunStore
              // every completed step executed exactly once; an interrupted one ran again with its attempt increased
              const effects = yield* sql<{ step: string; attempt: number }>`SELECT step, attempt FROM crash_side_effects
                WHERE run_id = ${runId} ORDER BY step`
              expect(effects.map((e) => e.step)).toEqual(["one", "slow", "three"])
              expect(effects.find((e) => e.step === "slow")?.attempt).toBe(killAt === "mid-step" ? 2 : 1)

              // the event log is gap-free, with one start of each completed step and one finish
              const page = yield* store.readEvents(runId, 0, 10_000)
              expect(page.events).toHaveLength(page.size)
              const starts = page.events.filter(WorkflowEvent.is("workflow-step-start")).map((e) => e.payload.id)
              expect(starts.filter((id) => id === "one")).toHaveLength(1)
              expect(starts.filter((id) => id === "three")).toHaveLength(1)
              expect(starts.filter((id) => id === "slow")).toHaveLength(killAt === "mid-step" ? 2 : 1)
              expect(page.events.filter((e) => e.type === "workflow-finish")).toHaveLength(1)
              expect(page.events.filter((e) => e.type === "workflow-step-waiting")).toHaveLength(1)
              expect((yield* store.getRun(runId))?.status).toBe("success")

              // the stream is gap-free: what the killed attempt wrote stays, then the complete attempt
              const stream = yield* store.readChunks(runId, "", 0, 1000)
              expect(stream.chunks).toEqual(chunks)
              expect(stream.size).toBe(chunks.length)
              const complete = Array.from({ length: 10 }, (_, i) => `attempt ${killAt === "mid-step" ? 2 : 1} chunk ${i}`)
              expect(chunks.slice(-10)).toEqual(complete)
              if (killAt === "mid-step") expect(chunks.slice(0, 5)).toEqual(complete.map((c) => c.replace("attempt 2", "attempt 1")).slice(0, 5))

              // a sleep resumes with what remained of it: it wakes at the recorded time, not a full sleep later
              if (killAt === "sleeping") {
                const waiting = page.events.find(WorkflowEvent.is("workflow-step-waiting"))!
                const woke = page.events.filter(WorkflowEvent.is("workflow-step-result")).find((e) => e.payload.id.startsWith("sleep"))!
                expect(woke.payload.endedAt).toBeGreaterThanOrEqual(waiting.payload.until)
                expect(woke.payload.endedAt - waiting.payload.until).toBeLessThan(Date.now() - started)
              }
            }).pipe(Effect.provide(Layer.mergeAll(backend.layer(db))), Effect.scoped)
          }), 60_000)
      }
    })
  }
}
