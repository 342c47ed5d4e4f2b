/**
 * The run a piece of user code is executing in. The step executor provides it to every step, condition, sleep
 * function and map, which is what lets `Workflow.getWritable` work anywhere user code runs.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Sink from "effect/Sink"
import type { StreamClosedError } from "./WorkflowError.js"

/**
 * One of the run's own output streams: the default one (namespace `""`) or a named one.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunWritable<A> {
  readonly namespace: string
  /** Appends a chunk. Fails with `StreamClosedError` once the stream is closed. */
  readonly write: (chunk: A) => Effect.Effect<void, StreamClosedError>
  /** Closes the stream: its readers end once they have read every chunk. Closing twice does nothing. */
  readonly close: Effect.Effect<void>
  /** `Stream.run(chunks, writable.sink)` writes every element. A write after close is a defect of the sink. */
  readonly sink: Sink.Sink<void, A>
  /** A Web `WritableStream` over the same stream; closing it closes the run stream. */
  readonly toWritableStream: () => WritableStream<A>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class RunContext extends Context.Tag("stepwise/RunContext")<RunContext, {
  readonly runId: string
  readonly workflowId: string
  readonly writable: (namespace: string) => RunWritable<unknown>
}>() {}
