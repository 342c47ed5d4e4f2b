/**
 * Every failure a user of stepwise can meet, as tagged errors with messages a person can act on.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Schema from "effect/Schema"

/**
 * `start` was called with input that does not match the workflow's `inputSchema`, or with a `runId` that already
 * belongs to a run of another workflow. No run was created.
 *
 * @since 0.1.0
 * @category errors
 */
export class WorkflowInputError extends Schema.TaggedError<WorkflowInputError>()("WorkflowInputError", {
  workflowId: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Cannot start workflow "${this.workflowId}": ${this.reason}. No run was created.`
  }
}

/**
 * A step (or a condition, sleep function or map inside a workflow) failed, and with it the run.
 * `cause` holds the step's own typed failure `E`, or the defect it died with.
 *
 * @since 0.1.0
 * @category errors
 */
export class StepFailedError<E = unknown> extends Data.TaggedError("StepFailedError")<{
  readonly runId: string
  readonly stepId: string
  readonly cause: Cause.Cause<E>
}> {
  override get message(): string {
    return `Step "${this.stepId}" failed in run ${this.runId}: ${describeCause(this.cause)}`
  }
}

/**
 * The run was canceled with `run.cancel` before it finished.
 *
 * @since 0.1.0
 * @category errors
 */
export class RunCanceledError extends Schema.TaggedError<RunCanceledError>()("RunCanceledError", {
  runId: Schema.String
}) {
  override get message(): string {
    return `Run ${this.runId} was canceled before it finished.`
  }
}

/**
 * The run is suspended: one or more steps called `suspend` and wait for `run.resume({ step, resumeData })`.
 *
 * @since 0.1.0
 * @category errors
 */
export class RunSuspendedError extends Schema.TaggedError<RunSuspendedError>()("RunSuspendedError", {
  runId: Schema.String,
  suspended: Schema.Array(Schema.Struct({ step: Schema.String, path: Schema.String, payload: Schema.Unknown }))
}) {
  override get message(): string {
    const steps = this.suspended.map((s) => `"${s.step}"`).join(", ")
    return `Run ${this.runId} is suspended at ${steps}; call run.resume({ step, resumeData }) to continue it.`
  }
}

/**
 * No run with this id exists in the `RunStore` (it never did, or retention removed it).
 *
 * @since 0.1.0
 * @category errors
 */
export class RunNotFoundError extends Schema.TaggedError<RunNotFoundError>()("RunNotFoundError", {
  runId: Schema.String
}) {
  override get message(): string {
    return `No run with id ${this.runId} exists in the run store (it never existed, or retention removed it).`
  }
}

/**
 * `run.resume` was refused: the run is not suspended at that step, the resume data does not match the step's
 * `resumeSchema`, or this process does not know the run's workflow.
 *
 * @since 0.1.0
 * @category errors
 */
export class RunResumeError extends Schema.TaggedError<RunResumeError>()("RunResumeError", {
  runId: Schema.String,
  step: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Cannot resume step "${this.step}" of run ${this.runId}: ${this.reason}`
  }
}

/**
 * A write to a run stream (from `Workflow.getWritable`) after that stream was closed.
 *
 * @since 0.1.0
 * @category errors
 */
export class StreamClosedError extends Schema.TaggedError<StreamClosedError>()("StreamClosedError", {
  runId: Schema.String,
  namespace: Schema.String
}) {
  override get message(): string {
    const name = this.namespace === "" ? "default stream" : `stream "${this.namespace}"`
    return `Cannot write to the ${name} of run ${this.runId}: it is closed. Write before closing it.`
  }
}

/**
 * The `EventBus` could not publish or subscribe.
 *
 * @since 0.1.0
 * @category errors
 */
export class EventBusError extends Schema.TaggedError<EventBusError>()("EventBusError", {
  channel: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Event bus failure on channel "${this.channel}": ${this.reason}`
  }
}

/**
 * The `RunStore` could not read or write (for example the database is down).
 *
 * @since 0.1.0
 * @category errors
 */
export class RunStoreError extends Schema.TaggedError<RunStoreError>()("RunStoreError", {
  operation: Schema.String,
  runId: Schema.optional(Schema.String),
  reason: Schema.String
}) {
  override get message(): string {
    const run = this.runId === undefined ? "" : ` for run ${this.runId}`
    return `Run store failed to ${this.operation}${run}: ${this.reason}`
  }
}

/**
 * A write made under a step's claim was refused because the claim no longer holds: another execution claimed the
 * step since (a redelivered command, or the run's owner sending the step again), or its result is recorded. The
 * `RunStore` answers it; the engines handle it (the attempt that made the write stops and reports nothing), so a run's
 * result and user code never meet it.
 *
 * @since 0.1.0
 * @category errors
 */
export class StepFencedError extends Schema.TaggedError<StepFencedError>()("StepFencedError", {
  runId: Schema.String,
  fences: Schema.Array(Schema.Struct({ path: Schema.String, stepCallId: Schema.String }))
}) {
  override get message(): string {
    const fences = this.fences.map((f) => `path ${f.path} (call ${f.stepCallId})`).join(", ")
    return `Run ${this.runId}: the claim on ${fences} no longer holds (another execution claimed the step, or its ` +
      `result is recorded); the write made under it was refused.`
  }
}

/**
 * Reading a run's events or one of its streams failed, because the store or the bus failed underneath.
 *
 * @since 0.1.0
 * @category errors
 */
export class RunStreamError extends Schema.TaggedError<RunStreamError>()("RunStreamError", {
  runId: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Reading run ${this.runId} failed: ${this.reason}`
  }
}

/**
 * A one-line description of a cause, for error messages: the failure's own message where it has one.
 *
 * @since 0.1.0
 * @category utils
 */
export const describeCause = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (failure._tag === "Some") return describeValue(failure.value)
  const defect = Cause.dieOption(cause)
  if (defect._tag === "Some") return describeValue(defect.value)
  if (Cause.isInterruptedOnly(cause)) return "interrupted"
  return Cause.pretty(cause).split("\n")[0] ?? "unknown failure"
}

const describeValue = (value: unknown): string => {
  if (value instanceof Error) return value.message === "" ? value.name : value.message
  if (typeof value === "object" && value !== null) {
    if ("message" in value && typeof value.message === "string") return value.message
    if ("_tag" in value && typeof value._tag === "string") return value._tag
    try {
      return JSON.stringify(value)
    } catch {
      return String(value)
    }
  }
  return String(value)
}
