/**
 * Seed example "Advanced Chat Streaming", with a scripted fake model: the workflow streams UI-message chunks (the AI
 * SDK's shape) to the run's default stream while the model "types", calling a tool on the first turn. The model is
 * an Effect service, so the workflow requires it and the app provides it; a test swaps in an instant one.
 *
 *   npm run demo            (this file: reads the run in-process and prints it)
 *   npm run demo:web        (serves the runs over HTTP, and at http://localhost:3000/ a page that starts a chat
 *                            and renders its AI SDK UI message stream with EventSource: examples/web/index.html)
 */
import { HttpApiBuilder, HttpApiEndpoint, HttpApiGroup, HttpApiSchema, HttpServer } from "@effect/platform"
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Context, Duration, Effect, Layer, Schema, Stream } from "effect"
import { readFileSync } from "node:fs"
import { createServer, type Server } from "node:http"
import { Step, Workflow, WorkflowEngine } from "stepwise"
import * as Http from "stepwise/http"
import * as Sqlite from "stepwise/sqlite"

/** The chunks a UI renders (a subset of the AI SDK's UIMessageChunk). */
export type UIMessageChunk =
  | { readonly type: "start"; readonly messageMetadata: { readonly createdAt: number; readonly messageId: string } }
  | { readonly type: "text-start"; readonly id: string }
  | { readonly type: "text-delta"; readonly id: string; readonly delta: string }
  | { readonly type: "text-end"; readonly id: string }
  | { readonly type: "tool-input-available"; readonly toolCallId: string; readonly toolName: string; readonly input: unknown }
  | { readonly type: "tool-output-available"; readonly toolCallId: string; readonly output: unknown }
  | { readonly type: "finish" }

const Message = Schema.Struct({
  role: Schema.Literal("user", "assistant", "tool"),
  content: Schema.String
})
export type Message = typeof Message.Type

const FinishReason = Schema.Literal("tool-calls", "stop")

/** One model turn: chunks to stream now, then the messages it added and why it stopped. */
export interface Turn {
  readonly chunks: Stream.Stream<UIMessageChunk>
  readonly messages: ReadonlyArray<Message>
  readonly finishReason: typeof FinishReason.Type
}

/** The model, as a service the chat step requires. */
export class ChatModel extends Context.Tag("examples/ChatModel")<ChatModel, {
  readonly streamText: (messages: ReadonlyArray<Message>) => Effect.Effect<Turn>
}>() {}

/**
 * A scripted model: the first turn calls a weather tool, the second answers in text, one word at a time, `delay`
 * apart (so a reader sees the answer arrive live).
 */
export const FakeChatModel = (delay: Duration.DurationInput): Layer.Layer<ChatModel> =>
  Layer.succeed(ChatModel, {
    streamText: (messages) =>
      Effect.sync(() => {
        const turn = messages.filter((m) => m.role === "assistant").length
        const paced = <A>(items: ReadonlyArray<A>) =>
          Stream.fromIterable(items).pipe(Stream.tap(() => Effect.sleep(delay)))
        if (turn === 0) {
          const toolCallId = `call-${messages.length}`
          return {
            chunks: paced<UIMessageChunk>([
              { type: "tool-input-available", toolCallId, toolName: "weather", input: { city: "Paris" } },
              { type: "tool-output-available", toolCallId, output: { forecast: "sunny, 21°C" } }
            ]),
            messages: [
              { role: "assistant", content: "[tool call: weather(Paris)]" },
              { role: "tool", content: "sunny, 21°C" }
            ],
            finishReason: "tool-calls" as const
          }
        }
        const words = "It is sunny in Paris today, about 21°C: a fine day for a walk along the Seine.".split(" ")
        const id = `text-${turn}`
        return {
          chunks: paced<UIMessageChunk>([
            { type: "text-start", id },
            ...words.map((word, i): UIMessageChunk => ({ type: "text-delta", id, delta: i === 0 ? word : ` ${word}` })),
            { type: "text-end", id }
          ]),
          messages: [{ role: "assistant", content: words.join(" ") }],
          finishReason: "stop" as const
        }
      })
  })

const MAX_STEPS = 5

const Conversation = Schema.Struct({
  messages: Schema.Array(Message),
  finishReason: Schema.optional(FinishReason),
  steps: Schema.Number
})

const startStream = Step.make({
  id: "start-stream",
  inputSchema: Schema.Array(Message),
  outputSchema: Conversation,
  execute: ({ inputData, runId }) =>
    Effect.gen(function*() {
      const writable = yield* Workflow.getWritable<UIMessageChunk>()
      const createdAt = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
      yield* writable.write({ type: "start", messageMetadata: { createdAt, messageId: `msg-${runId}` } })
      return { messages: inputData, steps: 0 }
    })
})

const streamTextStep = Step.make({
  id: "stream-text",
  inputSchema: Conversation,
  outputSchema: Conversation,
  execute: ({ inputData, writer }) =>
    Effect.gen(function*() {
      const model = yield* ChatModel
      const writable = yield* Workflow.getWritable<UIMessageChunk>()
      const turn = yield* model.streamText(inputData.messages)
      // Every chunk goes to the run's UI stream (for readers of run.readable) and through writer.custom into the
      // run's events unchanged (for watchers of the events, and for GET /runs/{runId}/ui, the AI SDK's view).
      yield* Stream.runForEach(turn.chunks, (chunk) => Effect.zipRight(writable.write(chunk), writer.custom(chunk)))
      return {
        messages: [...inputData.messages, ...turn.messages],
        finishReason: turn.finishReason,
        steps: inputData.steps + 1
      }
    })
})

const endStream = Step.make({
  id: "end-stream",
  inputSchema: Conversation,
  outputSchema: Schema.Array(Message),
  execute: ({ inputData }) =>
    Effect.gen(function*() {
      const writable = yield* Workflow.getWritable<UIMessageChunk>()
      yield* writable.write({ type: "finish" })
      yield* writable.close
      return inputData.messages
    })
})

/** The model has answered (or used up its turns). Named, so that the workflow's graph says "until answered". */
const answered = ({ inputData }: Workflow.Context<typeof Conversation.Type>) =>
  Effect.succeed(inputData.finishReason !== "tool-calls" || inputData.steps >= MAX_STEPS)

export const chat = Workflow.make({ id: "chat", inputSchema: Schema.Array(Message), outputSchema: Schema.Array(Message) })
  .pipe(
    Workflow.then(startStream),
    Workflow.dountil(streamTextStep, answered),
    Workflow.then(endStream),
    Workflow.commit
  )

/** Starts a chat and hands each UI chunk to `onChunk` as it arrives; answers the final messages. */
export const program = (onChunk: (chunk: UIMessageChunk) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const engine = yield* WorkflowEngine.WorkflowEngine
    const run = yield* engine.start(chat, [{ role: "user", content: "What's the weather in Paris?" }])
    yield* Stream.runForEach(run.readable<UIMessageChunk>(), onChunk)
    return yield* run.result
  })

const print = (chunk: UIMessageChunk) =>
  Effect.sync(() => {
    switch (chunk.type) {
      case "text-delta":
        process.stdout.write(chunk.delta)
        break
      case "text-end":
        process.stdout.write("\n")
        break
      case "tool-input-available":
        process.stdout.write(`[tool ${chunk.toolName}(${JSON.stringify(chunk.input)})] `)
        break
      case "tool-output-available":
        process.stdout.write(`-> ${JSON.stringify(chunk.output)}\n`)
        break
      default:
        process.stdout.write(`<${chunk.type}>\n`)
    }
  })

/** The browser example's page, served at `/` beside the runs' routes. */
class PageGroup extends HttpApiGroup.make("page").add(
  HttpApiEndpoint.get("index", "/").addSuccess(HttpApiSchema.Text({ contentType: "text/html" }))
) {}

/** The runs' API (`Http.Api`) extended with the page. */
export class ChatApi extends Http.Api.add(PageGroup) {}

const page = readFileSync(new URL("./web/index.html", import.meta.url), "utf8")

/**
 * Serves the chat workflow's runs (`stepwise/http`) and the page on `port`, through `server` when given (tests pass
 * their own, to cut its connections).
 */
export const serve = (options: { readonly port: number; readonly server?: Server }) =>
  HttpApiBuilder.serve().pipe(
    Layer.provide(HttpApiBuilder.api(ChatApi)),
    Layer.provide(Http.layerGroup({ workflows: [chat] })),
    Layer.provide(HttpApiBuilder.group(ChatApi, "page", (handlers) => handlers.handle("index", () => Effect.succeed(page)))),
    HttpServer.withLogAddress,
    Layer.provideMerge(NodeHttpServer.layer(() => options.server ?? createServer(), { port: options.port }))
  )

if (import.meta.url === `file://${process.argv[1]}`) {
  const model = FakeChatModel("60 millis")
  if (process.argv.includes("--serve")) {
    NodeRuntime.runMain(
      Layer.launch(serve({ port: Number(process.env.PORT ?? 3000) }).pipe(Layer.provide(Layer.merge(Sqlite.layerEngine, model))))
    )
  } else {
    NodeRuntime.runMain(
      program(print).pipe(
        Effect.flatMap((messages) => Effect.log(`chat finished with ${messages.length} messages`)),
        Effect.provide(Layer.merge(Sqlite.layerEngine, model))
      )
    )
  }
}
