/**
 * Workflows: typed graphs of steps, built with pipeable data-last builders and closed with `commit`.
 *
 * ```ts
 * const wf = Workflow.make({ id: "greet", inputSchema, outputSchema }).pipe(
 *   Workflow.then(fetchUser),        // `Workflow.andThen` inside this module
 *   Workflow.sleep("1 second"),
 *   Workflow.then(greet),
 *   Workflow.commit
 * )
 * ```
 *
 * Each builder's input is the previous node's output, checked at compile time. A committed workflow can be used
 * wherever a step is expected (it runs inside the parent run, and its writer events reach the parent's channel).
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import { type Pipeable, pipeArguments } from "effect/Pipeable"
import type * as Schema from "effect/Schema"
import * as Mermaid from "./internal/mermaid.js"
import type { StepRecord } from "./internal/store/model.js"
import type { RunWritable } from "./RunContext.js"
import { RunContext } from "./RunContext.js"
import * as Step from "./Step.js"

export {
  /**
   * @since 0.1.0
   * @category tags
   */
  RunContext,
  /**
   * @since 0.1.0
   * @category models
   */
  type RunWritable
} from "./RunContext.js"

/**
 * A step or a committed workflow: anything `then`, `parallel`, `branch`, the loops and `foreach` accept.
 *
 * @since 0.1.0
 * @category models
 */
export type StepLike = Step.Any | Any

/**
 * The context of conditions, sleep functions and maps: `inputData` is the previous node's output.
 *
 * @since 0.1.0
 * @category models
 */
export type Context<I> = Step.BaseContext<I>

/**
 * A function of the graph that is not a step: a condition, a sleep or sleepUntil function, a map.
 *
 * @since 0.1.0
 * @category models
 */
export type Fn<I, A, E, R> = (ctx: Context<I>) => Effect.Effect<A, E, R>

type AnyFn = (ctx: Context<never>) => Effect.Effect<unknown, unknown, unknown>

/**
 * One node of a workflow's graph. Engines walk these; users build them with the builders.
 *
 * @since 0.1.0
 * @category models
 */
export type Node =
  | { readonly _tag: "Step"; readonly id: string; readonly step: StepLike }
  | { readonly _tag: "Parallel"; readonly id: string; readonly steps: ReadonlyArray<StepLike> }
  | { readonly _tag: "Branch"; readonly id: string; readonly branches: ReadonlyArray<readonly [AnyFn, StepLike]> }
  | { readonly _tag: "Sleep"; readonly id: string; readonly duration: Duration.DurationInput | AnyFn }
  | { readonly _tag: "SleepUntil"; readonly id: string; readonly date: Date | AnyFn }
  | {
    readonly _tag: "Loop"
    readonly id: string
    readonly mode: "dowhile" | "dountil"
    readonly step: StepLike
    readonly condition: AnyFn
  }
  | { readonly _tag: "Foreach"; readonly id: string; readonly step: StepLike; readonly concurrency: number }
  | { readonly _tag: "Map"; readonly id: string; readonly fn: AnyFn }

/**
 * @since 0.1.0
 * @category symbols
 */
export const TypeId: unique symbol = Symbol.for("stepwise/Workflow")

/**
 * A workflow under construction. `Prev` is the output of its last node, which the next builder takes as input.
 *
 * @since 0.1.0
 * @category models
 */
export interface Builder<out Id extends string, in out I, out Prev, in out O, out E, out R> extends Pipeable {
  readonly _tag: "Builder"
  readonly [TypeId]: { readonly _Prev: (_: never) => Prev; readonly _E: (_: never) => E; readonly _R: (_: never) => R }
  readonly id: Id
  readonly inputSchema: Schema.Schema.AnyNoContext
  readonly outputSchema: Schema.Schema.AnyNoContext
  readonly nodes: ReadonlyArray<Node>
  /** Phantom: the workflow's input and declared output. */
  readonly _io?: (_: I) => O
}

/**
 * A committed workflow, ready to run, and usable as a step of another workflow.
 *
 * @since 0.1.0
 * @category models
 */
export interface Workflow<out Id extends string, in out I, in out O, out E = never, out R = never> extends Pipeable {
  readonly _tag: "Workflow"
  readonly [Step.TypeId]: {
    readonly _I: (_: I) => I
    readonly _O: (_: never) => O
    readonly _E: (_: never) => E
    readonly _R: (_: never) => R
  }
  readonly id: Id
  readonly inputSchema: Schema.Schema.AnyNoContext
  readonly outputSchema: Schema.Schema.AnyNoContext
  readonly nodes: ReadonlyArray<Node>
}

/**
 * Any committed workflow.
 *
 * @since 0.1.0
 * @category models
 */
export interface Any {
  readonly _tag: "Workflow"
  readonly [Step.TypeId]: { readonly _O: (_: never) => unknown }
  readonly id: string
  readonly inputSchema: Schema.Schema.AnyNoContext
  readonly outputSchema: Schema.Schema.AnyNoContext
  readonly nodes: ReadonlyArray<Node>
}

const proto = {
  pipe() {
    return pipeArguments(this, arguments)
  }
}

const variance = { _I: (_: never) => _, _O: (_: never) => _, _E: (_: never) => _, _R: (_: never) => _ }

type AnyBuilder = Builder<string, never, unknown, never, unknown, unknown>

const makeBuilder = <B>(fields: Omit<AnyBuilder, "pipe" | typeof TypeId | "_tag" | "_io">): B =>
  Object.assign(Object.create(proto), { _tag: "Builder", [TypeId]: variance }, fields)

const addNode = <B>(self: AnyBuilder, node: (id: string) => Node): B => {
  if (self === null || typeof self !== "object" || self._tag !== "Builder") {
    throw new TypeError(
      "Workflow builders apply to a workflow under construction: start with Workflow.make({ id, inputSchema, " +
        "outputSchema }) and call Workflow.commit last."
    )
  }
  const index = self.nodes.length
  const built = node(`${index}`)
  return makeBuilder<B>({ ...self, nodes: [...self.nodes, built] })
}

const assertStepLike = (builder: string, value: unknown): StepLike => {
  if (
    typeof value === "object" && value !== null && "_tag" in value &&
    (value._tag === "Step" || value._tag === "Workflow")
  ) {
    return value as StepLike
  }
  throw new TypeError(
    `Workflow.${builder} expects a step (Step.make) or a committed workflow (Workflow.commit), got ${describe(value)}.`
  )
}

const assertFn = (builder: string, value: unknown): void => {
  if (typeof value !== "function") {
    throw new TypeError(`Workflow.${builder} expects a function returning an Effect, got ${describe(value)}.`)
  }
}

const describe = (value: unknown): string =>
  value === null
    ? "null"
    : typeof value === "object"
    ? ("_tag" in value ? `a ${String(value._tag)}` : "an object")
    : typeof value

const assertUniqueIds = (builder: string, steps: ReadonlyArray<StepLike>): void => {
  const seen = new Set<string>()
  for (const step of steps) {
    if (seen.has(step.id)) {
      throw new TypeError(
        `Workflow.${builder} was given two steps with the id "${step.id}"; their outputs are keyed by id, so each ` +
          `must be unique.`
      )
    }
    seen.add(step.id)
  }
}

/**
 * Starts a workflow definition.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const Id extends string, I, IE, O, OE>(options: {
  readonly id: Id
  readonly inputSchema: Schema.Schema<I, IE>
  readonly outputSchema: Schema.Schema<O, OE>
}): Builder<Id, I, I, O, never, never> => {
  Step.assertValidId("Workflow", options.id)
  return makeBuilder({
    id: options.id,
    inputSchema: options.inputSchema,
    outputSchema: options.outputSchema,
    nodes: []
  })
}

type UnionToIntersection<U> = (U extends unknown ? (_: U) => void : never) extends (_: infer I) => void ? I : never

type Ctx<R> = Exclude<R, RunContext>

/**
 * Runs a step (or a nested workflow) on the previous node's output. From the package index this is also
 * `Workflow.then`; this module cannot export a function named `then` itself, because that would make the module's
 * namespace object a thenable, and every loader that awaits a module (dynamic `import()`, vitest) would hang on it.
 *
 * @since 0.1.0
 * @category builders
 */
export const andThen = <S extends StepLike>(step: S) =>
<Id extends string, I, Prev extends Step.Input<S>, O, E, R>(
  self: Builder<Id, I, Prev, O, E, R>
): Builder<Id, I, Step.Output<S>, O, E | Step.Error<S>, R | Step.Context<S>> => {
  const s = assertStepLike("then", step)
  return addNode(self as unknown as AnyBuilder, () => ({ _tag: "Step", id: s.id, step: s }))
}

/**
 * Runs steps concurrently on the same input; the output is `{ [stepId]: output }`. Every step runs to its end even
 * when another fails, then the first failure (in the order given) fails the workflow.
 *
 * @since 0.1.0
 * @category builders
 */
export const parallel = <const Steps extends ReadonlyArray<StepLike>>(steps: Steps) =>
<Id extends string, I, Prev extends UnionToIntersection<Step.Input<Steps[number]>>, O, E, R>(
  self: Builder<Id, I, Prev, O, E, R>
): Builder<
  Id,
  I,
  { readonly [S in Steps[number] as S["id"]]: Step.Output<S> },
  O,
  E | Step.Error<Steps[number]>,
  R | Step.Context<Steps[number]>
> => {
  if (!Array.isArray(steps) || steps.length === 0) {
    throw new TypeError("Workflow.parallel expects a non-empty array of steps.")
  }
  const list = steps.map((s) => assertStepLike("parallel", s))
  assertUniqueIds("parallel", list)
  return addNode(self as unknown as AnyBuilder, (id) => ({ _tag: "Parallel", id: `parallel-${id}`, steps: list }))
}

type BranchEntry<Prev> = readonly [Fn<Prev, boolean, unknown, unknown>, StepLike]
type BranchError<B> = B extends readonly [Fn<never, boolean, infer E, unknown>, infer S] ? E | Step.Error<S> : never
type BranchContext<B> = B extends readonly [Fn<never, boolean, unknown, infer R>, infer S] ? Ctx<R> | Step.Context<S>
  : never

/**
 * Evaluates every condition (in order) on the previous output, then runs the steps whose condition held,
 * concurrently. The output is `{ [stepId]?: output }` for the steps that ran. Conditions get a `writer`.
 *
 * @since 0.1.0
 * @category builders
 */
export const branch = <Prev, const Branches extends ReadonlyArray<BranchEntry<Prev>>>(branches: Branches) =>
<Id extends string, I, O, E, R>(
  self: Builder<Id, I, Prev, O, E, R>
): Builder<
  Id,
  I,
  { readonly [B in Branches[number] as B[1]["id"]]?: Step.Output<B[1]> },
  O,
  E | BranchError<Branches[number]>,
  R | BranchContext<Branches[number]>
> => {
  if (!Array.isArray(branches) || branches.length === 0) {
    throw new TypeError("Workflow.branch expects a non-empty array of [condition, step] pairs.")
  }
  const list = branches.map((entry, i): readonly [AnyFn, StepLike] => {
    if (!Array.isArray(entry) || entry.length !== 2) {
      throw new TypeError(`Workflow.branch entry ${i} must be a [condition, step] pair.`)
    }
    assertFn("branch", entry[0])
    return [entry[0] as AnyFn, assertStepLike("branch", entry[1])]
  })
  assertUniqueIds("branch", list.map(([, s]) => s))
  return addNode(self as unknown as AnyBuilder, (id) => ({ _tag: "Branch", id: `branch-${id}`, branches: list }))
}

/**
 * Waits, then passes its input through. The duration may be computed from the context (with a `writer`); a
 * computed string that is not a duration (such as `"soon"`) fails the run with a message saying so.
 * The wake-up time is recorded, so a recovered run sleeps only for what remains.
 *
 * @since 0.1.0
 * @category builders
 */
export const sleep = <Prev, E2 = never, R2 = never>(
  duration: Duration.DurationInput | Fn<Prev, Duration.DurationInput | string, E2, R2>
) =>
<Id extends string, I, O, E, R>(self: Builder<Id, I, Prev, O, E, R>): Builder<Id, I, Prev, O, E | E2, R | Ctx<R2>> =>
  addNode(self as unknown as AnyBuilder, (id) => ({
    _tag: "Sleep",
    id: `sleep-${id}`,
    duration: duration as Duration.DurationInput | AnyFn
  }))

/**
 * Waits until a date, then passes its input through. The date may be computed from the context (with a `writer`).
 *
 * @since 0.1.0
 * @category builders
 */
export const sleepUntil = <Prev, E2 = never, R2 = never>(date: Date | Fn<Prev, Date, E2, R2>) =>
<Id extends string, I, O, E, R>(self: Builder<Id, I, Prev, O, E, R>): Builder<Id, I, Prev, O, E | E2, R | Ctx<R2>> => {
  if (!(date instanceof Date) && typeof date !== "function") {
    throw new TypeError(`Workflow.sleepUntil expects a Date or a function returning an Effect of a Date.`)
  }
  return addNode(self as unknown as AnyBuilder, (id) => ({
    _tag: "SleepUntil",
    id: `sleepUntil-${id}`,
    date: date as Date | AnyFn
  }))
}

const loop = (mode: "dowhile" | "dountil") =>
<S extends StepLike, E2 = never, R2 = never>(step: S, condition: Fn<Step.Output<S>, boolean, E2, R2>) =>
<Id extends string, I, Prev extends Step.Input<S>, O, E, R>(
  self: Builder<Id, I, Prev, O, E, R>
): Builder<Id, I, Step.Output<S>, O, E | E2 | Step.Error<S>, R | Ctx<R2> | Step.Context<S>> => {
  const s = assertStepLike(mode, step)
  assertFn(mode, condition)
  return addNode(self as unknown as AnyBuilder, (id) => ({
    _tag: "Loop",
    id: `${mode}-${id}`,
    mode,
    step: s,
    condition: condition as unknown as AnyFn
  }))
}

/**
 * Runs the step, then again on its own output for as long as the condition holds.
 *
 * @since 0.1.0
 * @category builders
 */
export const dowhile: <S extends StepLike, E2 = never, R2 = never>(
  step: S,
  condition: Fn<Step.Output<S>, boolean, E2, R2>
) => <Id extends string, I, Prev extends Step.Input<S>, O, E, R>(
  self: Builder<Id, I, Prev, O, E, R>
) => Builder<Id, I, Step.Output<S>, O, E | E2 | Step.Error<S>, R | Ctx<R2> | Step.Context<S>> = loop("dowhile")

/**
 * Runs the step, then again on its own output until the condition holds.
 *
 * @since 0.1.0
 * @category builders
 */
export const dountil: <S extends StepLike, E2 = never, R2 = never>(
  step: S,
  condition: Fn<Step.Output<S>, boolean, E2, R2>
) => <Id extends string, I, Prev extends Step.Input<S>, O, E, R>(
  self: Builder<Id, I, Prev, O, E, R>
) => Builder<Id, I, Step.Output<S>, O, E | E2 | Step.Error<S>, R | Ctx<R2> | Step.Context<S>> = loop("dountil")

/**
 * Runs the step on every element of the previous output (an array), at most `concurrency` at a time (default 1);
 * the output is the array of results, in input order.
 *
 * @since 0.1.0
 * @category builders
 */
export const foreach = <S extends StepLike>(step: S, options?: { readonly concurrency?: number }) =>
<Id extends string, I, Prev extends ReadonlyArray<Step.Input<S>>, O, E, R>(
  self: Builder<Id, I, Prev, O, E, R>
): Builder<Id, I, Array<Step.Output<S>>, O, E | Step.Error<S>, R | Step.Context<S>> => {
  const s = assertStepLike("foreach", step)
  const concurrency = options?.concurrency ?? 1
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new TypeError(`Workflow.foreach concurrency must be a whole number of at least 1, got ${concurrency}.`)
  }
  return addNode(self as unknown as AnyBuilder, (id) => ({ _tag: "Foreach", id: `foreach-${id}`, step: s, concurrency }))
}

/**
 * Transforms the previous output with an Effect (which gets the full context, `writer` included).
 *
 * @since 0.1.0
 * @category builders
 */
export const map = <Prev, O2, E2 = never, R2 = never>(fn: Fn<Prev, O2, E2, R2>) =>
<Id extends string, I, O, E, R>(self: Builder<Id, I, Prev, O, E, R>): Builder<Id, I, O2, O, E | E2, R | Ctx<R2>> => {
  assertFn("map", fn)
  return addNode(self as unknown as AnyBuilder, (id) => ({ _tag: "Map", id: `map-${id}`, fn: fn as unknown as AnyFn }))
}

/**
 * Closes the definition. The last node's output must match the workflow's `outputSchema` type.
 *
 * @since 0.1.0
 * @category builders
 */
export const commit = <Id extends string, I, Prev extends O, O, E, R>(
  self: Builder<Id, I, Prev, O, E, R>
): Workflow<Id, I, O, E, R> => {
  const builder = self as unknown as AnyBuilder
  if (builder === null || typeof builder !== "object" || builder._tag !== "Builder") {
    throw new TypeError("Workflow.commit applies to a workflow under construction (from Workflow.make).")
  }
  if (builder.nodes.length === 0) {
    throw new TypeError(`Workflow "${builder.id}" has no steps: add at least one node before Workflow.commit.`)
  }
  return Object.assign(Object.create(proto), {
    _tag: "Workflow",
    [Step.TypeId]: variance,
    id: builder.id,
    inputSchema: builder.inputSchema,
    outputSchema: builder.outputSchema,
    nodes: builder.nodes
  })
}

/**
 * Opens one of the run's own streams from inside any step, condition, sleep function or map: the default stream,
 * or a named one with `namespace`. Readers get it with `run.readable({ namespace })`.
 *
 * @since 0.1.0
 * @category streams
 */
export const getWritable = <A = unknown>(
  options?: { readonly namespace?: string }
): Effect.Effect<RunWritable<A>, never, RunContext> =>
  Effect.map(RunContext, (ctx) => ctx.writable(options?.namespace ?? "") as RunWritable<A>)

/**
 * Whether a value is a committed workflow.
 *
 * @since 0.1.0
 * @category guards
 */
export const isWorkflow = (u: unknown): u is Any =>
  typeof u === "object" && u !== null && "_tag" in u && u._tag === "Workflow"

/**
 * Options of `toMermaid`: `run`, the step records of a run of the workflow (`RunStore.getSteps` answers them in this
 * shape), to paint each node with its state: `done`, `running` (a sleep: waiting), `failed` or `suspended`.
 *
 * @since 0.1.0
 * @category models
 */
export interface MermaidOptions {
  readonly run?: { readonly steps: ReadonlyArray<StepRecord> } | undefined
}

/**
 * A Mermaid `flowchart TD` of a committed workflow's graph: steps, parallels and branches (fork and join, each branch
 * labelled with its condition's function name, or "condition 1", "condition 2" ...), loops (a condition with an edge
 * back), foreach (with its concurrency), sleeps, maps, and nested workflows as subgraphs. With `run`, each node is
 * painted with its state in that run; a node executed many times (inside a loop or a foreach) shows the most telling
 * state of its executions (failed, suspended, running, done). Node ids follow the graph, so the text of a workflow
 * is always the same. GitHub renders it in a ```mermaid block.
 *
 * ```ts
 * console.log(Workflow.toMermaid(chat))
 * const steps = yield* store.getSteps(run.runId)
 * console.log(Workflow.toMermaid(chat, { run: steps }))
 * ```
 *
 * @since 0.1.0
 * @category rendering
 */
export const toMermaid: {
  (options?: MermaidOptions): (self: Any) => string
  (self: Any, options?: MermaidOptions): string
} = dual(
  (args) => isWorkflow(args[0]),
  (self: Any, options?: MermaidOptions): string => Mermaid.render(self, options)
)
