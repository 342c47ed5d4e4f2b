/**
 * `WorkflowEngine.layerClient`: a process that starts, reads, cancels and resumes runs while evented workers (other
 * instances over the same bus and store) execute them. Here the instances share one process; test/processes.test.ts
 * runs them as separate processes.
 */
import { FetchHttpClient, HttpServer } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Schema, Stream } from "effect"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"
import * as Http from "stepwise/http"
import * as Redis from "stepwise/redis"
import { redisEnabled, redisUrl } from "./backends.js"
import { awaitStatus } from "./scenarios.js"

/** Which instance a piece of user code ran in. */
class Where extends Context.Tag("test/Where")<Where, string>() {}

const ran: Array<string> = []
const N = Schema.Number

const double = Step.make({
  id: "double",
  inputSchema: N,
  outputSchema: N,
  execute: ({ inputData, writer }) =>
    Effect.gen(function*() {
      ran.push(yield* Where)
      yield* writer.write({ doubling: inputData })
      const logs = yield* Workflow.getWritable<string>({ namespace: "logs" })
      yield* logs.write(`doubled ${inputData}`)
      return inputData * 2
    })
})

const approve = Step.make({
  id: "approve",
  inputSchema: N,
  outputSchema: N,
  resumeSchema: Schema.Struct({ ok: Schema.Boolean }),
  execute: ({ inputData, resumeData, suspend }) =>
    Effect.gen(function*() {
      ran.push(yield* Where)
      if (resumeData === undefined) return yield* suspend({ asking: inputData })
      return resumeData.ok ? inputData : -1
    })
})

const forever = Step.make({
  id: "forever",
  inputSchema: N,
  outputSchema: N,
  execute: () => Effect.zipRight(Effect.flatMap(Where, (w) => Effect.sync(() => ran.push(w))), Effect.never)
})

const doubling = Workflow.make({ id: "client-doubling", inputSchema: N, outputSchema: N }).pipe(
  Workflow.then(double),
  Workflow.then(approve),
  Workflow.commit
)
const stuck = Workflow.make({ id: "client-stuck", inputSchema: N, outputSchema: N }).pipe(
  Workflow.then(forever),
  Workflow.commit
)

type Infra = Layer.Layer<EventBus.EventBus | RunStore.RunStore, unknown>

/** Two workers and a client, each with its own bus connection (`bus()`), over one store: the client's engine. */
const deployment = (buses: () => () => Layer.Layer<EventBus.EventBus, unknown>) =>
  Effect.map(deploymentWithStore(buses), ({ engine }) => engine)

const deploymentWithStore = (buses: () => () => Layer.Layer<EventBus.EventBus, unknown>) =>
  Effect.gen(function*() {
    const bus = buses()
    const store = yield* Layer.build(RunStore.layerMemory)
    const infra = (): Infra => Layer.merge(bus(), Layer.succeedContext(store))
    for (const name of ["worker-1", "worker-2"]) {
      yield* Layer.build(
        WorkflowEngine.register(doubling, stuck).pipe(
          Layer.provide(Layer.succeed(Where, name)),
          Layer.provideMerge(WorkflowEngine.layerEvented),
          Layer.provide(infra())
        )
      )
    }
    const client = yield* Layer.build(WorkflowEngine.layerClient.pipe(Layer.provide(infra())))
    return { engine: Context.get(client, WorkflowEngine.WorkflowEngine), store: Context.get(store, RunStore.RunStore) }
  })

/** The same deployment, with its client serving runs over HTTP (`stepwise/http`) on a free port: its base URL. */
const servedDeployment = (buses: () => () => Layer.Layer<EventBus.EventBus, unknown>) =>
  Effect.gen(function*() {
    const { engine, store } = yield* deploymentWithStore(buses)
    const served = yield* Layer.build(
      Http.layerServer({ port: 0, host: "127.0.0.1", workflows: [doubling] }).pipe(
        Layer.provide(Layer.succeed(Where, "client")),
        Layer.provide(Layer.succeed(WorkflowEngine.WorkflowEngine, engine)),
        Layer.provide(Layer.succeed(RunStore.RunStore, store))
      )
    )
    const address = Context.get(served, HttpServer.HttpServer).address as HttpServer.TcpAddress
    return `http://127.0.0.1:${address.port}`
  })

/** `bus()` is called once per deployment; what it answers, once per instance of the deployment. */
const suite = (name: string, enabled: boolean, bus: () => () => Layer.Layer<EventBus.EventBus, unknown>) =>
  describe.skipIf(!enabled)(`WorkflowEngine.layerClient, ${name}`, () => {
    it.scopedLive("starts runs that the workers execute, and reads their events and streams", () =>
      Effect.gen(function*() {
        ran.length = 0
        const client = yield* deployment(bus)
        const run = yield* client.start(doubling, 21).pipe(Effect.provideService(Where, "client"))
        yield* awaitStatus(run, "suspended")
        yield* run.resume({ step: "approve", resumeData: { ok: true } })
        expect(yield* run.result).toBe(42)
        const events = Array.from(yield* Stream.runCollect(run.events()))
        expect(events.filter((e) => e.type === "workflow-step-output").map((e) => (e.payload as { output: unknown }).output))
          .toEqual([{ doubling: 21 }])
        expect(Array.from(yield* Stream.runCollect(run.readable({ namespace: "logs" })))).toEqual(["doubled 21"])
        const again = yield* client.getRun(run.runId)
        expect(yield* again.status).toBe("success")
        expect(ran.length).toBe(3)
        expect(ran).not.toContain("client")
      }))

    it.scopedLive("serves runs over HTTP from the client, which executes nothing: Http.client starts, reads, resumes", () =>
      Effect.gen(function*() {
        ran.length = 0
        const base = yield* servedDeployment(bus)
        const http = yield* Http.client(base)
        const run = yield* http.start(doubling, 4)
        const suspended = yield* Effect.flip(run.result)
        expect(suspended._tag).toBe("RunSuspendedError")
        yield* run.resume({ step: "approve", resumeData: { ok: true } })
        expect(yield* run.result).toBe(8)
        expect(Array.from(yield* Stream.runCollect(run.readable({ namespace: "logs" })))).toEqual(["doubled 4"])
        expect(ran.length).toBe(3)
        expect(ran).not.toContain("client")
      }).pipe(Effect.provide(FetchHttpClient.layer)))

    it.scopedLive("cancels a run that a worker executes", () =>
      Effect.gen(function*() {
        ran.length = 0
        const client = yield* deployment(bus)
        const run = yield* client.start(stuck, 1).pipe(Effect.provideService(Where, "client"))
        while (ran.length === 0) yield* Effect.sleep("10 millis")
        yield* run.cancel
        expect(yield* run.status).toBe("canceled")
        expect(ran).not.toContain("client")
      }))

    it.scopedLive("refuses bad input without creating a run", () =>
      Effect.gen(function*() {
        const client = yield* deployment(bus)
        const error = yield* Effect.flip(
          client.start(doubling, "nope" as unknown as number).pipe(Effect.provideService(Where, "client"))
        )
        expect(error._tag).toBe("WorkflowInputError")
        expect(error.message).toContain("client-doubling")
      }))
  })

suite("memory bus", true, () => {
  const shared = Effect.runSync(Effect.map(EventBus.makeMemory, ({ bus }) => bus))
  return () => Layer.succeed(EventBus.EventBus, shared)
})

let deployments = 0
suite("Redis bus", redisEnabled, () => {
  const prefix = `stepwise-test:client:${process.pid}:${Date.now()}:${deployments++}:`
  return () => Redis.layerBus({ url: redisUrl, prefix })
})
