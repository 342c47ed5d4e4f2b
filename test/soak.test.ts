/**
 * The kill soak (test/soak/soak.ts), 10 trials on each backend (two at a time): each trial kills one worker, two,
 * or the client (on SQLite, the one process) at a random moment while 20 runs execute, starts it again, and checks
 * every run. Every fault figure must be 0. `npm run soak` runs the full 100 trials per backend.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { postgresEnabled, redisEnabled } from "./backends.js"
import { type Backend, soak, table } from "./soak/soak.js"

const trials = Number(process.env["SOAK_TRIALS"] ?? 10)

const backends: ReadonlyArray<Backend> = [
  ...(postgresEnabled && redisEnabled ? ["redis" as const] : []),
  ...(postgresEnabled ? ["postgres" as const] : []),
  "sqlite"
]

describe("the kill soak", () => {
  it.live(`${trials} trials on ${backends.join(", ")}, a random SIGKILL in each: no run lost or stuck, no completed step re-run, no stream gap`, () =>
    Effect.gen(function*() {
      // Redis + Postgres beside SQLite, then Postgres alone: two at a time keeps the load down beside the rest of the
      // suite (all three at once, at load 36, left runs unfollowed past 60 s). `npm run soak` runs all three at once.
      const run = (some: ReadonlyArray<Backend>) =>
        Effect.all(some.map((backend) => soak({ backend, trials })), { concurrency: "unbounded" })
      const results = [
        ...(yield* run(backends.filter((b) => b !== "postgres"))),
        ...(yield* run(backends.filter((b) => b === "postgres")))
      ]
      console.log(table(results))
      for (const result of results) {
        expect(result.problems, result.backend).toEqual([])
        expect(result.figures, result.backend).toMatchObject({
          runs: trials * 20,
          lost: 0,
          stuck: 0,
          rerunCompleted: 0,
          gaps: 0,
          duplicates: 0,
          wrong: 0
        })
      }
    }), 900_000)
})
