/**
 * stepwise: an Effect-native workflow runtime whose steps stream output live.
 *
 * @since 0.1.0
 */

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
export * as Workflow from "./Workflow.js"
/** @since 0.1.0 */
export * as WorkflowEngine from "./WorkflowEngine.js"
/** @since 0.1.0 */
export * as WorkflowError from "./WorkflowError.js"
/** @since 0.1.0 */
export * as WorkflowEvent from "./WorkflowEvent.js"
