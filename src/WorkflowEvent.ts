/**
 * The events of a run, as a Schema union. Each event carries `runId` and `from`; events a step passes to
 * `writer.custom` are delivered exactly as written and are typed `CustomEvent`.
 *
 * ```ts
 * Stream.runForEach(run.events(), (event) => {
 *   if (!WorkflowEvent.isBuiltin(event)) return Console.log("custom", event.type)
 *   switch (event.type) {
 *     case "workflow-step-output": return Console.log(event.payload.stepName, event.payload.output)
 *     case "workflow-finish": return Console.log("done:", event.payload.workflowStatus)
 *     default: return Effect.void
 *   }
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * An error as it travels in events and the store.
 *
 * @since 0.1.0
 * @category schemas
 */
export const SerializedError = Schema.Struct({
  name: Schema.String,
  message: Schema.String
})

/**
 * @since 0.1.0
 * @category models
 */
export type SerializedError = typeof SerializedError.Type

const Workflow = Schema.Literal("WORKFLOW")

/**
 * @since 0.1.0
 * @category schemas
 */
export const WorkflowStart = Schema.Struct({
  type: Schema.Literal("workflow-start"),
  runId: Schema.String,
  from: Workflow,
  payload: Schema.Struct({ workflowId: Schema.String })
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const StepStart = Schema.Struct({
  type: Schema.Literal("workflow-step-start"),
  runId: Schema.String,
  from: Workflow,
  payload: Schema.Struct({
    id: Schema.String,
    stepCallId: Schema.String,
    status: Schema.Literal("running"),
    payload: Schema.Unknown,
    startedAt: Schema.Number
  })
})

/**
 * What `writer.write(output)` publishes.
 *
 * @since 0.1.0
 * @category schemas
 */
export const StepOutput = Schema.Struct({
  type: Schema.Literal("workflow-step-output"),
  runId: Schema.String,
  from: Schema.Literal("USER"),
  payload: Schema.Struct({
    output: Schema.Unknown,
    runId: Schema.String,
    stepName: Schema.String,
    /** Which attempt of the step wrote it (absent for conditions and sleep functions). */
    attempt: Schema.optional(Schema.Number)
  })
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const StepResult = Schema.Struct({
  type: Schema.Literal("workflow-step-result"),
  runId: Schema.String,
  from: Workflow,
  payload: Schema.Struct({
    id: Schema.String,
    stepCallId: Schema.String,
    status: Schema.Literal("success", "failed", "suspended"),
    output: Schema.optional(Schema.Unknown),
    error: Schema.optional(SerializedError),
    endedAt: Schema.Number
  })
})

/**
 * Emitted when a sleep or sleepUntil node starts waiting; `until` is the wake-up time in epoch milliseconds.
 *
 * @since 0.1.0
 * @category schemas
 */
export const StepWaiting = Schema.Struct({
  type: Schema.Literal("workflow-step-waiting"),
  runId: Schema.String,
  from: Workflow,
  payload: Schema.Struct({ id: Schema.String, startedAt: Schema.Number, until: Schema.Number })
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const StepSuspended = Schema.Struct({
  type: Schema.Literal("workflow-step-suspended"),
  runId: Schema.String,
  from: Workflow,
  payload: Schema.Struct({ id: Schema.String, suspendPayload: Schema.Unknown })
})

/**
 * @since 0.1.0
 * @category schemas
 */
export const WorkflowCanceled = Schema.Struct({
  type: Schema.Literal("workflow-canceled"),
  runId: Schema.String,
  from: Workflow,
  payload: Schema.Struct({})
})

/**
 * The last event of every run.
 *
 * @since 0.1.0
 * @category schemas
 */
export const WorkflowFinish = Schema.Struct({
  type: Schema.Literal("workflow-finish"),
  runId: Schema.String,
  from: Workflow,
  payload: Schema.Struct({
    workflowStatus: Schema.Literal("success", "failed", "canceled"),
    output: Schema.optional(Schema.Unknown),
    error: Schema.optional(SerializedError)
  })
})

/**
 * The events the runtime itself emits.
 *
 * @since 0.1.0
 * @category schemas
 */
export const BuiltinEvent = Schema.Union(
  WorkflowStart,
  StepStart,
  StepOutput,
  StepResult,
  StepWaiting,
  StepSuspended,
  WorkflowCanceled,
  WorkflowFinish
)

/**
 * @since 0.1.0
 * @category models
 */
export type BuiltinEvent = typeof BuiltinEvent.Type

/**
 * An event a step passed to `writer.custom`, delivered unchanged.
 *
 * @since 0.1.0
 * @category schemas
 */
export const CustomEvent = Schema.Struct({ type: Schema.String }, Schema.Record({ key: Schema.String, value: Schema.Unknown }))

/**
 * @since 0.1.0
 * @category models
 */
export type CustomEvent = typeof CustomEvent.Type

/**
 * Any event of a run. Narrow with `isBuiltin` first, then by `type`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const WorkflowEvent = Schema.Union(BuiltinEvent, CustomEvent)

/**
 * @since 0.1.0
 * @category models
 */
export type WorkflowEvent = typeof WorkflowEvent.Type

/**
 * The `type` of every builtin event. `writer.custom` refuses these, so a custom event can never be mistaken for one.
 *
 * @since 0.1.0
 * @category models
 */
export const builtinTypes: ReadonlySet<string> = new Set<BuiltinEvent["type"]>([
  "workflow-start",
  "workflow-step-start",
  "workflow-step-output",
  "workflow-step-result",
  "workflow-step-waiting",
  "workflow-step-suspended",
  "workflow-canceled",
  "workflow-finish"
])

/**
 * Whether an event was emitted by the runtime (as opposed to `writer.custom`). Narrows to `BuiltinEvent`.
 *
 * @since 0.1.0
 * @category guards
 */
export const isBuiltin = (event: WorkflowEvent): event is BuiltinEvent => builtinTypes.has(event.type)

/**
 * A refinement for one builtin event type, handy in `Stream.filter`.
 *
 * @since 0.1.0
 * @category guards
 */
export const is = <T extends BuiltinEvent["type"]>(type: T) =>
(event: WorkflowEvent): event is Extract<BuiltinEvent, { readonly type: T }> => event.type === type && isBuiltin(event)

/**
 * Whether an event came from `writer.custom`, for `events.filter(WorkflowEvent.isCustom)`. In an `if`, narrow with
 * `!WorkflowEvent.isBuiltin(event)` instead: every builtin event also fits the open `CustomEvent` shape, so this
 * guard cannot exclude them from the other branch.
 *
 * @since 0.1.0
 * @category guards
 */
export const isCustom = (event: WorkflowEvent): event is CustomEvent => !builtinTypes.has(event.type)
