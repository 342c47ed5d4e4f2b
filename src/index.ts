/**
 * stepwise: an Effect-native workflow runtime whose steps stream output live.
 *
 * Each module is re-exported as a namespace. `Workflow` is the one exception in form, not in use: it is a frozen
 * object (plus a namespace of its types) so that it can carry `Workflow.then` without any module exporting a
 * function named `then` (a module namespace with `then` is a thenable, and loaders that await modules hang on it).
 *
 * @since 0.1.0
 */
import * as WorkflowModule from "./Workflow.js"

/** @since 0.1.0 */
export * as EventBus from "./EventBus.js"
/** @since 0.1.0 */
export * as Run from "./Run.js"
/** @since 0.1.0 */
export * as RunContext from "./RunContext.js"
/** @since 0.1.0 */
export * as RunStore from "./RunStore.js"
/** @since 0.1.0 */
export * as Step from "./Step.js"
/** @since 0.1.0 */
export * as ToolStream from "./ToolStream.js"
/** @since 0.1.0 */
export * as WorkflowEngine from "./WorkflowEngine.js"
/** @since 0.1.0 */
export * as WorkflowError from "./WorkflowError.js"
/** @since 0.1.0 */
export * as WorkflowEvent from "./WorkflowEvent.js"

/**
 * Workflow definitions: `Workflow.make`, the builders (`then`, `parallel`, `branch`, `sleep`, `sleepUntil`,
 * `dowhile`, `dountil`, `foreach`, `map`), `commit`, `getWritable`, and `toMermaid` (a workflow's graph as a picture).
 *
 * @since 0.1.0
 */
export const Workflow: typeof WorkflowModule & { readonly then: typeof WorkflowModule.andThen } = Object.freeze({
  ...WorkflowModule,
  then: WorkflowModule.andThen
})

/** @since 0.1.0 */
export declare namespace Workflow {
  /** @since 0.1.0 */
  export type Workflow<Id extends string, I, O, E = never, R = never> = WorkflowModule.Workflow<Id, I, O, E, R>
  /** @since 0.1.0 */
  export type Builder<Id extends string, I, Prev, O, E, R> = WorkflowModule.Builder<Id, I, Prev, O, E, R>
  /** @since 0.1.0 */
  export type Any = WorkflowModule.Any
  /** @since 0.1.0 */
  export type StepLike = WorkflowModule.StepLike
  /** @since 0.1.0 */
  export type Context<I> = WorkflowModule.Context<I>
  /** @since 0.1.0 */
  export type Fn<I, A, E, R> = WorkflowModule.Fn<I, A, E, R>
  /** @since 0.1.0 */
  export type Node = WorkflowModule.Node
  /** @since 0.1.0 */
  export type RunWritable<A> = WorkflowModule.RunWritable<A>
  /** @since 0.1.0 */
  export type RunContext = WorkflowModule.RunContext
  /** @since 0.1.0 */
  export type MermaidOptions = WorkflowModule.MermaidOptions
}
