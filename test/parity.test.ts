/**
 * Parity: every scenario runs on every engine, and what each engine produced must be the same once run ids, call
 * ids and times are normalised: the events on the run channel, the result and the stream contents. Where steps run
 * concurrently, engines may interleave different calls' events differently; there the multiset of events, each
 * call's own sequence, and the first and last events must agree.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit } from "effect"
import { WorkflowEvent } from "stepwise"
import { engines, observe } from "./engines.js"
import { normalize } from "./helpers.js"
import { type Observed, scenarios } from "./scenarios.js"

const exitSummary = (o: Observed) =>
  Exit.match(o.exit, {
    onSuccess: (value) => ({ success: value }),
    onFailure: (cause) => {
      const failure = Cause.failureOption(cause)
      const error = failure._tag === "Some" ? failure.value as { _tag: string; message: string } : undefined
      return { failure: error?._tag, message: error?.message.replaceAll(o.runId, "<run>") }
    }
  })

/** The call an event belongs to: a step execution's call id, else the step named in it. */
const lane = (event: WorkflowEvent.WorkflowEvent): string => {
  if (!WorkflowEvent.isBuiltin(event)) return `custom:${String(event["step"] ?? "")}`
  const payload = event.payload as { readonly stepCallId?: string; readonly id?: string; readonly stepName?: string }
  return payload.stepCallId ?? payload.stepName ?? payload.id ?? "run"
}

const compare = (concurrent: boolean, reference: Observed, other: Observed) => {
  expect(exitSummary(other)).toEqual(exitSummary(reference))
  expect(other.status).toBe(reference.status)
  expect(other.streams).toEqual(reference.streams)
  if (!concurrent) {
    expect(normalize(other.events)).toEqual(normalize(reference.events))
    return
  }
  const opaque = (events: ReadonlyArray<WorkflowEvent.WorkflowEvent>) =>
    normalize(events).map((e) => JSON.stringify(e).replace(/"stepCallId":"id\d+"/g, `"stepCallId":"<call>"`))
  expect([...opaque(other.events)].sort()).toEqual([...opaque(reference.events)].sort())
  // each call's own sequence, compared as a multiset (concurrent calls of one step may start in any order)
  const lanes = (o: Observed) => {
    const byLane = new Map<string, Array<string>>()
    opaque(o.events).forEach((e, i) => {
      const key = lane(o.events[i]!)
      byLane.set(key, [...(byLane.get(key) ?? []), e])
    })
    return Array.from(byLane.values(), (sequence) => JSON.stringify(sequence)).sort()
  }
  expect(lanes(other)).toEqual(lanes(reference))
  expect(opaque(other.events)[0]).toEqual(opaque(reference.events)[0])
  expect(opaque(other.events).at(-1)).toEqual(opaque(reference.events).at(-1))
}

describe(`parity of ${engines.map((e) => e.name).join(" and ")} engines`, () => {
  it("covers at least 25 scenarios", () => {
    expect(scenarios.length).toBeGreaterThanOrEqual(25)
  })

  for (const scenario of scenarios) {
    it.effect(scenario.name, () =>
      Effect.gen(function*() {
        const observed: Array<Observed> = []
        for (const engine of engines) observed.push(yield* Effect.provide(observe(scenario), engine.layer))
        const [reference, ...others] = observed
        // in each engine, every step result pairs with the start of the same call
        for (const o of observed) {
          const starts = new Map(
            o.events.filter(WorkflowEvent.is("workflow-step-start")).map((e) => [e.payload.stepCallId, e.payload.id])
          )
          for (const result of o.events.filter(WorkflowEvent.is("workflow-step-result"))) {
            if (result.payload.id.startsWith("sleep")) continue
            expect(starts.get(result.payload.stepCallId)).toBe(result.payload.id)
          }
        }
        for (const other of others) compare(scenario.concurrent === true, reference!, other)
      }))
  }
})
