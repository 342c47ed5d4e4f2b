import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Option, Stream, TestClock } from "effect"
import { EventBus, WorkflowEngine, WorkflowEvent } from "stepwise"
import * as Sqlite from "stepwise/sqlite"
import { tempSqliteFile } from "./backends.js"
import * as Basic from "../examples/basic-streaming.js"
import * as Chat from "../examples/chat.js"
import * as Namespaced from "../examples/namespaced-streams.js"
import * as InSteps from "../examples/writable-in-steps.js"
import * as WriterEvents from "../examples/writer-events.js"

/** Runs a program that sleeps, moving the test clock forward until it is done. */
const withClock = <A, E, R>(program: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(program)
    while (Option.isNone(yield* Fiber.poll(fiber))) {
      yield* TestClock.adjust("100 millis")
      yield* Effect.yieldNow()
    }
    return yield* Fiber.join(fiber)
  })

describe("examples", () => {
  it.effect("basic text streaming: bytes written after a sleep reach the reader, then the stream closes", () =>
    Effect.gen(function*() {
      expect(yield* withClock(Basic.program)).toEqual({ text: ["Hello, world!"], result: "done" })
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("getWritable inside steps: both steps get the same stream", () =>
    Effect.gen(function*() {
      expect(yield* withClock(InSteps.program)).toEqual({ text: ["Hello from step!"], result: "done" })
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("namespaced streams: the default stream and logs are read separately", () =>
    Effect.gen(function*() {
      expect(yield* Namespaced.program).toEqual({
        default: [{ message: "Default stream data" }],
        logs: [{ log: "Named stream data" }],
        result: "done"
      })
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("writer research seed: write wraps, custom passes through, both as watch envelopes on the run channel", () =>
    Effect.gen(function*() {
      const { envelopes, output } = yield* WriterEvents.program
      expect(output).toEqual({ context: "hello-step" })
      const runId = envelopes[0]!.runId
      expect(envelopes).toEqual([
        {
          type: "watch",
          runId,
          data: {
            type: "workflow-step-output",
            runId,
            from: "USER",
            payload: {
              output: { type: "custom-status", data: { customMessage: "NORMAL_STEP_WRITE" } },
              runId,
              stepName: "custom-status-step",
              attempt: 1
            }
          }
        },
        { type: "watch", runId, data: { type: "custom-status", data: { customMessage: "NORMAL_STEP_CUSTOM" } } }
      ])
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("chat: UI chunks stream in order through a tool call and a text answer, then the stream ends", () =>
    Effect.gen(function*() {
      const chunks: Array<Chat.UIMessageChunk> = []
      const messages = yield* withClock(Chat.program((chunk) => Effect.sync(() => chunks.push(chunk))))
      expect(chunks.map((c) => c.type)).toEqual([
        "start",
        "tool-input-available",
        "tool-output-available",
        "text-start",
        ...Array(17).fill("text-delta"),
        "text-end",
        "finish"
      ])
      const text = chunks.flatMap((c) => c.type === "text-delta" ? [c.delta] : []).join("")
      expect(text).toBe("It is sunny in Paris today, about 21°C: a fine day for a walk along the Seine.")
      expect(messages.map((m) => m.role)).toEqual(["user", "assistant", "tool", "assistant"])
    }).pipe(Effect.provide(Layer.merge(WorkflowEngine.layerMemory, Chat.FakeChatModel("50 millis")))))

  it.effect("chat on the embedded default (SQLite in a file), as `npm run demo` runs it", () =>
    Effect.gen(function*() {
      const chunks: Array<Chat.UIMessageChunk> = []
      const messages = yield* withClock(Chat.program((chunk) => Effect.sync(() => chunks.push(chunk))))
      expect(chunks.at(0)?.type).toBe("start")
      expect(chunks.at(-1)?.type).toBe("finish")
      expect(messages).toHaveLength(4)
    }).pipe(
      Effect.provide(Layer.merge(
        WorkflowEngine.layerDefault.pipe(
          Layer.provideMerge(Layer.merge(EventBus.layerMemory, Sqlite.layer({ filename: tempSqliteFile() })))
        ),
        Chat.FakeChatModel("50 millis")
      ))
    ))

  it.effect("chat: the model chunks also reach event watchers unchanged, through writer.custom", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const run = yield* engine.start(Chat.chat, [{ role: "user", content: "hi" }])
      yield* run.result
      const events = Array.from(yield* Stream.runCollect(run.events()))
      const custom = events.filter(WorkflowEvent.isCustom)
      const ui = Array.from(yield* Stream.runCollect(run.readable<Chat.UIMessageChunk>()))
      // every model chunk, and only those (not start/finish, which other steps wrote to the UI stream only)
      expect(custom).toEqual(ui.slice(1, -1))
    }).pipe(Effect.provide(Layer.merge(WorkflowEngine.layerMemory, Chat.FakeChatModel(0)))))
})
