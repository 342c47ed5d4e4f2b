import { NodeSdk, Tracer as OtelTracer } from "@effect/opentelemetry"
import { describe, expect, it } from "@effect/vitest"
import { SpanStatusCode } from "@opentelemetry/api"
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor
} from "@opentelemetry/sdk-trace-base"
import { Context, Data, Effect, Layer, Schedule, Schema, type Tracer } from "effect"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"

const N = Schema.Number

const add = (id: string, k: number) =>
  Step.make({ id, inputSchema: N, outputSchema: N, execute: ({ inputData }) => Effect.succeed(inputData + k) })

class Flaked extends Data.TaggedError("Flaked")<{ readonly message: string }> {}

/** prepare, then a parallel of a and b, then a step that fails its first attempt under retry, then a nested workflow. */
const traced = () => {
  let calls = 0
  const flaky = Step.make({
    id: "flaky",
    inputSchema: Schema.Record({ key: Schema.String, value: N }),
    outputSchema: N,
    retry: Schedule.recurs(2),
    execute: ({ inputData }) =>
      ++calls === 1 ? Effect.fail(new Flaked({ message: "the first attempt fails" })) : Effect.succeed(inputData["a"]! + inputData["b"]!)
  })
  const inner = Workflow.make({ id: "inner", inputSchema: N, outputSchema: N }).pipe(
    Workflow.then(add("c", 100)),
    Workflow.commit
  )
  // What a step's own code traces (a model call, say).
  const prepare = Step.make({
    id: "prepare",
    inputSchema: N,
    outputSchema: N,
    execute: ({ inputData }) => Effect.succeed(inputData + 1).pipe(Effect.withSpan("lookup"))
  })
  return Workflow.make({ id: "traced", inputSchema: N, outputSchema: N }).pipe(
    Workflow.then(prepare),
    Workflow.parallel([add("a", 1), add("b", 2)]),
    Workflow.then(flaky),
    Workflow.then(inner),
    Workflow.commit
  )
}

/** An app's OpenTelemetry set-up, exporting to memory. */
const sdk = (exporter: InMemorySpanExporter) =>
  NodeSdk.layer(() => ({
    resource: { serviceName: "stepwise-test" },
    spanProcessor: new SimpleSpanProcessor(exporter)
  }))

/** An Effect tracer of its own (one per engine instance, as if each ran in a process of its own). */
const tracerTo = (exporter: InMemorySpanExporter): Effect.Effect<Tracer.Tracer> =>
  OtelTracer.make.pipe(
    Effect.provideService(
      OtelTracer.OtelTracer,
      new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }).getTracer("stepwise-test")
    )
  )

const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId
const named = (spans: ReadonlyArray<ReadableSpan>, name: string) => spans.filter((span) => span.name === name)
const one = (spans: ReadonlyArray<ReadableSpan>, name: string): ReadableSpan => {
  const found = named(spans, name)
  expect(found.map((span) => span.name), `one span named "${name}"`).toEqual([name])
  return found[0]!
}

const engines: ReadonlyArray<
  readonly [string, Layer.Layer<WorkflowEngine.WorkflowEngine | RunStore.RunStore, EventBus.EventBusError>]
> = [
  ["default", WorkflowEngine.layerMemory],
  ["evented", WorkflowEngine.layerEventedMemory]
]

describe("tracing", () => {
  for (const [name, engineLayer] of engines) {
    it.effect(`a run is one trace of its steps' attempts, under the caller's span (${name} engine)`, () => {
      const exporter = new InMemorySpanExporter()
      return Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const run = yield* engine.start(traced(), 1).pipe(Effect.withSpan("request"))
        expect(yield* run.result).toBe(107)

        const spans = exporter.getFinishedSpans()
        const request = one(spans, "request")
        const root = one(spans, "stepwise.run traced")
        expect(new Set(spans.map((span) => span.spanContext().traceId))).toEqual(new Set([request.spanContext().traceId]))
        expect(parentOf(root)).toBe(request.spanContext().spanId)
        expect(root.attributes).toMatchObject({ "stepwise.run.id": run.runId, "stepwise.workflow.id": "traced" })

        const runSpan = root.spanContext().spanId
        const prepare = one(spans, "stepwise.step prepare")
        const a = one(spans, "stepwise.step a")
        const b = one(spans, "stepwise.step b")
        // The parallel's steps are siblings under the run.
        for (const span of [prepare, a, b]) expect(parentOf(span)).toBe(runSpan)
        expect([a.attributes["stepwise.step.path"], b.attributes["stepwise.step.path"]]).toEqual(["1:a", "1:b"])
        // What the step's code traces nests in its attempt's span.
        expect(parentOf(one(spans, "lookup"))).toBe(prepare.spanContext().spanId)
        expect(a.attributes).toMatchObject({
          "stepwise.run.id": run.runId,
          "stepwise.workflow.id": "traced",
          "stepwise.step.id": "a",
          "stepwise.step.attempt": 1
        })

        // A span per attempt of the retried step, the failed one with an error status.
        const attempts = named(spans, "stepwise.step flaky")
          .sort((x, y) => Number(x.attributes["stepwise.step.attempt"]) - Number(y.attributes["stepwise.step.attempt"]))
        expect(attempts.map((span) => span.attributes["stepwise.step.attempt"])).toEqual([1, 2])
        expect(attempts.map((span) => parentOf(span))).toEqual([runSpan, runSpan])
        expect(attempts.map((span) => span.attributes["stepwise.step.path"])).toEqual(["2", "2"])
        expect(attempts[0]!.status.code).toBe(SpanStatusCode.ERROR)
        expect(attempts[0]!.status.message).toContain("the first attempt fails")
        expect(attempts[1]!.status.code).not.toBe(SpanStatusCode.ERROR)

        // A nested workflow's steps are children of its span, which is the run's child.
        const inner = one(spans, "stepwise.workflow inner")
        expect(parentOf(inner)).toBe(runSpan)
        expect(inner.attributes).toMatchObject({ "stepwise.step.id": "inner", "stepwise.step.path": "3" })
        const c = one(spans, "stepwise.step c")
        expect(parentOf(c)).toBe(inner.spanContext().spanId)
        expect(c.attributes["stepwise.step.path"]).toBe("3/0")
      }).pipe(Effect.provide(engineLayer), Effect.provide(sdk(exporter)))
    })
  }

  for (const [name, engineLayer] of engines) {
    it.effect(`a resumed run goes on in the trace of its start (${name} engine)`, () => {
      const exporter = new InMemorySpanExporter()
      const wf = Workflow.make({ id: "approve", inputSchema: N, outputSchema: Schema.String }).pipe(
        Workflow.then(Step.make({
          id: "ask",
          inputSchema: N,
          outputSchema: Schema.String,
          resumeSchema: Schema.String,
          execute: ({ resumeData, suspend }) => resumeData === undefined ? suspend("ok?") : Effect.succeed(resumeData)
        })),
        Workflow.commit
      )
      return Effect.gen(function*() {
        const engine = yield* WorkflowEngine.WorkflowEngine
        const run = yield* engine.start(wf, 1)
        yield* Effect.flip(run.result)
        yield* run.resume({ step: "ask", resumeData: "yes" })
        expect(yield* run.result).toBe("yes")
        const spans = exporter.getFinishedSpans()
        const root = one(spans, "stepwise.run approve")
        const asks = named(spans, "stepwise.step ask")
        expect(asks.map((span) => span.attributes["stepwise.step.suspended"])).toEqual([true, undefined])
        expect(asks[0]!.status.code).not.toBe(SpanStatusCode.ERROR)
        for (const span of asks) {
          expect(span.spanContext().traceId).toBe(root.spanContext().traceId)
          expect(parentOf(span)).toBe(root.spanContext().spanId)
        }
      }).pipe(Effect.provide(engineLayer), Effect.provide(sdk(exporter)))
    })
  }

  it.effect("with no tracer provided, a run makes no spans and records no trace context", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      // What a step's code sees as its current span.
      let seen: unknown = "not run"
      const look = Step.make({
        id: "look",
        inputSchema: N,
        outputSchema: N,
        execute: ({ inputData }) =>
          Effect.map(Effect.option(Effect.currentSpan), (span) => {
            seen = span._tag
            return inputData
          })
      })
      const run = yield* engine.start(
        Workflow.make({ id: "untraced", inputSchema: N, outputSchema: N }).pipe(Workflow.then(look), Workflow.commit),
        1
      )
      expect(yield* run.result).toBe(1)
      expect(seen).toBe("None")
      expect((yield* Effect.flatMap(RunStore.RunStore, (store) => store.getRun(run.runId)))?.trace).toBeUndefined()
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("the run's trace context is recorded with the run", () => {
    const exporter = new InMemorySpanExporter()
    return Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const run = yield* engine.start(traced(), 1)
      yield* run.result
      const root = one(exporter.getFinishedSpans(), "stepwise.run traced")
      const record = yield* Effect.flatMap(RunStore.RunStore, (store) => store.getRun(run.runId))
      expect(record?.trace).toEqual({ traceId: root.spanContext().traceId, spanId: root.spanContext().spanId, sampled: true })
    }).pipe(Effect.provide(WorkflowEngine.layerMemory), Effect.provide(sdk(exporter)))
  })

  it.live("the spans of steps executed by another instance continue the trace of the run started on this one", () =>
    Effect.gen(function*() {
      // The client starts the run and executes nothing; the worker, with a tracer and an exporter of its own, walks
      // the run and executes every step. The worker's view of the store drops the trace context, as a store written
      // before tracing would: what it knows of the run's trace came with the commands.
      const { bus } = yield* EventBus.makeMemory
      const store = yield* RunStore.makeMemory()
      const forgetful = RunStore.RunStore.of({
        ...store,
        getRun: (runId) =>
          Effect.map(store.getRun(runId), (record) => {
            if (record === undefined) return undefined
            const { trace: _, ...rest } = record
            return rest
          })
      })
      const onClient = new InMemorySpanExporter()
      const onWorker = new InMemorySpanExporter()
      const workflow = traced()
      const services = (s: RunStore.RunStore["Type"]) =>
        Layer.merge(Layer.succeed(EventBus.EventBus, bus), Layer.succeed(RunStore.RunStore, s))
      yield* Layer.build(
        Layer.provideMerge(WorkflowEngine.register(workflow), WorkflowEngine.layerEventedWith({ workerId: "worker" })).pipe(
          Layer.provide(services(forgetful))
        )
      ).pipe(Effect.withTracer(yield* tracerTo(onWorker)))
      const client = Context.get(
        yield* Layer.build(WorkflowEngine.layerClient.pipe(Layer.provide(services(store)))),
        WorkflowEngine.WorkflowEngine
      )
      const run = yield* client.start(workflow, 1).pipe(Effect.withTracer(yield* tracerTo(onClient)))
      expect(yield* run.result).toBe(107)

      const root = one(onClient.getFinishedSpans(), "stepwise.run traced")
      expect(onClient.getFinishedSpans().map((span) => span.name)).toEqual(["stepwise.run traced"])
      const executed = onWorker.getFinishedSpans()
      expect(executed.map((span) => span.name).sort()).toEqual([
        "lookup",
        "stepwise.step a",
        "stepwise.step b",
        "stepwise.step c",
        "stepwise.step flaky",
        "stepwise.step flaky",
        "stepwise.step prepare",
        "stepwise.workflow inner"
      ])
      for (const span of executed) expect(span.spanContext().traceId).toBe(root.spanContext().traceId)
      for (const span of executed.filter((span) => span.name !== "stepwise.step c" && span.name !== "lookup")) {
        expect(parentOf(span)).toBe(root.spanContext().spanId)
      }
    }).pipe(Effect.scoped))
})
