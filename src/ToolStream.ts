/**
 * The `writer` every piece of user code in a workflow receives: in a step's `execute`, a branch or loop condition,
 * a sleep-duration function, a sleepUntil-date function and a `map` function.
 *
 * `write(x)` publishes a `workflow-step-output` event wrapping `x`; `custom(e)` publishes `e` unchanged. Both land
 * in the run's event log and on the channel `workflow.events.v2.{runId}` inside `{ type: "watch", runId, data }`.
 *
 * ```ts
 * execute: ({ writer }) =>
 *   Effect.gen(function*() {
 *     yield* writer.write({ status: "thinking" })
 *     yield* writer.custom({ type: "data-progress", data: { pct: 50 } })
 *     yield* Stream.run(modelChunks, writer.sink)
 *   })
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Sink from "effect/Sink"
import type { WorkflowEvent } from "./WorkflowEvent.js"
import { builtinTypes } from "./WorkflowEvent.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface ToolStream<A = unknown> {
  /** Always `"workflow-step"`. */
  readonly prefix: "workflow-step"
  /** Fresh for every call site: each step execution, condition, sleep function or map call. */
  readonly callId: string
  /** The step id, or for conditions, sleeps and maps the node's id. */
  readonly name: string
  readonly runId: string
  /**
   * Publishes `{ type: "workflow-step-output", runId, from: "USER", payload: { output: data, runId, stepName } }`;
   * in a step's `execute`, the payload also carries `attempt` (1, then 2, 3 ... on retries), so that readers can
   * tell what a failed attempt wrote from what its retry writes.
   */
  readonly write: (data: A) => Effect.Effect<void>
  /**
   * Publishes `event` unchanged. Its `type` must not be one of the runtime's own event types (`workflow-start`,
   * `workflow-finish`, ...): a reader would mistake it for the real thing, so that is a defect of the step.
   */
  readonly custom: <C extends { readonly type: string }>(event: C) => Effect.Effect<void>
  /** `Stream.run(chunks, writer.sink)` writes every element with `write`. */
  readonly sink: Sink.Sink<void, A>
  /** A Web `WritableStream` whose writes go through `write`, for code that speaks Web streams. */
  readonly toWritableStream: () => WritableStream<A>
}

/**
 * What identifies a writer.
 *
 * @since 0.1.0
 * @category models
 */
export interface Meta {
  readonly callId: string
  readonly name: string
  readonly runId: string
  /** The current attempt, for a step's writer. */
  readonly attempt?: () => number
}

/**
 * Builds a writer over `emit`, the function that records and publishes one event of the run. `emit` needs nothing
 * from the context, so the Web side (`toWritableStream`) can run it on its own.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <A = unknown>(meta: Meta, emit: (event: WorkflowEvent) => Effect.Effect<void>): ToolStream<A> => {
  const { attempt, callId, name, runId } = meta
  const write = (data: A) =>
    emit({
      type: "workflow-step-output",
      runId,
      from: "USER",
      payload: attempt === undefined
        ? { output: data, runId, stepName: name }
        : { output: data, runId, stepName: name, attempt: attempt() }
    })
  const custom = <C extends { readonly type: string }>(event: C) =>
    builtinTypes.has(event.type)
      ? Effect.dieMessage(
        `writer.custom in "${name}" (run ${runId}) was given an event of type "${event.type}", which is reserved ` +
          `for the runtime's own events. Use writer.write for step output, or a type of your own such as "data-${event.type}".`
      )
      : emit(event as C & WorkflowEvent)
  let sink: Sink.Sink<void, A> | undefined
  return {
    prefix: "workflow-step",
    callId,
    name,
    runId,
    write,
    custom,
    get sink() {
      return sink ??= Sink.forEach(write)
    },
    toWritableStream: () => new WritableStream<A>({ write: (chunk) => Effect.runPromise(write(chunk)) })
  }
}
