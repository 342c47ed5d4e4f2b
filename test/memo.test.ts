import { describe, expect, it } from "@effect/vitest"
import type { RunStore } from "stepwise"
import * as Memo from "../src/internal/engine/memo.js"

const step = (path: string, status: RunStore.StepRecord["status"], output?: unknown): RunStore.StepRecord =>
  output === undefined ? { path, stepId: `s${path}`, status } : { path, stepId: `s${path}`, status, output }

describe("the step records cache", () => {
  it("answers records read at a version for that version and older ones, and nothing for newer ones", () => {
    const cache = Memo.makeCache(10)
    expect(cache.get("r", 0)).toBeUndefined()
    const memo = cache.put("r", { steps: [step("0", "success", 1)], version: 3 })
    expect(memo.get("0")?.output).toBe(1)
    expect(cache.get("r", 3)?.get("0")?.output).toBe(1)
    expect(cache.get("r", 2)).toBeDefined()
    expect(cache.get("r", 4)).toBeUndefined()
    expect(cache.get("other", 0)).toBeUndefined()
  })

  it("follows this process's writes in version order, holding back a write answered before the one it follows", () => {
    const cache = Memo.makeCache(10)
    cache.put("r", { steps: [], version: 0 })
    cache.written("r", step("0", "running"), 1)
    expect(cache.get("r", 1)?.get("0")?.status).toBe("running")
    // Version 3 is answered before version 2: it waits, so the later write of path 0 is not undone by the earlier.
    cache.written("r", step("0", "success", 7), 3)
    expect(cache.get("r", 3)).toBeUndefined()
    expect(cache.get("r", 1)?.get("0")?.status).toBe("running")
    cache.written("r", step("0", "running"), 2)
    const memo = cache.get("r", 3)
    expect(memo?.get("0")).toEqual(step("0", "success", 7))
  })

  it("misses once another process wrote: a version this process never answered leaves a gap", () => {
    const cache = Memo.makeCache(10)
    cache.put("r", { steps: [step("0", "running")], version: 1 })
    // Version 2 was another process's write; this process's next write is version 3.
    cache.written("r", step("1", "running"), 3)
    expect(cache.get("r", 3)).toBeUndefined()
    // The walk reads the store (which has both writes) and the cache takes that read.
    const memo = cache.put("r", { steps: [step("0", "success", 5), step("1", "running")], version: 3 })
    expect(memo.get("0")?.status).toBe("success")
    expect(cache.get("r", 3)?.get("0")?.status).toBe("success")
  })

  it("ignores writes a read already holds, and keeps a newer entry over an older read", () => {
    const cache = Memo.makeCache(10)
    cache.put("r", { steps: [step("0", "success", 2)], version: 2 })
    // Answered version 1 (the running record), but the read at version 2 already has its success.
    cache.written("r", step("0", "running"), 1)
    expect(cache.get("r", 2)?.get("0")?.status).toBe("success")
    cache.written("r", step("1", "running"), 3)
    // A read that started earlier and ended later (version 2) does not take the cache back.
    cache.put("r", { steps: [step("0", "success", 2)], version: 2 })
    expect(cache.get("r", 3)?.get("1")?.status).toBe("running")
  })

  it("keeps writes answered past a read, to apply once the read's successors arrive", () => {
    const cache = Memo.makeCache(10)
    cache.put("r", { steps: [], version: 0 })
    cache.written("r", step("2", "success", 1), 5)
    // Another process wrote versions 1-3; a read at version 3 replaces the entry, keeping version 5 for later.
    cache.put("r", { steps: [step("0", "success", 0)], version: 3 })
    cache.written("r", step("1", "success", 1), 4)
    const memo = cache.get("r", 5)
    expect(memo?.get("0")?.status).toBe("success")
    expect(memo?.get("1")?.status).toBe("success")
    expect(memo?.get("2")?.status).toBe("success")
  })

  it("applies a read of the writes since its version, and answers nothing once it no longer holds the run", () => {
    const cache = Memo.makeCache(10)
    expect(cache.version("r")).toBeUndefined()
    expect(cache.update("r", { steps: [], version: 3 }, 0)).toBeUndefined()
    cache.put("r", { steps: [step("0", "running"), step("1", "running")], version: 2 })
    expect(cache.version("r")).toBe(2)
    // This process's write answered version 6 waits; another process wrote versions 3 to 5.
    cache.written("r", step("2", "running"), 6)
    const memo = cache.update("r", { steps: [step("0", "success", 1), step("1", "failed")], version: 5 }, 2)
    expect(memo?.get("0")?.status).toBe("success")
    expect(memo?.get("1")?.status).toBe("failed")
    expect(cache.version("r")).toBe(6)
    expect(cache.get("r", 6)?.get("2")?.status).toBe("running")
    // A read the cache has already passed changes nothing.
    cache.update("r", { steps: [step("0", "running")], version: 4 }, 2)
    expect(cache.get("r", 6)?.get("0")?.status).toBe("success")
    cache.drop("r")
    expect(cache.update("r", { steps: [], version: 7 }, 6)).toBeUndefined()
  })

  it("answers the records of a run it drops, so that what was derived from them can go too", () => {
    const cache = Memo.makeCache(10)
    const stored = step("0", "success", 1)
    cache.put("r", { steps: [stored], version: 1 })
    cache.written("r", step("1", "running"), 2)
    expect([...(cache.drop("r") ?? [])].map((record) => record.path)).toEqual(["0", "1"])
    expect(cache.drop("r")).toBeUndefined()
    expect(cache.version("r")).toBeUndefined()
  })

  it("keeps what a walk records to that walk", () => {
    const cache = Memo.makeCache(10)
    const walk = cache.put("r", { steps: [step("0", "success", 1)], version: 1 })
    walk.set("1", step("1", "running"))
    expect(walk.get("1")?.status).toBe("running")
    expect(walk.has("1")).toBe(true)
    expect(walk.get("0")?.status).toBe("success")
    const other = cache.get("r", 1)!
    expect(other.get("1")).toBeUndefined()
    expect(other.has("1")).toBe(false)
    // The shared records move on under both walks; a walk's own record still wins in that walk.
    cache.written("r", step("1", "success", 3), 2)
    expect(other.get("1")?.status).toBe("success")
    expect(walk.get("1")?.status).toBe("running")
  })

  it("forgets dropped runs, the oldest run beyond its capacity, and a run whose writes stay out of order", () => {
    const cache = Memo.makeCache(2)
    cache.put("a", { steps: [], version: 0 })
    cache.put("b", { steps: [], version: 0 })
    cache.put("c", { steps: [], version: 0 })
    expect(cache.size()).toBe(2)
    expect(cache.get("a", 0)).toBeUndefined()
    cache.drop("b")
    expect(cache.get("b", 0)).toBeUndefined()
    // Version 1 never arrives: after enough writes held back, the entry goes.
    for (let v = 2; v < 300; v++) cache.written("c", step(String(v), "running"), v)
    expect(cache.get("c", 0)).toBeUndefined()
    expect(cache.size()).toBe(0)
  })
})
