import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schedule, Schema, Stream, TestClock } from "effect"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine, WorkflowEvent } from "stepwise"
import { Recorded, recordingEngine, recordingEventedEngine } from "./helpers.js"
import { awaitStatus } from "./scenarios.js"

const Input = Schema.Struct({ go: Schema.Boolean })

/** A workflow with user code at all four call sites, each calling write and custom and reporting its callId. */
const everywhere = Workflow.make({ id: "everywhere", inputSchema: Input, outputSchema: Schema.Unknown }).pipe(
  Workflow.then(Step.make({
    id: "the-step",
    inputSchema: Input,
    outputSchema: Input,
    execute: ({ inputData, writer }) =>
      Effect.gen(function*() {
        yield* writer.write({ from: "execute", callId: writer.callId })
        yield* writer.custom({ type: "data-site", site: "execute" })
        return inputData
      })
  })),
  Workflow.branch([[
    ({ writer }) =>
      Effect.gen(function*() {
        yield* writer.write({ from: "condition", callId: writer.callId })
        yield* writer.custom({ type: "data-site", site: "condition" })
        return true
      }),
    Step.make({ id: "chosen", inputSchema: Input, outputSchema: Input, execute: ({ inputData }) => Effect.succeed(inputData) })
  ]]),
  Workflow.map(({ getStepResult }) => Effect.succeed(getStepResult("the-step") as { readonly go: boolean })),
  Workflow.sleep(({ writer }) =>
    Effect.gen(function*() {
      yield* writer.write({ from: "sleep", callId: writer.callId })
      yield* writer.custom({ type: "data-site", site: "sleep" })
      return "1 second"
    })
  ),
  Workflow.sleepUntil(({ writer }) =>
    Effect.gen(function*() {
      yield* writer.write({ from: "sleepUntil", callId: writer.callId })
      yield* writer.custom({ type: "data-site", site: "sleepUntil" })
      const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      return new Date(now + 1000)
    })
  ),
  Workflow.commit
)

const runEverywhere = Effect.gen(function*() {
  const engine = yield* WorkflowEngine.WorkflowEngine
  const run = yield* engine.start(everywhere, { go: true })
  yield* awaitStatus(run, "waiting")
  yield* TestClock.adjust("1 second")
  yield* awaitStatus(run, "waiting")
  yield* TestClock.adjust("1 second")
  yield* run.result
  return run
})

for (const [engineName, recording] of [["default", recordingEngine], ["evented", recordingEventedEngine]] as const) {
describe(`writer (ToolStream) on the ${engineName} engine`, () => {
  it.effect("publishes the exact seed envelopes from execute, a condition, a sleep and a sleepUntil function", () =>
    Effect.gen(function*() {
      const run = yield* runEverywhere
      const { runId } = run
      const published = yield* Recorded
      const fromWriters = published.filter(({ channel, event }) => {
        if (channel !== EventBus.runChannel(runId)) return false
        const data = event.data as { readonly type: string; readonly from?: string }
        return data.type === "data-site" || data.from === "USER"
      })
      const names = ["the-step", "branch-1", "sleep-3", "sleepUntil-4"]
      const sites = ["execute", "condition", "sleep", "sleepUntil"]
      expect(fromWriters).toHaveLength(8)
      fromWriters.forEach(({ channel, event }, i) => {
        const site = Math.floor(i / 2)
        expect(channel).toBe(`workflow.events.v2.${runId}`)
        expect(channel).toBe(EventBus.runChannel(runId))
        if (i % 2 === 0) {
          const output = (event.data as { payload: { output: { callId: string } } }).payload.output
          expect(event).toEqual({
            type: "watch",
            runId,
            data: {
              type: "workflow-step-output",
              runId,
              from: "USER",
              // a step's writer also says which attempt wrote; conditions and sleeps have no attempts
              payload: site === 0
                ? { output: { from: sites[site], callId: output.callId }, runId, stepName: names[site], attempt: 1 }
                : { output: { from: sites[site], callId: output.callId }, runId, stepName: names[site] }
            }
          })
        } else {
          expect(event).toEqual({ type: "watch", runId, data: { type: "data-site", site: sites[site] } })
        }
      })
    }).pipe(Effect.provide(recording)))

  it.effect("gives each call site its own fresh callId; a step's writer uses the step's stepCallId", () =>
    Effect.gen(function*() {
      const run = yield* runEverywhere
      const events = Array.from(yield* Stream.runCollect(run.events()))
      const callIds = events.filter(WorkflowEvent.is("workflow-step-output")).map((e) =>
        (e.payload.output as { callId: string }).callId
      )
      expect(callIds).toHaveLength(4)
      expect(new Set(callIds).size).toBe(4)
      for (const id of callIds) expect(id).toMatch(/^[0-9a-f-]{36}$/)
      const stepStart = events.filter(WorkflowEvent.is("workflow-step-start")).find((e) => e.payload.id === "the-step")
      expect(stepStart?.payload.stepCallId).toBe(callIds[0])
    }).pipe(Effect.provide(recording)))

  it.effect("records every writer event in the run's event log, in the order each writer wrote", () =>
    Effect.gen(function*() {
      const run = yield* runEverywhere
      const events = Array.from(yield* Stream.runCollect(run.events()))
      const sites = events.filter(WorkflowEvent.isCustom).filter((e) => e.type === "data-site").map((e) => e["site"])
      expect(sites).toEqual(["execute", "condition", "sleep", "sleepUntil"])
      const published = (yield* Recorded).filter((p) => p.channel === EventBus.runChannel(run.runId))
      // every event on the channel is in the log, and in the same order
      expect(published.map((p) => p.event.data)).toEqual(events)
    }).pipe(Effect.provide(recording)))

  it.effect("output written by a failed attempt stays, and each output says which attempt wrote it", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const wf = Workflow.make({ id: "retried-writer", inputSchema: Schema.Number, outputSchema: Schema.String }).pipe(
        Workflow.then(Step.make({
          id: "answer",
          inputSchema: Schema.Number,
          outputSchema: Schema.String,
          retry: Schedule.recurs(1),
          execute: ({ attempt, writer }) =>
            Effect.gen(function*() {
              yield* writer.write("Hello")
              if (attempt === 1) return yield* Effect.fail("model disconnected")
              yield* writer.write(" world")
              return "done"
            })
        })),
        Workflow.commit
      )
      const run = yield* engine.start(wf, 0)
      yield* run.result
      const outputs = Array.from(yield* Stream.runCollect(run.events()))
        .filter(WorkflowEvent.is("workflow-step-output"))
        .map((e) => [e.payload.attempt, e.payload.output])
      expect(outputs).toEqual([[1, "Hello"], [2, "Hello"], [2, " world"]])
    }).pipe(Effect.provide(recording)))

  it.effect("refuses custom events that pose as the runtime's own, with a message saying what to do", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const wf = Workflow.make({ id: "impostor", inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
        Workflow.then(Step.make({
          id: "fake-finish",
          inputSchema: Schema.Number,
          outputSchema: Schema.Number,
          execute: ({ inputData, writer }) =>
            Effect.as(writer.custom({ type: "workflow-finish", payload: { workflowStatus: "success" } }), inputData)
        })),
        Workflow.commit
      )
      const run = yield* engine.start(wf, 1)
      const error = yield* Effect.flip(run.result)
      expect(error.message).toContain(`writer.custom in "fake-finish"`)
      expect(error.message).toContain(`"workflow-finish", which is reserved`)
      const finishes = Array.from(yield* Stream.runCollect(run.events())).filter((e) => e.type === "workflow-finish")
      expect(finishes).toHaveLength(1)
    }).pipe(Effect.provide(recording)))

  it.effect("toWritableStream writes through the same writer, in order", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const wf = Workflow.make({ id: "web-writer", inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
        Workflow.then(Step.make({
          id: "web",
          inputSchema: Schema.Number,
          outputSchema: Schema.Number,
          execute: ({ inputData, writer }) =>
            Effect.as(
              Effect.promise(() =>
                new ReadableStream({
                  start(controller) {
                    for (const word of ["a", "b", "c"]) controller.enqueue(word)
                    controller.close()
                  }
                }).pipeTo(writer.toWritableStream())
              ),
              inputData
            )
        })),
        Workflow.commit
      )
      const run = yield* engine.start(wf, 1)
      yield* run.result
      const outputs = Array.from(yield* Stream.runCollect(run.events()))
        .filter(WorkflowEvent.is("workflow-step-output"))
        .map((e) => e.payload.output)
      expect(outputs).toEqual(["a", "b", "c"])
    }).pipe(Effect.provide(recording)))

  it.effect("event consumers narrow the union by type without casts", () =>
    Effect.gen(function*() {
      const run = yield* runEverywhere
      const seen: Array<string> = []
      yield* Stream.runForEach(run.events(), (event) =>
        Effect.sync(() => {
          if (!WorkflowEvent.isBuiltin(event)) {
            seen.push(`custom:${event.type}`)
            return
          }
          switch (event.type) {
            case "workflow-start":
              seen.push(`start:${event.payload.workflowId}`)
              break
            case "workflow-step-output":
              seen.push(`output:${event.payload.stepName}`)
              break
            case "workflow-finish":
              seen.push(`finish:${event.payload.workflowStatus}`)
              break
          }
        }))
      expect(seen[0]).toBe("start:everywhere")
      expect(seen).toContain("output:sleepUntil-4")
      expect(seen).toContain("custom:data-site")
      expect(seen.at(-1)).toBe("finish:success")
      // and every event in the log decodes with the public schema
      const events = Array.from(yield* Stream.runCollect(run.events()))
      for (const event of events) {
        expect(Schema.decodeUnknownSync(WorkflowEvent.WorkflowEvent)(event)).toEqual(event)
      }
    }).pipe(Effect.provide(recording)))
})
}

/** A memory store that counts how writer events reach it, and can be told to fail them. */
const countingStore = (state: { batches: number; events: number; failWith?: string }) =>
  Layer.effect(
    RunStore.RunStore,
    Effect.map(RunStore.makeMemory(), (store): RunStore.RunStore["Type"] => ({
      ...store,
      appendEvents: (runId, events) =>
        state.failWith !== undefined
          ? Effect.fail(new RunStore.RunStoreError({ operation: "decode", runId, reason: state.failWith }))
          : Effect.tap(store.appendEvents(runId, events), () => {
            state.batches++
            state.events += events.length
          })
    }))
  )

const withStore = (state: { batches: number; events: number; failWith?: string }) =>
  WorkflowEngine.layerDefault.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, countingStore(state))))

const Count = Schema.Struct({ count: Schema.Number })

/** One step (`id`) writing `count` events in a tight loop, in workflow `${id}-writer`. */
const loopWriter = (id: string) =>
  Workflow.make({ id: `${id}-writer`, inputSchema: Count, outputSchema: Count }).pipe(
    Workflow.then(Step.make({
      id,
      inputSchema: Count,
      outputSchema: Count,
      execute: ({ inputData, writer }) =>
        Effect.as(
          Effect.forEach(Array.from({ length: inputData.count }, (_, i) => i), (i) => writer.write({ i }), { discard: true }),
          inputData
        )
    })),
    Workflow.commit
  )

describe("writer events: group commit", () => {
  it.effect("a step writing 10,000 events in a loop reaches the store in batches; the log holds every one in order", () => {
    const state = { batches: 0, events: 0 }
    const wf = loopWriter("fast")
    return Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const run = yield* engine.start(wf, { count: 10_000 })
      yield* run.result
      const events = Array.from(yield* Stream.runCollect(run.events()))
      const outputs = events.filter(WorkflowEvent.is("workflow-step-output")).map((e) => (e.payload.output as { i: number }).i)
      expect(outputs).toEqual(Array.from({ length: 10_000 }, (_, i) => i))
      // the step's result comes after everything it wrote
      const types = events.map((e) => e.type)
      expect(types.lastIndexOf("workflow-step-output")).toBeLessThan(types.indexOf("workflow-step-result"))
      expect(state.events).toBe(10_000)
      expect(state.batches).toBeLessThan(1_000)
    }).pipe(Effect.provide(withStore(state)))
  })

  it.live("an idle writer's event, or run stream chunk, is in the store when write returns", () => {
    const state = { batches: 0, events: 0 }
    const seen: Array<readonly [number, number]> = []
    const wf = Workflow.make({ id: "idle-writer", inputSchema: Count, outputSchema: Count }).pipe(
      Workflow.then(Step.make({
        id: "idle",
        inputSchema: Count,
        outputSchema: Count,
        execute: ({ inputData, runId, writer }) =>
          Effect.gen(function*() {
            const store = yield* RunStore.RunStore
            const stream = yield* Workflow.getWritable<number>()
            for (let i = 0; i < inputData.count; i++) {
              yield* Effect.sleep("1 millis")
              yield* writer.write({ i })
              yield* Effect.sleep("1 millis")
              yield* stream.write(i)
              const events = (yield* store.readEvents(runId, 0, 1000)).events
              seen.push([
                events.filter(WorkflowEvent.is("workflow-step-output")).length,
                (yield* store.readChunks(runId, "", 0, 0)).size
              ])
            }
            return inputData
          })
      })),
      Workflow.commit
    )
    return Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      yield* (yield* engine.start(wf, { count: 20 })).result
      expect(seen).toEqual(Array.from({ length: 20 }, (_, i) => [i + 1, i + 1]))
    }).pipe(Effect.provide(withStore(state)))
  })

  it.effect("a store that refuses the buffered events fails the step with the store's message, and the run with it", () => {
    const state = { batches: 0, events: 0, failWith: "disk full (simulated)" }
    const wf = loopWriter("doomed")
    return Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const run = yield* engine.start(wf, { count: 5_000 })
      const error = yield* Effect.flip(run.result)
      expect(error._tag).toBe("StepFailedError")
      expect(error.message).toContain(`"doomed"`)
      expect(error.message).toContain("disk full (simulated)")
      expect(yield* run.status).toBe("failed")
    }).pipe(Effect.provide(withStore(state)))
  })
})
