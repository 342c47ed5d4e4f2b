/**
 * A handle on one run: its result, status, events and streams. Readers are Effect Streams; convert them to Web
 * streams only at the boundary, with `Run.toReadableStream`.
 *
 * ```ts
 * const run = yield* engine.start(chat, { prompt: "hi" })
 * yield* Stream.runForEach(run.readable<string>(), (chunk) => Console.log(chunk))
 * const answer = yield* run.result
 * ```
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import type { RunStatus } from "./RunStore.js"
import type {
  RunCanceledError,
  RunResumeError,
  RunStreamError,
  RunSuspendedError,
  StepFailedError
} from "./WorkflowError.js"
import type { WorkflowEvent } from "./WorkflowEvent.js"

export type {
  /**
   * @since 0.1.0
   * @category models
   */
  RunStatus
} from "./RunStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Run<O, E> {
  readonly runId: string
  readonly workflowId: string
  /**
   * Waits for the run to settle: its output, or why it has none. A suspended run fails with `RunSuspendedError`
   * (call it again after `resume`).
   */
  readonly result: Effect.Effect<O, StepFailedError<E> | RunCanceledError | RunSuspendedError>
  readonly status: Effect.Effect<RunStatus>
  /** The run's events from index 0 (or `startIndex`; negative: the last N), ending after `workflow-finish`. */
  readonly events: (options?: { readonly startIndex?: number }) => Stream.Stream<WorkflowEvent, RunStreamError>
  /**
   * One of the run's streams (`namespace` omitted: the default one), ending when that stream is closed or the run
   * has ended (succeeded, failed or been canceled; a suspended run has not ended).
   */
  readonly readable: <A = unknown>(
    options?: { readonly namespace?: string; readonly startIndex?: number }
  ) => Stream.Stream<A, RunStreamError>
  /** How many chunks a stream holds now (its tail index). */
  readonly streamSize: (options?: { readonly namespace?: string }) => Effect.Effect<number, RunStreamError>
  /** Interrupts the run (finalizers in its steps run), records it `canceled` and emits its last events. */
  readonly cancel: Effect.Effect<void>
  /** Continues a suspended step with `resumeData` (validated with the step's `resumeSchema`). */
  readonly resume: (options: { readonly step: string; readonly resumeData: unknown }) => Effect.Effect<void, RunResumeError>
}

/**
 * Converts an Effect stream of a run (`run.readable()`, `run.events()`) into a Web `ReadableStream`, for HTTP
 * responses, browsers and the AI SDK. Canceling the Web stream interrupts the Effect stream.
 *
 * @since 0.1.0
 * @category conversions
 */
export const toReadableStream = <A, E>(stream: Stream.Stream<A, E>): ReadableStream<A> =>
  Stream.toReadableStream(stream)

/**
 * Encodes a run's stream as Server-Sent Events (`data: <json>\n\n` per item), ready for an HTTP body.
 *
 * @since 0.1.0
 * @category conversions
 */
export const toSSE = <A, E>(stream: Stream.Stream<A, E>): ReadableStream<Uint8Array> => {
  const encoder = new TextEncoder()
  return Stream.toReadableStream(
    Stream.map(stream, (item) => encoder.encode(`data: ${JSON.stringify(item)}\n\n`))
  )
}
