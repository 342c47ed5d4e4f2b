/**
 * The engines' timer queue (internal): one fiber and one timer for every parked sleep.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import * as Timers from "../src/internal/engine/timers.js"

/** A queue whose entries record `runId:path` when they fire. */
const recording = Effect.gen(function*() {
  const fired: Array<string> = []
  const timers = yield* Timers.make((runId, path) => Effect.sync(() => fired.push(`${runId}:${path}`)))
  return { timers, fired }
})

/** Lets forked fibers run after the clock moved. */
const settle = Effect.repeatN(Effect.yieldNow(), 20)

describe("timer queue", () => {
  it.scoped("fires entries in time order, same-time entries in the order they came, each once", () =>
    Effect.gen(function*() {
      const { fired, timers } = yield* recording
      yield* timers.schedule("late", "p", 3_000)
      yield* timers.schedule("early", "p", 1_000)
      yield* timers.schedule("tie-1", "p", 2_000)
      yield* timers.schedule("tie-2", "p", 2_000)
      yield* timers.schedule("early", "p", 500) // same run and path while pending: ignored
      expect(timers.size()).toBe(4)
      yield* TestClock.adjust(999)
      yield* settle
      expect(fired).toEqual([])
      yield* TestClock.adjust(1)
      yield* settle
      expect(fired).toEqual(["early:p"])
      yield* TestClock.adjust(5_000)
      yield* settle
      expect(fired).toEqual(["early:p", "tie-1:p", "tie-2:p", "late:p"])
      expect(timers.size()).toBe(0)
      expect(timers.has("late")).toBe(false)
    }))

  it.scoped("an entry earlier than the one the queue sleeps for wakes it up", () =>
    Effect.gen(function*() {
      const { fired, timers } = yield* recording
      yield* timers.schedule("far", "p", 60_000)
      yield* settle
      yield* timers.schedule("near", "p", 10)
      yield* TestClock.adjust(10)
      yield* settle
      expect(fired).toEqual(["near:p"])
    }))

  it.scoped("cancel drops every entry of a run; many canceled entries do not hold up the live ones", () =>
    Effect.gen(function*() {
      const { fired, timers } = yield* recording
      for (let i = 0; i < 200; i++) {
        yield* timers.schedule(`run-${i}`, "a", 1_000 + i)
        yield* timers.schedule(`run-${i}`, "b", 5_000 + i)
      }
      for (let i = 0; i < 200; i++) if (i % 20 !== 0) timers.cancel(`run-${i}`)
      expect(timers.size()).toBe(20)
      expect(timers.has("run-1")).toBe(false)
      expect(timers.has("run-20")).toBe(true)
      yield* TestClock.adjust(10_000)
      yield* settle
      expect(fired).toEqual([
        ...Array.from({ length: 10 }, (_, k) => `run-${k * 20}:a`),
        ...Array.from({ length: 10 }, (_, k) => `run-${k * 20}:b`)
      ])
      // a run may be scheduled again once its entry fired or was dropped
      timers.cancel("run-0")
      yield* timers.schedule("run-1", "a", 20_000)
      yield* TestClock.adjust(10_000)
      yield* settle
      expect(fired.at(-1)).toBe("run-1:a")
    }))
})
