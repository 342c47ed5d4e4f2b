/**
 * The group commit of what steps' code writes (internal/engine/executor.ts): a batch holds the items of several
 * executions, each under its claim, and one execution's lost claim never costs another's writes. These tests drive the
 * races deterministically, with a `commit` that plays the store.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber } from "effect"
import { type Claim, makeGroupCommit } from "../src/internal/engine/executor.js"
import { StepFencedError } from "../src/WorkflowError.js"

const claim = (path: string): Claim & { stops: number } => {
  const made: Claim & { stops: number } = {
    runId: "run-1",
    stepId: `step-${path}`,
    path,
    stepCallId: `call-${path}`,
    attempt: 1,
    fenced: false,
    stops: 0,
    stop: () => {
      made.stops++
    }
  }
  return made
}

const refusal = (...claims: ReadonlyArray<Claim>) =>
  new StepFencedError({ runId: "run-1", fences: claims.map((c) => ({ path: c.path, stepCallId: c.stepCallId })) })

/** A group whose `commit` runs `answer` for each batch (after `gate` opens for the first), recording what it stored. */
const group = (
  gate: Deferred.Deferred<void>,
  answer: (batch: ReadonlyArray<string>, fences: ReadonlyArray<Claim> | undefined) => Effect.Effect<void, unknown>
) => {
  const stored: Array<ReadonlyArray<string>> = []
  let calls = 0
  const commit = makeGroupCommit<string, unknown>({
    commit: (batch, fences) =>
      Effect.gen(function*() {
        if (calls++ === 0) yield* Deferred.await(gate)
        yield* answer(batch, fences)
        stored.push([...batch])
      }),
    onFailure: (cause) => cause,
    clearOnSurface: false
  })
  return { commit, stored }
}

describe("group commit under claims", () => {
  it.live("a batch refused for a claim that another batch fenced off meanwhile commits the other claims' items", () =>
    Effect.gen(function*() {
      const lost = claim("1[2]")
      const held = claim("1[3]")
      const gate = yield* Deferred.make<void>()
      const { commit, stored } = group(gate, (batch, fences) =>
        Effect.suspend(() => {
          if (!batch.includes("lost-1")) return Effect.void
          expect(fences).toEqual([lost, held])
          // While this batch was on its way, the store refused another batch (the events') for `lost`, and that
          // group fenced the execution off: the claim is already marked when this batch's refusal arrives.
          lost.fenced = true
          return Effect.fail(refusal(lost))
        }))
      // An idle producer commits in its own fiber: held at the gate, so the next items queue up behind it.
      const first = yield* Effect.fork(commit.offer("plain-0", undefined))
      yield* Effect.yieldNow()
      yield* commit.offer("lost-1", lost)
      yield* commit.offer("held-1", held)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(first)
      yield* commit.flush
      expect(stored).toEqual([["plain-0"], ["held-1"]])
      expect(held.fenced).toBe(false)
      expect(commit.settled()).toBe(true)
      // The execution that still holds its claim goes on writing; the fenced-off one's writes die.
      yield* commit.offer("held-2", held)
      yield* commit.flush
      expect(stored.at(-1)).toEqual(["held-2"])
      const late = yield* Effect.exit(commit.offer("lost-2", lost))
      expect(Exit.isFailure(late) && Cause.isDie(late.cause)).toBe(true)
    }))

  it.live("a batch refused for a claim it holds fences that execution off, stops it once, and commits the rest", () =>
    Effect.gen(function*() {
      const lost = claim("2")
      const held = claim("3")
      const gate = yield* Deferred.make<void>()
      const { commit, stored } = group(gate, (batch) => batch.includes("lost-1") ? Effect.fail(refusal(lost)) : Effect.void)
      const first = yield* Effect.fork(commit.offer("plain-0", undefined))
      yield* Effect.yieldNow()
      yield* commit.offer("lost-1", lost)
      yield* commit.offer("held-1", held)
      yield* commit.offer("lost-2", lost)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(first)
      yield* commit.flush
      expect(stored).toEqual([["plain-0"], ["held-1"]])
      expect(lost.fenced).toBe(true)
      expect(lost.stops).toBe(1)
      expect(held.fenced).toBe(false)
    }))

  it.live("a refusal naming a fence the batch was not written under fails the batch instead of retrying for ever", () =>
    Effect.gen(function*() {
      const held = claim("4")
      const stranger = claim("5")
      const gate = yield* Deferred.make<void>()
      yield* Deferred.succeed(gate, undefined)
      const { commit, stored } = group(gate, () => Effect.fail(refusal(stranger)))
      const exit = yield* Effect.exit(commit.offer("held-1", held))
      expect(Exit.isFailure(exit)).toBe(true)
      expect(stored).toEqual([])
      expect(held.fenced).toBe(false)
      const again = yield* Effect.exit(commit.flush)
      expect(Exit.isFailure(again)).toBe(true)
    }))
})
