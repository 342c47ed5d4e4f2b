/**
 * What the bench process (main.ts) and its worker processes (worker.ts) share: the workflows, and the bus and store
 * layers of each deployment, so both sides of a figure are built from the same code.
 */
import { type Duration, Effect, Layer, Schema } from "effect"
import { EventBus, Step, Workflow, WorkflowEngine } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Redis from "stepwise/redis"

/** Wall-clock milliseconds with sub-millisecond precision, comparable between processes of one machine. */
export const wallMs = (): number => performance.timeOrigin + performance.now()

const noop = (i: number) =>
  Step.make({ id: `s${i}`, inputSchema: Schema.Number, outputSchema: Schema.Number, execute: ({ inputData }) => Effect.succeed(inputData) })

/** Figure 1: ten no-op steps one after another. */
export const linear = Workflow.commit(
  Array.from({ length: 10 }, (_, i) => noop(i)).reduce(
    (b, step) => Workflow.andThen(step)(b),
    Workflow.make({ id: "bench-cluster-linear", inputSchema: Schema.Number, outputSchema: Schema.Number }) as Workflow.Builder<
      "bench-cluster-linear",
      number,
      number,
      number,
      never,
      never
    >
  )
)

const payload = "x".repeat(64)
const WriteSpan = Schema.Struct({ firstWriteAt: Schema.Number, lastWriteAt: Schema.Number })

/** Figure 2: one step writes `input` chunks of 64 bytes as fast as it can; its output says when it wrote them. */
export const chunks = Workflow.make({ id: "bench-cluster-chunks", inputSchema: Schema.Number, outputSchema: WriteSpan }).pipe(
  Workflow.then(Step.make({
    id: "produce",
    inputSchema: Schema.Number,
    outputSchema: WriteSpan,
    execute: ({ inputData }) =>
      Effect.gen(function*() {
        const out = yield* Workflow.getWritable<string>()
        const firstWriteAt = wallMs()
        for (let i = 0; i < inputData; i++) yield* out.write(payload)
        yield* out.close
        return { firstWriteAt, lastWriteAt: wallMs() }
      })
  })),
  Workflow.commit
)

/**
 * A chunk of figure 3: its index, when it was written (`wallMs`), and which execution wrote it (the process and the
 * step's attempt), so that a stream holding two executions' writes says so.
 */
export interface Tick {
  readonly i: number
  readonly at: number
  readonly pid: number
  readonly attempt: number
}

/** How long the writer of figure 3 waits before its first write, so that the reader is following by then. */
export const tickLeadMs = 250

/** Figure 3: one step writes `count` chunks, one every `everyMs`, each carrying its write time. */
export const ticks = Workflow.make({
  id: "bench-cluster-ticks",
  inputSchema: Schema.Struct({ count: Schema.Number, everyMs: Schema.Number }),
  outputSchema: Schema.Number
}).pipe(
  Workflow.then(Step.make({
    id: "tick",
    inputSchema: Schema.Struct({ count: Schema.Number, everyMs: Schema.Number }),
    outputSchema: Schema.Number,
    execute: ({ attempt, inputData: { count, everyMs } }) =>
      Effect.gen(function*() {
        const out = yield* Workflow.getWritable<Tick>()
        yield* Effect.sleep(tickLeadMs)
        for (let i = 0; i < count; i++) {
          yield* out.write({ i, at: wallMs(), pid: process.pid, attempt })
          yield* Effect.sleep(everyMs)
        }
        yield* out.close
        return count
      })
  })),
  Workflow.commit
)

/** The brokers a deployment's processes share. */
export type BusName = "redis" | "postgres" | "memory"

/** `Postgres.layerBus`, as it is announced; absent from builds that predate it. */
export type PostgresLayerBus = (options: {
  readonly url: string
  readonly redeliverAfter?: Duration.DurationInput
  readonly retention?: Duration.DurationInput
}) => Layer.Layer<EventBus.EventBus, EventBus.EventBusError>

/**
 * `Postgres.layerBus` when this build of stepwise has it. Looked up at run time so that the bench builds and runs
 * (with `--buses=redis`) before that layer lands.
 */
export const postgresLayerBus: PostgresLayerBus | undefined =
  (Postgres as unknown as { readonly layerBus?: PostgresLayerBus }).layerBus

/** Where a deployment's processes meet: the store's database, and the Redis server and key prefix of its bus. */
export interface Brokers {
  readonly databaseUrl: string
  readonly redisUrl: string
  readonly redisPrefix: string
}

/** The bus of one deployment. `memory` is only meaningful inside one process (the in-process references). */
export const busLayer = (bus: BusName, brokers: Brokers): Layer.Layer<EventBus.EventBus, unknown> => {
  switch (bus) {
    case "memory":
      return EventBus.layerMemory
    case "redis":
      return Redis.layerBus({ url: brokers.redisUrl, prefix: brokers.redisPrefix })
    case "postgres": {
      if (postgresLayerBus === undefined) return Layer.die(new Error("Postgres.layerBus is not in this build of stepwise"))
      return postgresLayerBus({ url: brokers.databaseUrl })
    }
  }
}

/** The workflows every process of a deployment registers. */
export const workflows = [linear, chunks, ticks] as const

/** A worker: the evented engine executing the bench's workflows, over the deployment's bus and store. */
export const workerLayer = (bus: BusName, brokers: Brokers, workerId: string) =>
  WorkflowEngine.register(...workflows).pipe(
    Layer.provideMerge(WorkflowEngine.layerEventedWith({ workerId })),
    Layer.provide(busLayer(bus, brokers)),
    Layer.provide(Postgres.layer({ url: brokers.databaseUrl }))
  )
