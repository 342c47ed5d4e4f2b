/**
 * Seed example "Calling getWritable() Inside Steps": no stream is passed around; each step opens the run's stream
 * itself and gets the same one.
 *
 *   npx tsx examples/writable-in-steps.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Schema, Stream } from "effect"
import { Step, Workflow, WorkflowEngine } from "stepwise"
import * as Sqlite from "stepwise/sqlite"

const stepWithOutputStreamInside = Step.make({
  id: "step-with-output-stream-inside",
  inputSchema: Schema.Void,
  outputSchema: Schema.Void,
  execute: () =>
    Effect.gen(function*() {
      const writable = yield* Workflow.getWritable<Uint8Array>()
      yield* writable.write(new TextEncoder().encode("Hello from step!"))
    })
})

const stepCloseOutputStreamInside = Step.make({
  id: "step-close-output-stream-inside",
  inputSchema: Schema.Void,
  outputSchema: Schema.Literal("done"),
  execute: () => Effect.as(Effect.flatMap(Workflow.getWritable(), (writable) => writable.close), "done" as const)
})

export const outputStreamFromStepWorkflow = Workflow.make({
  id: "output-stream-from-step-workflow",
  inputSchema: Schema.Void,
  outputSchema: Schema.Literal("done")
}).pipe(
  Workflow.sleep("1 second"),
  Workflow.then(stepWithOutputStreamInside),
  Workflow.sleep("1 second"),
  Workflow.then(stepCloseOutputStreamInside),
  Workflow.commit
)

export const program = Effect.gen(function*() {
  const engine = yield* WorkflowEngine.WorkflowEngine
  const run = yield* engine.start(outputStreamFromStepWorkflow, undefined)
  const decoder = new TextDecoder()
  const text = yield* Stream.runCollect(Stream.map(run.readable<Uint8Array>(), (bytes) => decoder.decode(bytes)))
  return { text: Array.from(text), result: yield* run.result }
})

if (import.meta.url === `file://${process.argv[1]}`) {
  NodeRuntime.runMain(program.pipe(Effect.flatMap(Console.log), Effect.provide(Sqlite.layerEngine)))
}
