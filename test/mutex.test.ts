/**
 * The engine's lock (internal): one holder at a time, waiters served in the order they came, and interruption of a
 * holder or of a waiter never leaves the lock held.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, FiberId, Scheduler } from "effect"
import * as Mutex from "../src/internal/engine/mutex.js"

/** Lets forked fibers run. */
const settle = Effect.repeatN(Effect.yieldNow(), 10)

describe("mutex", () => {
  it.effect("runs one holder at a time, waiters in the order they came", () =>
    Effect.gen(function*() {
      const mutex = Mutex.make()
      const log: Array<string> = []
      const gate = yield* Deferred.make<void>()
      const holder = (name: string, wait?: Deferred.Deferred<void>) =>
        mutex.withLock(Effect.gen(function*() {
          log.push(`${name} in`)
          if (wait !== undefined) yield* Deferred.await(wait)
          yield* Effect.yieldNow()
          log.push(`${name} out`)
          return name
        }))
      const a = yield* Effect.fork(holder("a", gate))
      yield* settle
      const b = yield* Effect.fork(holder("b"))
      yield* settle
      const c = yield* Effect.fork(holder("c"))
      yield* settle
      expect(log).toEqual(["a in"])
      expect(mutex.held()).toBe(true)
      yield* Deferred.succeed(gate, undefined)
      expect(yield* Fiber.join(a)).toBe("a")
      expect(yield* Fiber.join(b)).toBe("b")
      expect(yield* Fiber.join(c)).toBe("c")
      expect(log).toEqual(["a in", "a out", "b in", "b out", "c in", "c out"])
      expect(mutex.held()).toBe(false)
    }))

  it.effect("a holder's failure or defect releases the lock and reaches its caller", () =>
    Effect.gen(function*() {
      const mutex = Mutex.make()
      expect(yield* Effect.exit(mutex.withLock(Effect.fail("no" as const)))).toStrictEqual(Exit.fail("no"))
      expect(mutex.held()).toBe(false)
      const died = yield* Effect.exit(mutex.withLock(Effect.dieMessage("boom")))
      expect(Exit.isFailure(died)).toBe(true)
      expect(mutex.held()).toBe(false)
      expect(yield* mutex.withLock(Effect.succeed(1))).toBe(1)
    }))

  it.effect("an interrupted holder releases the lock to the next waiter", () =>
    Effect.gen(function*() {
      const mutex = Mutex.make()
      const a = yield* Effect.fork(mutex.withLock(Effect.never))
      yield* settle
      const b = yield* Effect.fork(mutex.withLock(Effect.succeed("b")))
      yield* settle
      yield* Fiber.interrupt(a)
      expect(yield* Fiber.join(b)).toBe("b")
      expect(mutex.held()).toBe(false)
    }))

  it.live("a waiter interrupted while it waits leaves the line, and the others still get the lock", () =>
    Effect.gen(function*() {
      const mutex = Mutex.make()
      const gate = yield* Deferred.make<void>()
      const ran: Array<string> = []
      const a = yield* Effect.fork(mutex.withLock(Deferred.await(gate)))
      yield* settle
      const b = yield* Effect.fork(mutex.withLock(Effect.sync(() => ran.push("b"))))
      const c = yield* Effect.fork(mutex.withLock(Effect.sync(() => ran.push("c"))))
      yield* settle
      const exit = yield* Fiber.interrupt(b)
      expect(Exit.isInterrupted(exit)).toBe(true)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(a)
      // Still in line, `b` would be handed the lock and strand it, leaving `c` waiting forever.
      yield* Fiber.join(c).pipe(Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => "c never got the lock" }))
      expect(ran).toEqual(["c"])
      expect(mutex.held()).toBe(false)
    }))

  it.live("a waiter interrupted just after the lock was handed to it passes the lock on", () =>
    Effect.gen(function*() {
      const mutex = Mutex.make()
      const ran: Array<string> = []
      let b: Fiber.RuntimeFiber<unknown> | undefined
      // Right after `a` releases (which hands the lock to `b` and schedules it), and before `b` runs, `a`'s fiber
      // interrupts `b`: `b` wakes up holding the lock and interrupted, and must pass the lock on to `c`.
      const a = yield* Effect.fork(Effect.zipRight(
        mutex.withLock(settle),
        Effect.sync(() => b?.unsafeInterruptAsFork(FiberId.none))
      ))
      yield* Effect.yieldNow()
      b = yield* Effect.fork(mutex.withLock(Effect.sync(() => ran.push("b"))))
      const c = yield* Effect.fork(mutex.withLock(Effect.sync(() => ran.push("c"))))
      yield* Fiber.join(a)
      expect(Exit.isInterrupted(yield* Fiber.await(b))).toBe(true)
      // A stranded lock would leave `c` waiting forever.
      yield* Fiber.join(c).pipe(Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => "c never got the lock" }))
      expect(ran).toEqual(["c"])
      expect(mutex.held()).toBe(false)
    }))

  it.live("a waiter whose fiber yields anywhere on its way into the line is not forgotten", () =>
    // A fiber yields to the scheduler wherever its operation budget runs out. A waiter that yielded after finding the
    // lock held and before joining the line, while the holder released it (to nobody), waited for ever: a writer's
    // group commit hung on it. Here a scheduler makes the waiter yield once, at its k-th operation, for every k up to
    // past the point where it waits; the holder lets go of the lock the moment the waiter has yielded.
    Effect.gen(function*() {
      for (let k = 1; k <= 60; k++) {
        const mutex = Mutex.make()
        let yielded = false
        let count = 0
        const scheduler: Scheduler.Scheduler = {
          scheduleTask: (task, priority) => Scheduler.defaultScheduler.scheduleTask(task, priority),
          shouldYield: () => {
            if (yielded || ++count !== k) return false
            yielded = true
            return 0
          }
        }
        const holder = yield* Effect.fork(mutex.withLock(Effect.gen(function*() {
          for (let i = 0; i < 100 && !yielded; i++) yield* Effect.yieldNow()
        })))
        yield* settle
        const waiter = yield* Effect.fork(mutex.withLock(Effect.succeed(k)).pipe(Effect.withScheduler(scheduler)))
        yield* Fiber.join(holder)
        const got = yield* Fiber.join(waiter).pipe(Effect.timeoutFail({
          duration: "1 second",
          onTimeout: () => `the waiter that yielded at its operation ${k} was forgotten`
        }))
        expect(got).toBe(k)
        expect(mutex.held()).toBe(false)
      }
    }))

  it.live("onRelease is called once per call however it ends: success, failure, interruption, or a wait interrupted", () =>
    Effect.gen(function*() {
      const mutex = Mutex.make()
      const released: Array<string> = []
      const done = (name: string) => () => released.push(name)
      yield* mutex.withLock(Effect.void, done("ok"))
      yield* Effect.exit(mutex.withLock(Effect.fail("no"), done("failed")))
      const gate = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(mutex.withLock(Deferred.await(gate), done("holder")))
      yield* settle
      const waiter = yield* Effect.fork(mutex.withLock(Effect.void, done("waiter")))
      yield* settle
      yield* Fiber.interrupt(waiter)
      yield* Fiber.interrupt(holder)
      expect(released).toEqual(["ok", "failed", "waiter", "holder"])
      expect(mutex.held()).toBe(false)
    }))
})
