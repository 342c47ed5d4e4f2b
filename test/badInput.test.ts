/**
 * Bad input, tried on purpose, against the deployments of many processes (the evented engine over Redis + Postgres,
 * and over Postgres alone; each engine instance here has a bus and a store of its own, as a process would): garbage
 * and truncated messages on every channel, rows of the store that do not decode, a 10 MB input, a step output that
 * cannot be encoded, a workflow nobody registers, one defect among 100 runs. Each case: a clear error naming what is
 * wrong, nothing lost, the engine keeps serving.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Context, Deferred, Effect, Fiber, Layer, Logger, Schema, type Scope, Stream } from "effect"
import { Redis as RedisClient } from "ioredis"
import { EventBus, type RunContext, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"
import * as Postgres from "stepwise/postgres"
import * as Redis from "stepwise/redis"
import { postgresEnabled, redisEnabled, redisUrl } from "./backends.js"
import { freshDatabase, publishRawPostgres, publishRawRedis } from "./fixtures/harness.js"

const N = Schema.Number

interface Db {
  readonly name: string
  readonly url: string
}

interface Deployment {
  readonly name: string
  readonly bus: (db: Db) => Layer.Layer<EventBus.EventBus, unknown>
  /** Puts `text` as it is on `channel`, as a foreign publisher would. */
  readonly publishRaw: (db: Db) => Effect.Effect<(channel: string, text: string) => Effect.Effect<unknown, unknown>, unknown, Scope.Scope>
}

const deployments: ReadonlyArray<Deployment> = [
  ...(postgresEnabled && redisEnabled
    ? [{
      name: "Redis + Postgres",
      bus: (db: Db) => Redis.layerBus({ url: redisUrl, prefix: `stepwise-bad:${db.name}:`, redeliverAfter: "2 seconds" }),
      publishRaw: (db: Db) =>
        Effect.map(
          Effect.acquireRelease(Effect.sync(() => new RedisClient(redisUrl)), (client) => Effect.sync(() => client.disconnect())),
          (client) => publishRawRedis(client, `stepwise-bad:${db.name}:`)
        )
    }]
    : []),
  ...(postgresEnabled
    ? [{
      name: "Postgres alone",
      bus: (db: Db) => Postgres.layerBus({ url: db.url, redeliverAfter: "2 seconds" }),
      publishRaw: (db: Db) =>
        Effect.map(
          Layer.build(Postgres.layer({ url: db.url, maxConnections: 1 })),
          (context) => publishRawPostgres(Context.get(context, SqlClient.SqlClient), "stepwise_bus_")
        )
    }]
    : [])
]

/** One engine instance with a bus and a store of its own, as a process would have. */
const instance = (
  deployment: Deployment,
  db: Db,
  role: { readonly workerId: string } | "client",
  ...workflows: ReadonlyArray<Workflow.Any>
): Effect.Effect<Context.Context<WorkflowEngine.WorkflowEngine | RunStore.RunStore | SqlClient.SqlClient>, unknown, Scope.Scope> =>
  Layer.build(
    WorkflowEngine.register(...workflows).pipe(
      Layer.provideMerge(
        role === "client"
          ? WorkflowEngine.layerClient
          : WorkflowEngine.layerEventedWith({ workerId: role.workerId, lease: "2 seconds" })
      ),
      Layer.provide(deployment.bus(db)),
      Layer.provideMerge(Postgres.layer({ url: db.url, maxConnections: 3 }))
    ) as Layer.Layer<WorkflowEngine.WorkflowEngine | RunStore.RunStore | SqlClient.SqlClient, unknown>
  )

/** Log lines, captured for the assertions on what was said. */
const capture = () => {
  const lines: Array<string> = []
  const logger = Logger.make(({ message }) => {
    lines.push((Array.isArray(message) ? message : [message]).map(String).join(" "))
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

/** Gates that tests open: a step waits on its run's gate. */
const gates = new Map<string, Deferred.Deferred<void>>()
const gateOf = (runId: string) => {
  let gate = gates.get(runId)
  if (gate === undefined) {
    gate = Deferred.unsafeMake<void>(undefined as never)
    gates.set(runId, gate)
  }
  return gate
}

/** Writes three chunks, waits on its run's gate, then answers `n * 2`. */
const gated = Workflow.make({ id: "bad-gated", inputSchema: N, outputSchema: N }).pipe(
  Workflow.then(Step.make({
    id: "write",
    inputSchema: N,
    outputSchema: N,
    execute: ({ inputData }) =>
      Effect.gen(function*() {
        const out = yield* Workflow.getWritable<number>()
        for (let i = 0; i < 3; i++) yield* out.write(i)
        return inputData
      })
  })),
  Workflow.then(Step.make({
    id: "gate",
    inputSchema: N,
    outputSchema: N,
    execute: ({ inputData, runId }) =>
      Effect.gen(function*() {
        const out = yield* Workflow.getWritable<number>()
        yield* out.write(3)
        yield* Deferred.await(gateOf(runId))
        yield* out.write(4)
        return inputData * 2
      })
  })),
  Workflow.commit
)

/** A step, a sleep of a second, a step: runs wait in the store between the two. */
const sleepy = Workflow.make({ id: "bad-sleepy", inputSchema: N, outputSchema: N }).pipe(
  Workflow.then(Step.make({
    id: "first",
    inputSchema: N,
    outputSchema: N,
    execute: ({ inputData }) =>
      Effect.as(Effect.flatMap(Workflow.getWritable<string>(), (out) => out.write("first")), inputData + 1)
  })),
  Workflow.sleep("1 second"),
  Workflow.then(Step.make({ id: "second", inputSchema: N, outputSchema: N, execute: ({ inputData }) => Effect.succeed(inputData * 10) })),
  Workflow.commit
)

/** A workflow of one step. */
const oneStep = <I, O>(
  id: string,
  stepId: string,
  inputSchema: Schema.Schema<I>,
  outputSchema: Schema.Schema<O>,
  execute: Step.Step<string, I, O, never, RunContext.RunContext>["execute"]
) =>
  Workflow.make({ id, inputSchema, outputSchema }).pipe(
    Workflow.then(Step.make({ id: stepId, inputSchema, outputSchema, execute })),
    Workflow.commit
  )

/** Answers the length of its input, a string. */
const big = oneStep("bad-big", "measure", Schema.String, N, ({ inputData, writer }) =>
  Effect.as(writer.write({ received: inputData.length }), inputData.length))

/** A step whose output JSON cannot hold (a BigInt, a cycle), or that writes a chunk JSON cannot hold. */
const unencodable = oneStep("bad-unencodable", "produce", Schema.String, Schema.Unknown, ({ inputData }) =>
  Effect.suspend((): Effect.Effect<unknown, never, RunContext.RunContext> => {
    if (inputData === "write") return Effect.as(Effect.flatMap(Workflow.getWritable<unknown>(), (out) => Effect.orDie(out.write(10n))), "wrote")
    if (inputData === "bigint") return Effect.succeed(10n)
    const cycle: Record<string, unknown> = {}
    cycle["self"] = cycle
    return Effect.succeed(cycle)
  }))

/** A step whose output its schema refuses. */
const mistyped = oneStep("bad-mistyped", "lie", N, N, () => Effect.succeed("not a number" as unknown as number))

/** Run 37 of 100 meets a defect in its step. */
const hundred = oneStep("bad-hundred", "maybe-die", N, N, ({ inputData }) =>
  inputData === 37 ? Effect.die(new Error("boom in run 37")) : Effect.succeed(inputData + 1))

/** A workflow that only the client knows. */
const nobody = Workflow.make({ id: "bad-nobody-registers", inputSchema: N, outputSchema: N }).pipe(
  Workflow.map(({ inputData }) => Effect.succeed(inputData)),
  Workflow.commit
)

const settled = <A, E>(run: { readonly result: Effect.Effect<A, E> }) =>
  Effect.either(run.result).pipe(
    Effect.timeoutFail({ duration: "90 seconds", onTimeout: () => new Error("the run did not settle within 90 s") })
  )

const engineOf = (context: Context.Context<WorkflowEngine.WorkflowEngine>) => Context.get(context, WorkflowEngine.WorkflowEngine)

for (const deployment of deployments) {
  describe(`bad input, ${deployment.name}`, () => {
    it.scopedLive("garbage, truncated and wrong-typed messages on every channel are logged naming the channel and skipped", () => {
      const logs = capture()
      return Effect.gen(function*() {
        const db = yield* freshDatabase()
        const engine = engineOf(yield* instance(deployment, db, { workerId: "w1" }, gated))
        const raw = yield* deployment.publishRaw(db)
        const run = yield* engine.start(gated, 21)
        // A reader follows the stream live from the start, and another the events.
        const chunks = yield* Effect.fork(Stream.runCollect(run.readable<number>()))
        const events = yield* Effect.fork(Stream.runCollect(run.events()))
        const channels = ["workflows", "workflows-finish", EventBus.runChannel(run.runId)]
        const valid = JSON.stringify({ type: "workflow.step.end", runId: run.runId, data: { path: "1" } })
        const garbage = [
          "not json at all",
          valid.slice(0, valid.length - 7), // truncated
          "",
          "null",
          "[1,2,3]",
          "\u0001\ufffd\u007f", // (Postgres text cannot hold a NUL byte)
          JSON.stringify({ type: "workflow.step.run", runId: 42, data: { path: 7 } }), // wrong types
          JSON.stringify({ type: "workflow.explode", runId: run.runId, data: {} }), // no such command
          JSON.stringify({ type: "workflow.step.end", runId: run.runId, data: null })
        ]
        for (const channel of channels) {
          for (const text of garbage) yield* raw(channel, text)
        }
        // Well-formed commands about nothing that exists: a step of no run, a step the run does not have.
        yield* raw("workflows", JSON.stringify({ type: "workflow.step.run", runId: "no-such-run", data: { path: "0" } }))
        yield* raw("workflows", JSON.stringify({ type: "workflow.step.end", runId: run.runId, data: { path: "99" } }))
        yield* Effect.sleep("1 second")
        yield* Deferred.succeed(gateOf(run.runId), undefined)

        expect(yield* settled(run)).toMatchObject({ _tag: "Right", right: 42 })
        expect(Chunk.toArray(yield* Fiber.join(chunks))).toEqual([0, 1, 2, 3, 4])
        const types = Chunk.toArray(yield* Fiber.join(events)).map((e) => e.type)
        expect(types.filter((t) => t === "workflow-finish")).toHaveLength(1)
        expect(types.filter((t) => t === "workflow-step-result")).toHaveLength(2)

        // Each channel's garbage was named with its channel.
        const text = logs.lines.join("\n")
        for (const channel of channels) expect(text, channel).toContain(`channel "${channel}"`)
        // The engine keeps serving.
        const next = yield* engine.start(gated, 5)
        yield* Deferred.succeed(gateOf(next.runId), undefined)
        expect(yield* next.result).toBe(10)
      }).pipe(Effect.provide(logs.layer))
    }, 180_000)

    it.scopedLive("rows that do not decode fail their run with a message naming the run and the row; other runs complete", () =>
      Effect.gen(function*() {
        const db = yield* freshDatabase()
        const names = ["good", "bad-input", "bad-step", "bad-event", "bad-chunk"]
        // A first process starts five runs and stops while they sleep.
        const runIds = yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* instance(deployment, db, { workerId: "w1" }, sleepy)
          const store = Context.get(context, RunStore.RunStore)
          const runs = yield* Effect.forEach(names, (name, n) =>
            engineOf(context).start(sleepy, n, { runId: `${db.name}-${name}` }))
          for (const run of runs) {
            while ((yield* store.getRun(run.runId))?.status !== "waiting") yield* Effect.sleep("50 millis")
          }
          return runs.map((run) => run.runId)
        }))
        const [good, badInput, badStep, badEvent, badChunk] = runIds as [string, string, string, string, string]
        const sql = yield* Effect.provide(SqlClient.SqlClient, yield* Layer.build(Postgres.layer({ url: db.url, maxConnections: 1 })))
        yield* sql`UPDATE stepwise_runs SET input = ${"{not json"} WHERE run_id = ${badInput}`
        yield* sql`UPDATE stepwise_steps SET data = ${"]["} WHERE run_id = ${badStep} AND path = ${"0"}`
        yield* sql`UPDATE stepwise_events SET data = ${"{\"v\": {\"type\""} WHERE run_id = ${badEvent} AND idx = 0`
        yield* sql`UPDATE stepwise_chunks SET data = ${"garbage"} WHERE run_id = ${badChunk}`

        // The same worker comes back and takes its runs over.
        const engine = engineOf(yield* instance(deployment, db, { workerId: "w1" }, sleepy))
        const outcome = (runId: string) => Effect.flatMap(engine.getRun(runId), settled)
        expect(yield* outcome(good)).toMatchObject({ _tag: "Right", right: 10 })
        expect(yield* outcome(badEvent)).toMatchObject({ _tag: "Right", right: 40 })
        expect(yield* outcome(badChunk)).toMatchObject({ _tag: "Right", right: 50 })

        const failure = (runId: string) =>
          Effect.flatMap(outcome(runId), (either) => Effect.sync(() => either._tag === "Left" ? either.left.message : "succeeded"))
        const inputError = yield* failure(badInput)
        expect(inputError).toContain(badInput)
        expect(inputError).toContain("input")
        expect(inputError).toContain("corrupt")
        expect(yield* Effect.flatMap(engine.getRun(badInput), (run) => run.status)).toBe("failed")

        const stepError = yield* failure(badStep)
        expect(stepError).toContain(badStep)
        expect(stepError).toContain("step result at path 0")
        expect(yield* Effect.flatMap(engine.getRun(badStep), (run) => run.status)).toBe("failed")

        // Readers of a corrupt event or chunk fail saying which; the run itself is fine.
        const eventsError = yield* Effect.flip(Stream.runCollect((yield* engine.getRun(badEvent)).events()))
        expect(eventsError.message).toContain(`event 0 of run ${badEvent} is corrupt`)
        const chunkError = yield* Effect.flip(Stream.runCollect((yield* engine.getRun(badChunk)).readable()))
        expect(chunkError.message).toContain(`chunk 0 of stream "" of run ${badChunk} is corrupt`)
      }), 180_000)

    it.scopedLive("a 10 MB input is carried to the step, its events and the reader", () =>
      Effect.gen(function*() {
        const db = yield* freshDatabase()
        yield* instance(deployment, db, { workerId: "w1" }, big)
        const client = engineOf(yield* instance(deployment, db, "client", big))
        const input = "é".repeat(5 * 1024 * 1024) // 10 MB of UTF-8
        const run = yield* client.start(big, input)
        expect(yield* settled(run)).toMatchObject({ _tag: "Right", right: input.length })
        const events = Chunk.toArray(yield* Stream.runCollect(run.events()))
        const started = events.find((e) => e.type === "workflow-step-start")
        expect(started?.type === "workflow-step-start" && (started.payload as { readonly payload: unknown }).payload).toBe(input)
      }), 180_000)

    it.scopedLive("a step output that cannot be encoded fails its run with a message naming the step; the engine keeps serving", () =>
      Effect.gen(function*() {
        const db = yield* freshDatabase()
        const engine = engineOf(yield* instance(deployment, db, { workerId: "w1" }, unencodable, mistyped, hundred))
        const messageOf = <A, E extends { readonly message: string }>(run: { readonly result: Effect.Effect<A, E> }) =>
          Effect.map(settled(run), (either) => either._tag === "Left" ? either.left.message : "succeeded")

        const lie = yield* messageOf(yield* engine.start(mistyped, 1))
        expect(lie).toContain(`Step "lie" failed`)
        expect(lie).toContain("not a number")
        const bigint = yield* messageOf(yield* engine.start(unencodable, "bigint"))
        expect(bigint).toContain(`Step "produce" failed`)
        expect(bigint).toMatch(/BigInt/i)
        const cycle = yield* messageOf(yield* engine.start(unencodable, "cycle"))
        expect(cycle).toContain(`Step "produce" failed`)
        expect(cycle).toMatch(/circular/i)
        const write = yield* messageOf(yield* engine.start(unencodable, "write"))
        expect(write).toContain(`Step "produce" failed`)
        expect(write).toMatch(/BigInt/i)
        // An input JSON cannot hold is refused by start, and no run is created.
        const anything = Workflow.make({ id: "bad-any-input", inputSchema: Schema.Unknown, outputSchema: Schema.Unknown }).pipe(
          Workflow.map(({ inputData }) => Effect.succeed(inputData)),
          Workflow.commit
        )
        const refused = yield* Effect.flip(engine.start(anything, { amount: 10n }, { runId: `${db.name}-bigint-input` }))
        expect(refused._tag).toBe("WorkflowInputError")
        expect(refused.message).toContain("input cannot be stored: its encoded input.amount is a BigInt")
        expect(yield* Effect.either(engine.getRun(`${db.name}-bigint-input`))).toMatchObject({ _tag: "Left" })
        expect(yield* (yield* engine.start(hundred, 1)).result).toBe(2)
      }), 180_000)

    it.scopedLive("a run of a workflow no worker registers stays pending, and the workers keep serving", () => {
      const logs = capture()
      return Effect.gen(function*() {
        const db = yield* freshDatabase()
        yield* instance(deployment, db, { workerId: "w1" }, hundred)
        const client = engineOf(yield* instance(deployment, db, "client", hundred))
        const orphan = yield* client.start(nobody, 1)
        const served = yield* client.start(hundred, 1)
        expect(yield* settled(served)).toMatchObject({ _tag: "Right", right: 2 })
        yield* Effect.sleep("1 second")
        expect(yield* orphan.status).toBe("pending")
        expect(logs.lines.join("\n")).toContain(`"bad-nobody-registers"`)
      }).pipe(Effect.provide(logs.layer))
    }, 180_000)

    it.scopedLive("of 100 runs, one whose step meets a defect fails naming it; the 99 others succeed", () =>
      Effect.gen(function*() {
        const db = yield* freshDatabase()
        yield* instance(deployment, db, { workerId: "w1" }, hundred)
        yield* instance(deployment, db, { workerId: "w2" }, hundred)
        const client = engineOf(yield* instance(deployment, db, "client", hundred))
        const runs = yield* Effect.forEach(Array.from({ length: 100 }, (_, n) => n), (n) => client.start(hundred, n), {
          concurrency: 10
        })
        const outcomes = yield* Effect.forEach(runs, settled, { concurrency: "unbounded" })
        outcomes.forEach((outcome, n) => {
          if (n === 37) {
            expect(outcome._tag).toBe("Left")
            expect(outcome._tag === "Left" && outcome.left.message).toContain(`Step "maybe-die" failed in run ${runs[37]!.runId}`)
            expect(outcome._tag === "Left" && outcome.left.message).toContain("boom in run 37")
          } else {
            expect(outcome, `run ${n}`).toMatchObject({ _tag: "Right", right: n + 1 })
          }
        })
      }), 180_000)
  })
}
