/**
 * The engines every shared suite runs against. A new engine or backend joins by adding one line here.
 */
import { Effect, Exit, Layer, Stream } from "effect"
import { EventBus, RunStore, WorkflowEngine } from "stepwise"
import type { Run, Workflow } from "stepwise"
import * as Redis from "stepwise/redis"
import { postgresBus, postgresEnabled, postgresStore, redisEnabled, redisUrl, sqliteStore } from "./backends.js"
import type { Observed, Scenario } from "./scenarios.js"

export interface EngineUnderTest {
  readonly name: string
  readonly layer: Layer.Layer<WorkflowEngine.WorkflowEngine | EventBus.EventBus | RunStore.RunStore, unknown>
}

let redisPrefixes = 0
/** A Redis bus of its own each time the layer is built (its keys under a prefix no other build uses). */
export const redisBus: Layer.Layer<EventBus.EventBus, unknown> = Layer.unwrapEffect(Effect.sync(() =>
  Redis.layerBus({ url: redisUrl, prefix: `stepwise-test:${process.pid}:${Date.now()}:${redisPrefixes++}:` })
))

const onBus = (
  engine: Layer.Layer<WorkflowEngine.WorkflowEngine, unknown, EventBus.EventBus | RunStore.RunStore>,
  bus: Layer.Layer<EventBus.EventBus, unknown>,
  store: Layer.Layer<RunStore.RunStore, unknown>
) => engine.pipe(Layer.provideMerge(Layer.merge(bus, store)))

const on = (
  engine: Layer.Layer<WorkflowEngine.WorkflowEngine, unknown, EventBus.EventBus | RunStore.RunStore>,
  store: Layer.Layer<RunStore.RunStore, unknown>
) => engine.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, store)))

export const engines: ReadonlyArray<EngineUnderTest> = [
  { name: "default", layer: WorkflowEngine.layerMemory },
  // every sleep holds its fiber (by default sleeps of a second or more park the run)
  { name: "default, never parking", layer: on(WorkflowEngine.layerDefaultWith({ parkAfter: "10000 days" }), RunStore.layerMemory) },
  { name: "evented", layer: WorkflowEngine.layerEventedMemory },
  { name: "default on SQLite", layer: on(WorkflowEngine.layerDefault, sqliteStore) },
  { name: "evented on SQLite", layer: on(WorkflowEngine.layerEvented, sqliteStore) },
  ...(postgresEnabled
    ? [
      { name: "default on Postgres", layer: on(WorkflowEngine.layerDefault, postgresStore) },
      { name: "evented on Postgres", layer: on(WorkflowEngine.layerEvented, postgresStore) },
      {
        name: "evented on Postgres with its bus",
        layer: WorkflowEngine.layerEvented.pipe(Layer.provideMerge(Layer.merge(postgresBus, postgresStore)))
      }
    ]
    : []),
  ...(redisEnabled ? [{ name: "evented on Redis", layer: onBus(WorkflowEngine.layerEvented, redisBus, RunStore.layerMemory) }] : [])
]

/** Runs one scenario on the engine of the context and observes everything it produced. */
export const observe = (scenario: Scenario) =>
  Effect.gen(function*() {
    const engine = yield* WorkflowEngine.WorkflowEngine
    const run = yield* engine.start(
      scenario.workflow as unknown as Workflow.Workflow<string, unknown, unknown, unknown, never>,
      scenario.input
    )
    if (scenario.drive !== undefined) yield* scenario.drive(run as Run.Run<unknown, unknown>)
    const exit = yield* Effect.exit(run.result)
    const events = yield* Stream.runCollect(run.events())
    const streams: Record<string, ReadonlyArray<unknown>> = {}
    for (const namespace of scenario.streams ?? []) {
      streams[namespace] = Array.from(yield* Stream.runCollect(run.readable({ namespace })))
    }
    const observed: Observed = {
      runId: run.runId,
      exit: exit as Exit.Exit<unknown, unknown>,
      events: Array.from(events),
      streams,
      status: yield* run.status
    }
    return observed
  })
