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
import * as UIMessage from "./internal/uiMessage.js"

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

/**
 * A chunk of the AI SDK's UI message stream protocol (`UIMessageChunk` in the `ai` package): `start`,
 * `text-delta`, `tool-output-available`, `data-*`, `finish` ...
 *
 * @since 0.1.0
 * @category models
 */
export type UIMessageChunk = UIMessage.UIMessageChunk

/**
 * Turns a run's events (`run.events()`) into the AI SDK's UI message chunks, so that `readUIMessageStream`, `useChat`
 * or any AI SDK UI renders the run as one assistant message:
 *
 * - `workflow-start` becomes `start` (the message id is the run id) and `workflow-finish` becomes `finish` (after
 *   an `error` part when the run failed; `abort` when it was canceled);
 * - what steps pass to `writer.custom` with the protocol's types (`text-delta`, `tool-input-available`, `data-*` ...)
 *   goes through unchanged; other custom events become a `data-<type>` part holding the event;
 * - each step's progress is a `data-workflow-step` part (id `<runId>:<stepId>`, updated in place) and
 *   `writer.write` output a transient `data-step-output` part.
 *
 * Each event maps on its own, so a reader that resumes from an event index misses nothing and repeats nothing.
 * Over HTTP, `GET /runs/{runId}/ui` (`stepwise/http`) serves it as Server-Sent Events with the
 * `x-vercel-ai-ui-message-stream: v1` header.
 *
 * @since 0.1.0
 * @category conversions
 */
export const toUIMessageStream = <E, R>(
  events: Stream.Stream<WorkflowEvent, E, R>
): Stream.Stream<UIMessageChunk, E, R> => Stream.mapConcat(events, UIMessage.chunksOf)
