/**
 * The reader process of the durable throughput figure: its own store connection and its own (empty) bus, so it
 * follows the run by polling the store, as a reader on another machine would. Prints a line when ready, then
 * `{ count, lastAt }` when the stream has ended.
 */
import { Effect, Layer, Stream } from "effect"
import { EventBus, WorkflowEngine } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Sqlite from "stepwise/sqlite"

const store = process.env["STORE"] === "sqlite"
  ? Sqlite.layer({ filename: process.env["DB"]! })
  : Postgres.layer({ url: process.env["DB"]! })
const runId = process.env["RUN_ID"]!

const program = Effect.gen(function*() {
  const engine = yield* WorkflowEngine.WorkflowEngine
  console.log("ready")
  let run = yield* Effect.either(engine.getRun(runId))
  while (run._tag === "Left") {
    yield* Effect.sleep("5 millis")
    run = yield* Effect.either(engine.getRun(runId))
  }
  let count = 0
  let lastAt = 0
  yield* Stream.runForEach(run.right.readable<string>(), () =>
    Effect.sync(() => {
      count++
      lastAt = Date.now()
    }))
  console.log(JSON.stringify({ count, lastAt }))
})

Effect.runPromise(program.pipe(
  Effect.provide(WorkflowEngine.layerDefault.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, store)))),
  Effect.scoped
)).then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
