/**
 * Seed example "Basic Text Streaming": sleep, a step writes bytes to the run's default stream, sleep, another step
 * closes it. A reader outside the run prints what arrives.
 *
 *   npx tsx examples/basic-streaming.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Schema, Stream } from "effect"
import { Step, Workflow, WorkflowEngine } from "stepwise"
import * as Sqlite from "stepwise/sqlite"

const stepWithOutputStream = Step.make({
  id: "step-with-output-stream",
  inputSchema: Schema.Void,
  outputSchema: Schema.Void,
  execute: () =>
    Effect.gen(function*() {
      const writable = yield* Workflow.getWritable<Uint8Array>()
      yield* writable.write(new TextEncoder().encode("Hello, world!"))
    })
})

const stepCloseOutputStream = Step.make({
  id: "step-close-output-stream",
  inputSchema: Schema.Void,
  outputSchema: Schema.Literal("done"),
  execute: () =>
    Effect.gen(function*() {
      const writable = yield* Workflow.getWritable<Uint8Array>()
      yield* writable.close
      return "done" as const
    })
})

export const outputStreamWorkflow = Workflow.make({
  id: "output-stream-workflow",
  inputSchema: Schema.Void,
  outputSchema: Schema.Literal("done")
}).pipe(
  Workflow.sleep("1 second"),
  Workflow.then(stepWithOutputStream),
  Workflow.sleep("1 second"),
  Workflow.then(stepCloseOutputStream),
  Workflow.commit
)

/** Starts the workflow, reads its default stream as text while it runs, and answers the text and the result. */
export const program = Effect.gen(function*() {
  const engine = yield* WorkflowEngine.WorkflowEngine
  const run = yield* engine.start(outputStreamWorkflow, undefined)
  const decoder = new TextDecoder()
  const text = yield* run.readable<Uint8Array>().pipe(
    Stream.map((bytes) => decoder.decode(bytes)),
    Stream.tap((chunk) => Console.log(`chunk: ${chunk}`)),
    Stream.runCollect
  )
  const result = yield* run.result
  return { text: Array.from(text), result }
})

if (import.meta.url === `file://${process.argv[1]}`) {
  NodeRuntime.runMain(
    program.pipe(Effect.flatMap((out) => Console.log("result:", out.result)), Effect.provide(Sqlite.layerEngine))
  )
}
