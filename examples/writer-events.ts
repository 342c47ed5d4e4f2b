/**
 * The writer-research seed's step: `writer.write` wraps its argument in a `workflow-step-output` event, while
 * `writer.custom` passes its event through unchanged. Both arrive on the pubsub channel `workflow.events.v2.{runId}`
 * as `{ type: "watch", runId, data }`; this example subscribes to that channel directly, as a pubsub consumer would.
 *
 *   npx tsx examples/writer-events.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Chunk, Console, Effect, Fiber, Schema, Stream } from "effect"
import { EventBus, Step, Workflow, WorkflowEngine } from "stepwise"
import * as Sqlite from "stepwise/sqlite"

const Context = Schema.Struct({ context: Schema.String })

const customStatusStep = Step.make({
  id: "custom-status-step",
  inputSchema: Context,
  outputSchema: Context,
  execute: ({ inputData, writer }) =>
    Effect.gen(function*() {
      yield* writer.write({ type: "custom-status", data: { customMessage: "NORMAL_STEP_WRITE" } })
      yield* writer.custom({ type: "custom-status", data: { customMessage: "NORMAL_STEP_CUSTOM" } })
      return { context: `${inputData.context}-step` }
    })
})

export const writerWorkflow = Workflow.make({ id: "writer-workflow", inputSchema: Context, outputSchema: Context }).pipe(
  Workflow.then(customStatusStep),
  Workflow.commit
)

/** Subscribes to the run channel before the run starts, and answers the watch envelopes the two writer calls published. */
export const program = Effect.scoped(Effect.gen(function*() {
  const engine = yield* WorkflowEngine.WorkflowEngine
  const bus = yield* EventBus.EventBus
  const runId = crypto.randomUUID()
  const envelopes = yield* bus.subscribe(EventBus.runChannel(runId))
  const watcher = yield* Effect.fork(Stream.runCollect(Stream.takeUntil(envelopes, (e) =>
    (e.data as { readonly type: string }).type === "workflow-finish")))
  const run = yield* engine.start(writerWorkflow, { context: "hello" }, { runId })
  const output = yield* run.result
  const seen = Chunk.toArray(yield* Fiber.join(watcher)).filter((e) => {
    const data = e.data as { readonly type: string; readonly from?: string }
    return data.type === "custom-status" || data.from === "USER"
  })
  return { output, envelopes: seen }
}))

if (import.meta.url === `file://${process.argv[1]}`) {
  NodeRuntime.runMain(
    program.pipe(
      Effect.flatMap(({ envelopes, output }) =>
        Effect.zipRight(
          Effect.forEach(envelopes, (e) => Console.log(JSON.stringify(e, null, 2)), { discard: true }),
          Console.log("output:", output)
        )
      ),
      Effect.provide(Sqlite.layerEngine)
    )
  )
}
