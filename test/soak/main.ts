/**
 * `npm run soak`: the kill soak (test/soak/soak.ts) on each backend (all at once), and its table; `npm run soak -- --memory` instead
 * measures the heap over many runs (test/soak/memory.ts).
 *
 *   npm run soak -- [--trials 100] [--backend redis|postgres|sqlite] (repeatable; default: all three)
 *   npm run soak -- --memory [--runs 1000000] [--read-runs 100000]
 *
 * Exits with 1 when any fault figure is not 0. Needs Redis (REDIS_URL, default the local one) and Postgres
 * (DATABASE_URL, default the local `test` database).
 */
import { Effect } from "effect"
import { parseArgs } from "node:util"
import { memorySoak } from "./memory.js"
import { type Backend, backendNames, soak, type SoakResult, table } from "./soak.js"

const { values } = parseArgs({
  options: {
    trials: { type: "string", default: "100" },
    backend: { type: "string", multiple: true },
    memory: { type: "boolean", default: false },
    runs: { type: "string" },
    "read-runs": { type: "string" }
  }
})

const main = Effect.gen(function*() {
  if (values.memory) {
    const phases = yield* memorySoak({
      ...(values.runs === undefined ? {} : { runs: Number(values.runs) }),
      ...(values["read-runs"] === undefined ? {} : { readRuns: Number(values["read-runs"]) }),
      log: (line) => console.log(line)
    })
    console.log("\nHeap (MB) after each count of runs:")
    for (const phase of phases) {
      console.log(`${phase.name}: ${phase.samples.map((s) => `${s.runs}: ${s.heapMb.toFixed(1)}`).join(", ")}`)
    }
    return phases.every((phase) => phase.ok)
  }
  const backends = (values.backend ?? ["redis", "postgres", "sqlite"]) as Array<Backend>
  for (const backend of backends) {
    if (!(backend in backendNames)) return yield* Effect.dieMessage(`unknown backend "${backend}": redis, postgres or sqlite`)
  }
  const trials = Number(values.trials)
  if (!Number.isInteger(trials) || trials < 1) return yield* Effect.dieMessage(`--trials ${values.trials}: a whole number, at least 1`)
  const started = new Date()
  // All at once, each in a database (or file) of its own with processes of its own. The processes' pools are small
  // (4 statements for the store, 4 and LISTEN for the Postgres bus), so that both evented backends together stay well
  // within a shared server's 100 connections.
  const results: ReadonlyArray<SoakResult> = yield* Effect.all(
    backends.map((backend) => soak({ backend, trials, log: (line) => console.log(line) })),
    { concurrency: "unbounded" }
  )
  console.log(`\nSoak of ${started.toISOString()}, ${trials} trials per backend, 20 runs per trial:\n`)
  console.log(table(results))
  const problems = results.flatMap((r) => r.problems)
  if (problems.length > 0) {
    console.log(`\n${problems.length} problems:\n${problems.slice(0, 50).join("\n")}`)
    return false
  }
  return true
})

Effect.runPromise(main).then(
  (ok) => process.exit(ok === false ? 1 : 0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
