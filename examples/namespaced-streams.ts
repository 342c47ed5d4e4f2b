/**
 * Seed example "Using Namespaced Streams in Steps": the default stream and a `logs` stream are separate streams of
 * one run, read separately.
 *
 *   npx tsx examples/namespaced-streams.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Schema, Stream } from "effect"
import { Step, Workflow, WorkflowEngine } from "stepwise"
import * as Sqlite from "stepwise/sqlite"

const writeToDefaultStream = Step.make({
  id: "write-to-default-stream",
  inputSchema: Schema.Void,
  outputSchema: Schema.Void,
  execute: () =>
    Effect.flatMap(
      Workflow.getWritable<{ readonly message: string }>(),
      (writable) => writable.write({ message: "Default stream data" })
    )
})

const writeToNamedStream = Step.make({
  id: "write-to-named-stream",
  inputSchema: Schema.Void,
  outputSchema: Schema.Void,
  execute: () =>
    Effect.flatMap(
      Workflow.getWritable<{ readonly log: string }>({ namespace: "logs" }),
      (writable) => writable.write({ log: "Named stream data" })
    )
})

const closeStreams = Step.make({
  id: "close-streams",
  inputSchema: Schema.Void,
  outputSchema: Schema.Literal("done"),
  execute: () =>
    Effect.gen(function*() {
      yield* (yield* Workflow.getWritable()).close
      yield* (yield* Workflow.getWritable({ namespace: "logs" })).close
      return "done" as const
    })
})

export const multiStreamWorkflow = Workflow.make({
  id: "multi-stream-workflow",
  inputSchema: Schema.Void,
  outputSchema: Schema.Literal("done")
}).pipe(
  Workflow.then(writeToDefaultStream),
  Workflow.then(writeToNamedStream),
  Workflow.then(closeStreams),
  Workflow.commit
)

export const program = Effect.gen(function*() {
  const engine = yield* WorkflowEngine.WorkflowEngine
  const run = yield* engine.start(multiStreamWorkflow, undefined)
  // Both readers run at once, each on its own stream.
  const [main, logs] = yield* Effect.all([
    Stream.runCollect(run.readable<{ readonly message: string }>()),
    Stream.runCollect(run.readable<{ readonly log: string }>({ namespace: "logs" }))
  ], { concurrency: 2 })
  return { default: Array.from(main), logs: Array.from(logs), result: yield* run.result }
})

if (import.meta.url === `file://${process.argv[1]}`) {
  NodeRuntime.runMain(program.pipe(Effect.flatMap(Console.log), Effect.provide(Sqlite.layerEngine)))
}
