/**
 * The engine: starts runs, finds them again, and executes the workflows it knows.
 *
 * ```ts
 * const program = Effect.gen(function*() {
 *   const engine = yield* WorkflowEngine.WorkflowEngine
 *   const run = yield* engine.start(greet, { userId: "ada" })
 *   return yield* run.result
 * })
 * Effect.runPromise(program.pipe(Effect.provide(WorkflowEngine.layerMemory)))
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as EventBus from "./EventBus.js"
import * as Engine from "./internal/engine/core.js"
import * as Evented from "./internal/engine/evented.js"
import type { Run } from "./Run.js"
import * as RunStore from "./RunStore.js"
import type * as Step from "./Step.js"
import type * as Workflow from "./Workflow.js"
import type { RunNotFoundError, WorkflowInputError } from "./WorkflowError.js"

/**
 * The engine service.
 *
 * @since 0.1.0
 * @category tags
 */
export class WorkflowEngine extends Context.Tag("stepwise/WorkflowEngine")<WorkflowEngine, {
  /**
   * Validates `input` with the workflow's `inputSchema` (bad input: `WorkflowInputError`, and no run is created),
   * records the run and starts executing it in the background. The services the workflow requires are taken from
   * the caller. Starting again with the `runId` of an existing run of the same workflow answers that run.
   */
  readonly start: <I, O, E, R>(
    workflow: Workflow.Workflow<string, I, O, E, R>,
    input: I,
    options?: { readonly runId?: string }
  ) => Effect.Effect<Run<O, E>, WorkflowInputError, R>
  /** A handle on any run in the store, whichever process started it. */
  readonly getRun: (runId: string) => Effect.Effect<Run<unknown, unknown>, RunNotFoundError>
  /**
   * Makes workflows executable in this process, with the services their steps need, and resumes their runs that
   * the store shows as running or waiting with nobody executing them. Use the `register` layer rather than this.
   */
  readonly register: (
    workflows: ReadonlyArray<Workflow.Any>,
    services: Context.Context<never>
  ) => Effect.Effect<void>
}>() {}

/**
 * The default engine: each run is walked in fibers of this process.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerDefault: Layer.Layer<WorkflowEngine, never, EventBus.EventBus | RunStore.RunStore> = Layer.scoped(
  WorkflowEngine,
  Effect.map(Engine.makeDefault(), WorkflowEngine.of)
)

/**
 * Options of the engines: `workerId` (this instance's stable name as a run owner; a restarted worker with the same
 * name takes its unfinished runs back at once) and `lease` (how long an owner may stay silent before other instances
 * take its unfinished runs over, and, with the evented engine, how long an instance executing a step may stay silent
 * before the run's owner sends the step again; default 10 seconds).
 *
 * @since 0.1.0
 * @category models
 */
export type Options = Engine.EngineOptions

/**
 * Options of the default engine: those of every engine, and `parkAfter` (sleeps at least this long release their
 * run's fiber: the run waits as an entry in the engine's timer queue, and is walked again from the store when the
 * sleep is due; default 1 second).
 *
 * @since 0.1.0
 * @category models
 */
export type DefaultOptions = Engine.DefaultOptions

/**
 * The default engine with options.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerDefaultWith = (
  options: DefaultOptions
): Layer.Layer<WorkflowEngine, never, EventBus.EventBus | RunStore.RunStore> =>
  Layer.scoped(WorkflowEngine, Effect.map(Engine.makeDefault(options), WorkflowEngine.of))

/**
 * The default engine with the in-memory bus and store: zero set-up. Also provides the bus and the store, so tests
 * and apps can read them.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<
  WorkflowEngine | EventBus.EventBus | EventBus.MemoryChannels | RunStore.RunStore
> = layerDefault.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, RunStore.layerMemory)))

/**
 * Registers workflows with the engine of the context, taking the services they require from the context too, and
 * resumes their unfinished runs. `start` registers its workflow implicitly; a process that only executes runs
 * started elsewhere (or recovers after a crash) needs this.
 *
 * @since 0.1.0
 * @category layers
 */
export const register = <const W extends ReadonlyArray<Workflow.Any>>(
  ...workflows: W
): Layer.Layer<never, never, WorkflowEngine | Step.Context<W[number]>> =>
  Layer.effectDiscard(Effect.gen(function*() {
    const engine = yield* WorkflowEngine
    const services = (yield* Effect.context<never>()) as Context.Context<never>
    yield* engine.register(workflows, services)
  }))

/**
 * The evented engine: every transition of a run is a command on the `EventBus` channel `workflows`
 * (`workflow.start`, `workflow.step.run`, `workflow.step.end`, `workflow.suspend`, `workflow.resume`,
 * `workflow.cancel`, `workflow.end`, `workflow.fail`), handled by whichever engine instance of the consumer group
 * receives it, with all state in the `RunStore`. Outcomes are announced on `workflows-finish`. It runs the same
 * workflows as `layerDefault`, through the same step executor, with the same events. Building it fails with
 * `EventBusError` when the bus cannot subscribe.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerEvented: Layer.Layer<
  WorkflowEngine,
  EventBus.EventBusError,
  EventBus.EventBus | RunStore.RunStore
> = Layer.scoped(
  WorkflowEngine,
  Effect.map(Evented.makeEvented(), WorkflowEngine.of)
)

/**
 * The evented engine with options, and a consumer group of your choosing: instances in one group share the work;
 * instances in different groups each execute every run (rarely what you want). Register the same workflows in every
 * instance of a group: a command for a workflow an instance does not register goes back to the group, at most 20
 * times.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerEventedWith = (
  options: Options & { readonly group?: string }
): Layer.Layer<WorkflowEngine, EventBus.EventBusError, EventBus.EventBus | RunStore.RunStore> =>
  Layer.scoped(WorkflowEngine, Effect.map(Evented.makeEvented(options), WorkflowEngine.of))

/**
 * A client of evented workers: `start`, `getRun`, and each run's `result`, `status`, `events`, `readable`, `cancel`
 * and `resume` work as with any engine, but this instance executes nothing. It sends commands on the `workflows`
 * channel for the workers of the consumer group (`layerEvented` in other processes, over the same bus and store),
 * reads none, owns no run and takes none over: the worker that starts a run owns it. Register workflows here (or
 * let `start` do it) only so that inputs and outputs are checked with their schemas; their steps never run here.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerClient: Layer.Layer<
  WorkflowEngine,
  EventBus.EventBusError,
  EventBus.EventBus | RunStore.RunStore
> = Layer.scoped(WorkflowEngine, Effect.map(Evented.makeEvented({ client: true }), WorkflowEngine.of))

/**
 * The evented engine with the in-memory bus and store.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerEventedMemory: Layer.Layer<
  WorkflowEngine | EventBus.EventBus | EventBus.MemoryChannels | RunStore.RunStore,
  EventBus.EventBusError
> = layerEvented.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, RunStore.layerMemory)))

/**
 * The commands of the evented engine's `workflows` channel, for tools that watch it.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Command = Evented.Command

/**
 * What the evented engine announces on `workflows-finish`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Finished = Evented.Finished
