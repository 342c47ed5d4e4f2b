/**
 * Bounded memory, small (the full measure is `npm run soak -- --memory`): one engine over the memory store with its
 * retention completes thousands of short runs, then thousands of runs each read live; no bus channel stays open and
 * no fiber is left behind, and the store keeps only what its retention bound allows.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { memorySoak } from "./soak/memory.js"

describe("bounded memory", () => {
  it.live("4,000 short runs and 2,000 runs read live leave no channel open and no fiber behind", () =>
    Effect.gen(function*() {
      const phases = yield* memorySoak({ runs: 4_000, readRuns: 2_000, firstSampleAt: 1_000, tolerance: Infinity })
      for (const phase of phases) {
        const first = phase.samples[0]!
        const last = phase.samples[phase.samples.length - 1]!
        expect(last.channels, phase.name).toBe(0)
        expect(last.fibers, phase.name).toBeLessThanOrEqual(first.fibers)
      }
    }), 120_000)
})
