/**
 * A step: a typed unit of work with an input schema, an output schema and an `execute` Effect.
 *
 * ```ts
 * const fetchUser = Step.make({
 *   id: "fetch-user",
 *   inputSchema: Schema.Struct({ userId: Schema.String }),
 *   outputSchema: Schema.Struct({ name: Schema.String }),
 *   execute: ({ inputData, writer }) =>
 *     Effect.gen(function*() {
 *       yield* writer.write({ status: "fetching", userId: inputData.userId })
 *       return { name: "Ada" }
 *     })
 * })
 * ```
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import { type Pipeable, pipeArguments } from "effect/Pipeable"
import type * as Schedule from "effect/Schedule"
import type * as Schema from "effect/Schema"
import type { RunContext } from "./RunContext.js"
import type { ToolStream } from "./ToolStream.js"

/**
 * @since 0.1.0
 * @category symbols
 */
export const TypeId: unique symbol = Symbol.for("stepwise/Step")

/**
 * @since 0.1.0
 * @category symbols
 */
export type TypeId = typeof TypeId

/**
 * Looks up the output of a step that already ran in this workflow: pass the step itself for a typed answer, or its
 * id. `undefined` when it has not run (yet).
 *
 * @since 0.1.0
 * @category models
 */
export interface GetStepResult {
  <S extends { readonly id: string; readonly [TypeId]: { readonly _O: (_: never) => unknown } }>(
    step: S
  ): ReturnType<S[TypeId]["_O"]> | undefined
  (stepId: string): unknown
}

/**
 * What every piece of user code in a workflow receives: steps, conditions, sleep functions and maps.
 *
 * @since 0.1.0
 * @category models
 */
export interface BaseContext<I> {
  readonly inputData: I
  readonly runId: string
  readonly workflowId: string
  /** The input of the (innermost) workflow this code runs in. */
  readonly getInitData: <T = unknown>() => T
  readonly getStepResult: GetStepResult
  readonly writer: ToolStream
}

/**
 * What a step's `execute` receives.
 *
 * @since 0.1.0
 * @category models
 */
export interface StepContext<I, Resume = unknown, Suspend = unknown> extends BaseContext<I> {
  /** The data given to `run.resume` when this step is resumed after a `suspend`; otherwise `undefined`. */
  readonly resumeData: Resume | undefined
  /**
   * Ends this execution of the step as suspended with `payload`; the run waits for `run.resume`. Finalizers run.
   * The step's `execute` runs again on resume, with `resumeData` set.
   */
  readonly suspend: (payload: Suspend) => Effect.Effect<never>
  /** 1 on the first execution, then 2, 3, ... on retries. */
  readonly attempt: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Step<out Id extends string, in out I, in out O, out E = never, out R = never, Resume = unknown, Suspend = unknown>
  extends Pipeable
{
  readonly [TypeId]: {
    readonly _I: (_: I) => I
    readonly _O: (_: never) => O
    readonly _E: (_: never) => E
    readonly _R: (_: never) => R
  }
  readonly _tag: "Step"
  readonly id: Id
  readonly inputSchema: Schema.Schema.AnyNoContext
  readonly outputSchema: Schema.Schema.AnyNoContext
  readonly resumeSchema: Schema.Schema.AnyNoContext | undefined
  readonly suspendSchema: Schema.Schema.AnyNoContext | undefined
  readonly retry: Schedule.Schedule<unknown, unknown> | undefined
  readonly timeout: Duration.DurationInput | undefined
  readonly execute: (ctx: StepContext<I, Resume, Suspend>) => Effect.Effect<O, E, R | RunContext>
}

/**
 * Any step, whatever its types.
 *
 * @since 0.1.0
 * @category models
 */
export interface Any {
  readonly _tag: "Step"
  readonly id: string
  readonly [TypeId]: {
    readonly _O: (_: never) => unknown
  }
  readonly inputSchema: Schema.Schema.AnyNoContext
  readonly outputSchema: Schema.Schema.AnyNoContext
  readonly resumeSchema: Schema.Schema.AnyNoContext | undefined
  readonly suspendSchema: Schema.Schema.AnyNoContext | undefined
  readonly retry: Schedule.Schedule<unknown, unknown> | undefined
  readonly timeout: Duration.DurationInput | undefined
  readonly execute: (ctx: StepContext<never, never, unknown>) => Effect.Effect<unknown, unknown, unknown>
}

/**
 * @since 0.1.0
 * @category type-level
 */
export type Input<S> = S extends { readonly [TypeId]: { readonly _I: (_: infer I) => unknown } } ? I : never

/**
 * @since 0.1.0
 * @category type-level
 */
export type Output<S> = S extends { readonly [TypeId]: { readonly _O: (_: never) => infer O } } ? O : never

/**
 * @since 0.1.0
 * @category type-level
 */
export type Error<S> = S extends { readonly [TypeId]: { readonly _E: (_: never) => infer E } } ? E : never

/**
 * @since 0.1.0
 * @category type-level
 */
export type Context<S> = S extends { readonly [TypeId]: { readonly _R: (_: never) => infer R } } ? R : never

/**
 * The options of `Step.make`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<Id extends string, I, IE, O, OE, E, R, Resume, ResumeE, Suspend, SuspendE> {
  /** Unique within a workflow: it names the step in events, in `getStepResult` and in `run.resume`. */
  readonly id: Id
  readonly inputSchema: Schema.Schema<I, IE>
  readonly outputSchema: Schema.Schema<O, OE>
  /** Validates the data given to `run.resume` for this step. */
  readonly resumeSchema?: Schema.Schema<Resume, ResumeE>
  /** Validates the payload given to `suspend`. */
  readonly suspendSchema?: Schema.Schema<Suspend, SuspendE>
  /** Re-runs a failing `execute` (typed failures only, not defects) on this schedule. */
  readonly retry?: Schedule.Schedule<unknown, NoInfer<E>>
  /** Each attempt of `execute` fails with a `TimeoutException` when it takes longer than this. */
  readonly timeout?: Duration.DurationInput
  readonly execute: (ctx: StepContext<I, Resume, Suspend>) => Effect.Effect<NoInfer<O>, E, R>
}

const proto = {
  _tag: "Step",
  pipe() {
    return pipeArguments(this, arguments)
  }
}

const validId = /^[A-Za-z0-9_][A-Za-z0-9_.:-]*$/

/**
 * Checks an id given to `Step.make` or `Workflow.make`, with a message that says what to change.
 *
 * @since 0.1.0
 * @category utils
 */
export const assertValidId = (kind: string, id: unknown): void => {
  if (typeof id !== "string" || !validId.test(id)) {
    throw new TypeError(
      `${kind} id ${JSON.stringify(id)} is invalid: use letters, digits and "_", ".", ":" or "-" ` +
        `(not starting with a punctuation mark), for example "fetch-user".`
    )
  }
}

/**
 * Defines a step. `execute` may require any services `R`; they flow into the workflow's requirements and are
 * provided by whoever starts it. `RunContext` is provided by the runtime and never leaks into `R`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <
  const Id extends string,
  I,
  IE,
  O,
  OE,
  E = never,
  R = never,
  Resume = unknown,
  ResumeE = unknown,
  Suspend = unknown,
  SuspendE = unknown
>(
  options: Options<Id, I, IE, O, OE, E, R, Resume, ResumeE, Suspend, SuspendE>
): Step<Id, I, O, E, Exclude<R, RunContext>, Resume, Suspend> => {
  assertValidId("Step", options.id)
  if (typeof options.execute !== "function") {
    throw new TypeError(`Step "${options.id}" needs an execute function returning an Effect.`)
  }
  const step = Object.create(proto)
  step.id = options.id
  step.inputSchema = options.inputSchema
  step.outputSchema = options.outputSchema
  step.resumeSchema = options.resumeSchema
  step.suspendSchema = options.suspendSchema
  step.retry = options.retry
  step.timeout = options.timeout
  step.execute = options.execute
  step[TypeId] = variance
  return step
}

const variance = { _I: (_: never) => _, _O: (_: never) => _, _E: (_: never) => _, _R: (_: never) => _ }

/**
 * Whether a value is a step.
 *
 * @since 0.1.0
 * @category guards
 */
export const isStep = (u: unknown): u is Any => typeof u === "object" && u !== null && TypeId in u
