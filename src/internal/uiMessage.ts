/**
 * A run's events as AI SDK UI-message chunks (the `ai` package's `UIMessageChunk`, protocol v1). The mapping is
 * per event and keeps no state, so a reader that resumes from any event index gets exactly the chunks it missed.
 */
import { isBuiltin, type WorkflowEvent } from "../WorkflowEvent.js"

/** A UI-message chunk: an object with a `type` (the AI SDK validates the rest). */
export interface UIMessageChunk {
  readonly type: string
  readonly [key: string]: unknown
}

/** The chunk types of the AI SDK's protocol that a step's `writer.custom` passes through unchanged. */
const passThrough: ReadonlySet<string> = new Set([
  "start",
  "text-start",
  "text-delta",
  "text-end",
  "reasoning-start",
  "reasoning-delta",
  "reasoning-end",
  "tool-input-start",
  "tool-input-delta",
  "tool-input-available",
  "tool-input-error",
  "tool-output-available",
  "tool-output-error",
  "source-url",
  "source-document",
  "file",
  "start-step",
  "finish-step",
  "message-metadata",
  "error",
  "abort"
])

const stepPart = (runId: string, step: string, data: Record<string, unknown>): UIMessageChunk => ({
  type: "data-workflow-step",
  id: `${runId}:${step}`,
  data: { step, ...data }
})

/**
 * The chunks one event becomes:
 * - `workflow-start`: `start` (the message id is the run id);
 * - a step's start, result, wait and suspension: a `data-workflow-step` part per step id, updated in place;
 * - `writer.write` output: a transient `data-step-output` part (delivered to `onData`, not kept in the message);
 * - `writer.custom` events of the protocol's types: unchanged (a step's own `finish` only carries its metadata, since
 *   the run's end finishes the message); other custom events: a `data-<type>` part holding the event;
 * - `workflow-finish`: `finish`, after an `error` when the run failed, or `abort` when it was canceled.
 */
export const chunksOf = (event: WorkflowEvent): ReadonlyArray<UIMessageChunk> => {
  if (isBuiltin(event)) {
    switch (event.type) {
      case "workflow-start":
        return [{ type: "start", messageId: event.runId }]
      case "workflow-step-start":
        return [stepPart(event.runId, event.payload.id, { status: "running" })]
      case "workflow-step-result":
        return [stepPart(event.runId, event.payload.id, {
          status: event.payload.status,
          ...(event.payload.error === undefined ? {} : { error: event.payload.error.message })
        })]
      case "workflow-step-waiting":
        return [stepPart(event.runId, event.payload.id, { status: "waiting", until: event.payload.until })]
      case "workflow-step-suspended":
        return [stepPart(event.runId, event.payload.id, {
          status: "suspended",
          suspendPayload: event.payload.suspendPayload
        })]
      case "workflow-step-output":
        return [{
          type: "data-step-output",
          data: { step: event.payload.stepName, output: event.payload.output },
          transient: true
        }]
      case "workflow-canceled":
        return []
      case "workflow-finish":
        switch (event.payload.workflowStatus) {
          case "canceled":
            return [{ type: "abort" }]
          case "failed":
            return [{ type: "error", errorText: event.payload.error?.message ?? "the run failed" }, { type: "finish" }]
          case "success":
            return [{ type: "finish" }]
        }
    }
  }
  if (passThrough.has(event.type) || event.type.startsWith("data-")) return [event as UIMessageChunk]
  if (event.type === "finish") {
    const metadata = (event as { readonly messageMetadata?: unknown }).messageMetadata
    return metadata === undefined ? [] : [{ type: "message-metadata", messageMetadata: metadata }]
  }
  return [{ type: `data-${event.type}`, data: event }]
}
