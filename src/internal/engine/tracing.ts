/**
 * The spans of runs and steps, on both engines (the README's "Tracing" lists them for users), made when the app
 * provides a tracer (with Effect's built-in one, none: see `builtIn`).
 *
 * - `stepwise.run <workflowId>`: the run. Made by `start`, as a child of the caller's span when there is one; its
 *   ids are recorded with the run (`RunRecord.trace`) and carried by the evented engine's commands.
 * - `stepwise.step <stepId>`: one attempt of a step (a map node counts as a step), around the step's own code; a
 *   retried step has one per attempt, the failed ones with an error status.
 * - `stepwise.workflow <workflowId>`: a nested workflow, made where it starts; its ids are recorded with its step
 *   record, and its steps' spans are its children.
 * - `stepwise.condition <nodeId>`: the one evaluation of a branch's or loop's condition.
 *
 * No fiber lives for the whole of a run (the evented engine walks it by messages, in any instance; a suspended run
 * waits for a resume with nothing running; a run can be taken over after a crash), so the run's span does not last
 * the whole run. It covers the walk that `start` begins: in the default engine, the run's first walk, to the run's
 * end (or until it suspends, parks in a long sleep, or the process stops); in the evented engine, `start` itself
 * (the run recorded and its first command sent). Every later walk, in this process or another, makes its spans
 * children of the run's span through the recorded ids (`Tracer.externalSpan`), so that a run is one trace, and no
 * span stays open while a run waits.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import type * as RunStore from "../../RunStore.js"
import type { Halt } from "./executor.js"

/**
 * Effect's built-in tracer: what fibers have when the app provides none. Its spans go nowhere, and each costs
 * several microseconds of Effect's machinery (`withSpan` measured about 12 µs of CPU on a busy 2-core machine, where a
 * whole step costs some 80): with it, stepwise makes no spans and records no trace context.
 */
const builtIn: Tracer.Tracer = Effect.runSync(Effect.tracer)

/** `traced()` when the app provides a tracer (see `builtIn`), else `plain`. */
export const ifTracing = <A, E, R>(
  plain: Effect.Effect<A, E, R>,
  traced: () => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> => Effect.tracerWith((tracer) => tracer === builtIn ? plain : traced())

/** The attributes stepwise sets on its spans. */
export const attributes = {
  runId: "stepwise.run.id",
  workflowId: "stepwise.workflow.id",
  stepId: "stepwise.step.id",
  path: "stepwise.step.path",
  attempt: "stepwise.step.attempt",
  /** On a step attempt's span, when the step suspended (the attempt ends interrupted, which is not a failure). */
  suspended: "stepwise.step.suspended"
} as const

export const runSpanName = (workflowId: string): string => `stepwise.run ${workflowId}`
export const stepSpanName = (stepId: string): string => `stepwise.step ${stepId}`
export const workflowSpanName = (workflowId: string): string => `stepwise.workflow ${workflowId}`
export const conditionSpanName = (nodeId: string): string => `stepwise.condition ${nodeId}`

/** A trace context on the wire (the evented engine's commands). */
export const TraceContext: Schema.Schema<RunStore.TraceContext> = Schema.Struct({
  traceId: Schema.String,
  spanId: Schema.String,
  sampled: Schema.Boolean
})

/** The ids of a span, as the store and the commands carry them. */
export const contextOf = (span: Tracer.AnySpan): RunStore.TraceContext => ({
  traceId: span.traceId,
  spanId: span.spanId,
  sampled: span.sampled
})

/** A recorded span, as the parent of spans made elsewhere or later. */
export const parentOf = (trace: RunStore.TraceContext | undefined): Tracer.ExternalSpan | undefined =>
  trace === undefined ? undefined : Tracer.externalSpan(trace)

/**
 * The span under which a walk makes its spans: the run's, or a nested workflow's. A fiber ref, not the context's
 * `ParentSpan`: a fiber whose context has a span runs every stretch of its work inside the tracer's `context`
 * (OpenTelemetry's enters its context there each time), and the engine's own work needs none of that. Only user code
 * runs with a span of ours as the current one.
 */
const currentParent: FiberRef.FiberRef<Tracer.AnySpan | undefined> = FiberRef.unsafeMake<Tracer.AnySpan | undefined>(
  undefined
)

/** Runs `effect` (a walk) with its spans under `parent`, when there is one. */
export const under = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  parent: Tracer.AnySpan | RunStore.TraceContext | undefined
): Effect.Effect<A, E, R> =>
  parent === undefined ? effect : Effect.locally(effect, currentParent, "_tag" in parent ? parent : Tracer.externalSpan(parent))

/** Options of a span of ours, under the walk's parent. No stack trace is captured (it costs on every step). */
const optionsUnder = (parent: Tracer.AnySpan | undefined, attributes: Record<string, unknown>): Tracer.SpanOptions =>
  parent === undefined ? { attributes, captureStackTrace: false } : { attributes, parent, captureStackTrace: false }

/** A span of ours around `use`, ended with its exit. */
export const useSpan = <A, E, R>(
  name: string,
  attributes: Record<string, unknown>,
  use: (span: Tracer.Span) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  FiberRef.getWith(currentParent, (parent) => Effect.useSpan(name, optionsUnder(parent, attributes), use))

/** A span of ours, opened; the caller ends it (`end`). */
export const makeSpan = (name: string, attributes: Record<string, unknown>): Effect.Effect<Tracer.Span> =>
  FiberRef.getWith(currentParent, (parent) => Effect.makeSpan(name, optionsUnder(parent, attributes)))

/** A run's span, made by `start`: a child of the caller's span, if any (the walk's spans are children of this one). */
export const makeRunSpan = (workflowId: string): Effect.Effect<Tracer.Span> =>
  Effect.makeSpan(runSpanName(workflowId), { attributes: { [attributes.workflowId]: workflowId }, captureStackTrace: false })

/** Ends a span that the engine opened by hand (`Effect.makeSpan`), once. */
export const end = (span: Tracer.Span, exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> =>
  Effect.flatMap(Clock.currentTimeNanos, (now) =>
    Effect.sync(() => {
      if (span.status._tag === "Started") span.end(now, exit)
    }))

/**
 * How a walk's exit ends a span: a step's failure fails it, with the step's cause; a halt that only stops the walk
 * for now (pending steps, a suspension, a step another execution holds) does not.
 */
export const walkExit = (exit: Exit.Exit<unknown, Halt>): Exit.Exit<unknown, unknown> => {
  if (Exit.isSuccess(exit)) return exit
  const halt = Cause.failureOption(exit.cause)
  if (halt._tag === "None") return exit
  return halt.value._tag === "StepFailure" ? Exit.failCause(halt.value.cause) : Exit.void
}
