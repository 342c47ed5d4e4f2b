/**
 * The walk of a workflow graph, shared by both engines. Every piece of user code goes through the executor; this
 * module only decides what comes next. Each node has a path, and what the store recorded at a path is replayed, so
 * a walk can always start again from the root: that is how the default engine resumes (and recovers), and how the
 * evented engine takes each transition with no memory of its own between messages.
 *
 * Paths: node `i` of the root is `i`; of a nested workflow at `p`, `p/i`. A parallel or branch child is `p:stepId`,
 * a foreach element `p[k]`, a loop iteration `p#k` (its condition `p#k?`), a branch condition `p?i`, and a sleep's
 * end `p!`.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Tracer from "effect/Tracer"
import type * as RunStore from "../../RunStore.js"
import type * as Step from "../../Step.js"
import type { Node, StepLike } from "../../Workflow.js"
import * as Codec from "../codec.js"
import * as Executor from "./executor.js"
import type { Halt, RunEnv, WorkflowScope } from "./executor.js"
import { randomId } from "../ids.js"
import * as Tracing from "./tracing.js"

/** The paths of a node's parts (see the module's doc), one definition for the Effect walk and the replay. */
const childPath = (path: string, stepId: string): string => `${path}:${stepId}`
const itemPath = (path: string, k: number): string => `${path}[${k}]`
const iterationPath = (path: string, i: number): string => `${path}#${i}`
const conditionPath = (path: string, i: number): string => `${path}?${i}`
const loopConditionPath = (path: string, i: number): string => `${iterationPath(path, i)}?`
const sleepEndPath = (path: string): string => `${path}!`

/** Tracks how many sleeps are in progress (inline walks), so the run's status is `waiting` exactly while one is. */
export interface WaitTracker {
  readonly enter: Effect.Effect<void>
  readonly leave: Effect.Effect<void>
}

/** A tracker that tracks nothing, for walks whose engine derives the status from the walk's outcome. */
export const noWaits: WaitTracker = { enter: Effect.void, leave: Effect.void }

/**
 * Walks a whole workflow (the root, or a nested one) and answers its last node's output. Every piece of user code in
 * it runs in the run's user context (its services and `RunContext`): an inline walk runs in a fiber whose context is
 * that (the default engine sets it when it forks the walk); other walks leave it to the executor, around each piece
 * of user code (see `Executor.runUser`).
 */
export const runWorkflow = (
  env: RunEnv,
  waits: WaitTracker,
  workflow: { readonly nodes: ReadonlyArray<Node> },
  input: unknown,
  prefix: string
): Effect.Effect<unknown, Halt> =>
  Effect.suspend(() => {
    const scope = Executor.makeScope(input)
    const nodes = workflow.nodes
    let value: unknown = input
    const first = replayPrefix(env, scope, nodes, prefix, (out) => (value = out), value)
    const target = env.mode._tag === "Execute" ? env.mode.path : undefined
    // One continuation per node visited (`Effect.forEach` cost about twice the fiber operations).
    const from = (i: number): Effect.Effect<unknown, Halt> => {
      if (i >= nodes.length) return Effect.succeed(value)
      const path = `${prefix}${i}`
      return Effect.flatMap(runNode(env, waits, scope, nodes[i]!, value, path), (out) => {
        value = out
        // An executing walk is done once it has visited the node that holds its target: each node after it is still
        // to run, and so pending (what the walk comes to is not used, the dispatching walk after the step's end goes
        // on from there). The last node's end is left as it was, to be recorded where it always was.
        return target !== undefined && i < nodes.length - 1 && holds(path, target) ? pending : from(i + 1)
      })
    }
    return from(first)
  })

/**
 * Replays, without Effect, the leading nodes whose outcome is recorded (see `replayedNode`), and answers the index of
 * the first node the walk must really visit. Walks that start again from the root on every transition (the evented
 * engine, recovery) so cost little for what is done: without it, a run of n branches, parallels or loops is walked
 * through Effect n times over.
 */
const replayPrefix = (
  env: RunEnv,
  scope: WorkflowScope,
  nodes: ReadonlyArray<Node>,
  prefix: string,
  set: (value: unknown) => void,
  input: unknown
): number => {
  let value = input
  let i = 0
  // An executing walk visits the node that holds its target (it has a part to run): replaying it first only to find
  // that part unrecorded cost a foreach of n items up to n lookups per execution, n² in all.
  const target = env.mode._tag === "Execute" ? env.mode.path : undefined
  for (; i < nodes.length; i++) {
    const path = `${prefix}${i}`
    if (target !== undefined && holds(path, target)) break
    const replayed = replayedNode(env, scope, nodes[i]!, path, value)
    if (replayed === undefined) break
    value = replayed.value
  }
  set(value)
  return i
}

/** A recorded success of a step (not a nested workflow) at `path`, as `runStepLike` would replay it. */
const replayedStep = (env: RunEnv, scope: WorkflowScope, step: StepLike, path: string): { readonly value: unknown } | undefined =>
  step._tag === "Step" ? Executor.replayedNow(env, scope, step.id, step.outputSchema, path) : undefined

/** A recorded condition's answer at `path` (conditions are recorded as booleans, with no schema). */
const replayedCondition = (env: RunEnv, scope: WorkflowScope, path: string): boolean | undefined => {
  const replayed = Executor.replayedNow(env, scope, undefined, undefined, path)
  return typeof replayed?.value === "boolean" ? replayed.value : undefined
}

/**
 * The output of a node whose every part is recorded as a success, as the Effect walk (`runNode`) would produce it:
 * a step or map with a decoded result, a finished sleep, a branch whose conditions are all recorded and whose chosen
 * steps all succeeded, a parallel or foreach whose steps all succeeded, a loop up to the iteration whose condition
 * ended it. `undefined` when any part is not (a nested workflow, a part still to run, running, failed or suspended),
 * and the walk visits the node. Replaying sets `getStepResult`'s answers as the Effect walk's replay does.
 */
const replayedNode = (
  env: RunEnv,
  scope: WorkflowScope,
  node: Node,
  path: string,
  input: unknown
): { readonly value: unknown } | undefined => {
  switch (node._tag) {
    case "Step":
      return replayedStep(env, scope, node.step, path)
    case "Map":
      return Executor.replayedNow(env, scope, undefined, undefined, path)
    case "Sleep":
    case "SleepUntil":
      return env.memo.get(sleepEndPath(path))?.status === "success" ? { value: input } : undefined
    case "Parallel": {
      const outputs: Array<readonly [string, unknown]> = []
      for (const step of node.steps) {
        const replayed = replayedStep(env, scope, step, childPath(path, step.id))
        if (replayed === undefined) return undefined
        outputs.push([step.id, replayed.value])
      }
      return { value: Object.fromEntries(outputs) }
    }
    case "Branch": {
      const outputs: Array<readonly [string, unknown]> = []
      for (let i = 0; i < node.branches.length; i++) {
        const holds = replayedCondition(env, scope, conditionPath(path, i))
        if (holds === undefined) return undefined
        if (!holds) continue
        const step = node.branches[i]![1]
        const replayed = replayedStep(env, scope, step, childPath(path, step.id))
        if (replayed === undefined) return undefined
        outputs.push([step.id, replayed.value])
      }
      return { value: Object.fromEntries(outputs) }
    }
    case "Foreach": {
      if (!Array.isArray(input)) return undefined
      const outputs: Array<unknown> = []
      for (let k = 0; k < input.length; k++) {
        const replayed = replayedStep(env, scope, node.step, itemPath(path, k))
        if (replayed === undefined) return undefined
        outputs.push(replayed.value)
      }
      return { value: outputs }
    }
    case "Loop": {
      for (let i = 0;; i++) {
        const replayed = replayedStep(env, scope, node.step, iterationPath(path, i))
        if (replayed === undefined) return undefined
        const holds = replayedCondition(env, scope, loopConditionPath(path, i))
        if (holds === undefined) return undefined
        if (node.mode === "dowhile" ? !holds : holds) return replayed
      }
    }
  }
}

const runNode = (
  env: RunEnv,
  waits: WaitTracker,
  scope: WorkflowScope,
  node: Node,
  input: unknown,
  path: string
): Effect.Effect<unknown, Halt> => {
  switch (node._tag) {
    case "Step":
      return runStepLike(env, waits, scope, node.step, input, path)
    case "Parallel":
      return Effect.map(
        all(env, waits, scope, path, node.steps.map((step) => ({ key: step.id, path: childPath(path, step.id), step, input })), "unbounded"),
        Object.fromEntries
      )
    case "Branch":
      return Effect.gen(function*() {
        const chosen: Array<StepLike> = []
        for (let i = 0; i < node.branches.length; i++) {
          const [condition, step] = node.branches[i]!
          if (yield* Executor.evaluateCondition(env, scope, condition, input, node.id, conditionPath(path, i))) chosen.push(step)
        }
        return Object.fromEntries(
          yield* all(env, waits, scope, path, chosen.map((step) => ({ key: step.id, path: childPath(path, step.id), step, input })), "unbounded")
        )
      })
    case "Sleep":
      return wait(env, waits, node.id, path, input, Executor.resolveSleep(env, scope, node.duration, input, node.id, path))
    case "SleepUntil":
      return wait(env, waits, node.id, path, input, Executor.resolveSleepUntil(env, scope, node.date, input, node.id, path))
    case "Loop":
      return Effect.gen(function*() {
        let value = input
        for (let i = 0;; i++) {
          value = yield* runStepLike(env, waits, scope, node.step, value, iterationPath(path, i))
          const holds = yield* Executor.evaluateCondition(env, scope, node.condition, value, node.id, loopConditionPath(path, i))
          if (node.mode === "dowhile" ? !holds : holds) return value
        }
      })
    case "Foreach":
      return Effect.suspend(() => {
        if (!Array.isArray(input)) {
          return Effect.fail(
            new Executor.StepFailure({
              stepId: node.id,
              path,
              cause: Cause.die(
                new TypeError(`"${node.id}" iterates over its input, which must be an array, but got ${typeof input}.`)
              )
            })
          )
        }
        const item = executedItem(env, path)
        if (item !== undefined && input.length > 1) {
          // Executing a node inside one item: only that item is walked, and the others are pending, as `all` would
          // have them, without a branch built and visited per item (a foreach of n items is executed n times).
          if (item >= input.length) return pending
          const only = { key: item, path: itemPath(path, item), step: node.step, input: input[item] as unknown }
          return Effect.zipRight(Effect.either(all(env, waits, scope, path, [only], node.concurrency)), pending)
        }
        return Effect.map(
          all(env, waits, scope, path, input.map((item: unknown, k) => ({ key: k, path: itemPath(path, k), step: node.step, input: item })), node.concurrency),
          (entries) => entries.map(([, out]) => out)
        )
      })
    case "Map":
      return Executor.execute(env, scope, {
        id: node.id,
        inputSchema: undefined,
        outputSchema: undefined,
        suspendSchema: undefined,
        retry: undefined,
        timeout: undefined,
        run: node.fn
      }, input, path)
  }
}

/** Runs a step, or a nested workflow inside the same run (its events reach this run's channel). */
export const runStepLike = (
  env: RunEnv,
  waits: WaitTracker,
  scope: WorkflowScope,
  step: StepLike,
  input: unknown,
  path: string
): Effect.Effect<unknown, Halt> =>
  step._tag === "Step"
    ? Executor.execute(env, scope, Executor.stepSpec(step as Step.Any), input, path)
    : runNested(env, waits, scope, step, input, path)

const runNested = (
  env: RunEnv,
  waits: WaitTracker,
  scope: WorkflowScope,
  workflow: Nested,
  input: unknown,
  path: string
): Effect.Effect<unknown, Halt> =>
  Effect.suspend(() => {
    const known = env.memo.get(path)
    if (known?.status === "success") {
      return Effect.map(Executor.decodeStored(workflow.id, path, workflow.outputSchema, known.output), (output) => {
        scope.results.set(workflow.id, output)
        return output
      })
    }
    if (known?.status === "failed") {
      return Effect.fail(new Executor.StepFailure({ stepId: workflow.id, path, cause: env.failureCause(path, known) }))
    }
    // Started before (by this walk's process or another): its steps' spans are children of its recorded span.
    if (known !== undefined) return Tracing.under(walkNested(env, waits, scope, workflow, input, path, known), known.trace)
    if (env.mode._tag === "Execute") return pending
    const start = (span: Tracer.Span | undefined) =>
      Effect.flatMap(
        recordNestedStart(env, workflow, input, path, span),
        (started) => walkNested(env, waits, scope, workflow, input, path, started)
      )
    // Its span is opened where it starts and lasts as long as this walk walks it; its ids go with its record.
    return Tracing.ifTracing(start(undefined), () =>
      Effect.flatMap(
        Tracing.makeSpan(Tracing.workflowSpanName(workflow.id), {
          [Tracing.attributes.runId]: env.runId,
          [Tracing.attributes.workflowId]: env.workflowId,
          [Tracing.attributes.stepId]: workflow.id,
          [Tracing.attributes.path]: path
        }),
        (span) =>
          Tracing.under(start(span), span).pipe(
            Effect.onExit((exit) => Tracing.end(span, Tracing.walkExit(exit)))
          )
      ))
  })

type Nested = Extract<StepLike, { readonly _tag: "Workflow" }>

/** Records the start of a nested workflow, once: the record keeps the call id and the span. */
const recordNestedStart = (
  env: RunEnv,
  workflow: Nested,
  input: unknown,
  path: string,
  span: Tracer.Span | undefined
): Effect.Effect<RunStore.StepRecord, Halt> =>
  Effect.gen(function*() {
    // The call id makes the result event match the start event in any process.
    const stepCallId = randomId()
    const encodedInput = yield* Effect.exit(Codec.encode(workflow.inputSchema, input))
    const started: RunStore.StepRecord = {
      path,
      stepId: workflow.id,
      status: "running",
      stepCallId,
      ...(span === undefined ? {} : { trace: Tracing.contextOf(span) })
    }
    yield* Executor.emitStepStart(env, workflow.id, stepCallId, Exit.isSuccess(encodedInput) ? encodedInput.value : input, started)
    env.memo.set(path, started)
    if (Exit.isFailure(encodedInput)) {
      return yield* Executor.fail(env, workflow.id, path, stepCallId, 1, Cause.die(new Error(
        `Nested workflow "${workflow.id}" received input that does not match its inputSchema: ${
          Executor.parseMessage(encodedInput.cause)
        }`
      )), { expected: started })
    }
    return started
  })

/** Walks a started nested workflow and records its outcome when it ends. */
const walkNested = (
  env: RunEnv,
  waits: WaitTracker,
  scope: WorkflowScope,
  workflow: Nested,
  input: unknown,
  path: string,
  started: RunStore.StepRecord
): Effect.Effect<unknown, Halt> =>
  Effect.gen(function*() {
    const stepCallId = started.stepCallId ?? randomId()
    const output = yield* runWorkflow(env, waits, workflow, input, `${path}/`)
    const encoded = yield* Effect.exit(Codec.encode(workflow.outputSchema, output))
    if (Exit.isFailure(encoded)) {
      return yield* Executor.fail(env, workflow.id, path, stepCallId, 1, Cause.die(new Error(
        `Nested workflow "${workflow.id}" produced output that does not match its outputSchema: ${
          Executor.parseMessage(encoded.cause)
        }`
      )), { expected: started })
    }
    return yield* Executor.succeed(env, scope, workflow.id, path, stepCallId, 1, output, encoded.value, { expected: started })
  })

/**
 * A sleep: its wake-up time comes from the executor (recorded, so a resumed walk keeps it). The first walk that
 * meets it emits `workflow-step-waiting`; the walk that finds it due records its end and emits its result. An inline
 * walk sleeps in its fiber unless the sleep is long enough to park; a parking or evented walk asks for a wake-up and
 * stops there.
 */
const wait = (
  env: RunEnv,
  waits: WaitTracker,
  id: string,
  path: string,
  input: unknown,
  resolve: Effect.Effect<number, Executor.StepFailure | Executor.Pending>
): Effect.Effect<unknown, Halt> =>
  Effect.gen(function*() {
    const done = sleepEndPath(path)
    if (env.memo.get(done)?.status === "success") return input
    const resolvedBefore = env.memo.has(path)
    const until = yield* resolve
    const now = yield* Clock.currentTimeMillis
    const resolved = env.memo.get(path)
    // Taken out of the set as it is read: the record lives as long as the run does (in a memory store), and a set
    // entry with it, for each of thousands of waiting runs (26 B each at 10,000).
    if (!resolvedBefore && resolved !== undefined && Executor.recordedNow.delete(resolved)) {
      yield* env.emit({ type: "workflow-step-waiting", runId: env.runId, from: "WORKFLOW", payload: { id, startedAt: now, until } })
    }
    const mode = env.mode
    if (until > now) {
      if (mode._tag === "Inline" && (mode.park === undefined || until - now < mode.park.after)) {
        yield* Effect.acquireUseRelease(waits.enter, () => Effect.sleep(until - now), () => waits.leave)
      } else {
        const wakeAt = mode._tag === "Dispatch" ? mode.wakeAt : mode._tag === "Inline" ? mode.park?.wakeAt : undefined
        if (wakeAt !== undefined) yield* wakeAt(path, until)
        return yield* new Executor.Pending({ waitingOnly: true })
      }
    } else if (mode._tag === "Execute" && mode.path !== path) {
      return yield* Executor.notNow
    }
    // Recorded once: a sleep's wake-up delivered twice (or walked by two instances) ends it once, and either goes on.
    const record: RunStore.StepRecord = { path: done, stepId: id, status: "success" }
    if (yield* env.claim(record, undefined, yield* Executor.stepResult(env, id, randomId(), { status: "success" }))) {
      env.memo.set(done, record)
    }
    return input
  })

/** A branch of a parallel, branch or foreach: its key in the output, its path, and the step-like it walks. */
interface Branch<K> {
  readonly key: K
  readonly path: string
  readonly step: StepLike
  readonly input: unknown
}

/** What an inner node's path adds to its container's path starts with one of these (see the module's doc). */
const pathSeparators = new Set(["/", ":", "[", "#", "?", "!"])

/**
 * Whether the node at `path` is the node at `target` or contains it. A step id holding a separator can make this
 * say yes for a sibling (which is then walked for nothing), never no for the node that holds the target.
 */
const holds = (path: string, target: string): boolean =>
  target.length === path.length
    ? target === path
    : target.length > path.length && target.startsWith(path) && pathSeparators.has(target[path.length]!)

/** In an executing walk, the index of the item of the foreach at `path` that holds the node executed, if one does. */
const executedItem = (env: RunEnv, path: string): number | undefined => {
  if (env.mode._tag !== "Execute") return undefined
  const target = env.mode.path
  if (target.length <= path.length + 2 || target[path.length] !== "[" || !target.startsWith(path)) return undefined
  const close = target.indexOf("]", path.length)
  const digits = target.slice(path.length + 1, close)
  if (close < 0 || !/^(0|[1-9][0-9]*)$/.test(digits)) return undefined
  const item = Number(digits)
  return holds(itemPath(path, item), target) ? item : undefined
}

const pending = Effect.fail(Executor.notNow)

/**
 * Runs each branch in a fiber of its own and answers every outcome in order, once all have ended: an inline parallel
 * with no concurrency bound. For ten branches this costs about a third of `Effect.forEach` with unbounded
 * concurrency, whose machinery was most of a fan-out's overhead. Interrupting the caller interrupts every branch and
 * waits for them, so nothing a branch records lands after what the interruption records (a cancel's events). A
 * branch that dies (a defect of ours or a store that stays down: user code's failures are outcomes) makes the whole
 * die with its cause, once the others have ended.
 */
const forkAll = <K>(
  branches: ReadonlyArray<Branch<K>>,
  run: (branch: Branch<K>) => Effect.Effect<unknown, Halt>
): Effect.Effect<Array<readonly [K, Either.Either<unknown, Halt>]>> => {
  if (branches.length === 0) return Effect.succeed([])
  if (branches.length === 1) {
    const only = branches[0]!
    return Effect.map(Effect.either(run(only)), (result) => [[only.key, result] as const])
  }
  return Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const fibers: Array<Fiber.RuntimeFiber<Either.Either<unknown, Halt>>> = []
      for (const branch of branches) fibers.push(yield* Effect.fork(restore(Effect.either(run(branch)))))
      const exits = yield* restore(Effect.gen(function*() {
        const exits: Array<Exit.Exit<Either.Either<unknown, Halt>>> = []
        // A fiber that has already ended hands over its exit at once: `await` would go through the scheduler.
        for (const fiber of fibers) exits.push(fiber.unsafePoll() ?? (yield* fiber.await))
        return exits
      })).pipe(Effect.onInterrupt(() => Fiber.interruptAll(fibers)))
      const results: Array<readonly [K, Either.Either<unknown, Halt>]> = []
      for (let i = 0; i < exits.length; i++) {
        const exit = exits[i]!
        if (Exit.isFailure(exit)) return yield* Effect.failCause(exit.cause)
        results.push([branches[i]!.key, exit.value])
      }
      return results
    })
  )
}

/**
 * Runs keyed branches to their end, then fails with the first failure in the given order, or with all suspensions
 * together, or answers every output; while any branch is pending, the whole is pending. Siblings are never
 * interrupted by a failure, so what a run emits does not depend on timing, and both engines settle alike.
 *
 * Inline, at most `concurrency` branches run at once. Dispatching, branches are walked in order and at most
 * `concurrency` of them may be pending (in flight) at once; the rest wait for a later walk. Executing a node inside
 * these branches (at `path`), only the branch that holds it is walked, and the others count as pending. An executing
 * walk's outcome is not used (the dispatching walk after the step's end settles the whole), so walking them bought
 * nothing, and in a parallel of n it made each of the n executions visit all n branches. (A node after them is
 * another matter: the walk must replay every branch to get there.)
 */
const all = <K>(
  env: RunEnv,
  waits: WaitTracker,
  scope: WorkflowScope,
  path: string,
  branches: ReadonlyArray<Branch<K>>,
  concurrency: number | "unbounded"
): Effect.Effect<Array<readonly [K, unknown]>, Halt> => {
  const run = (branch: Branch<K>) => runStepLike(env, waits, scope, branch.step, branch.input, branch.path)
  const settle = (
    results: ReadonlyArray<readonly [K, Either.Either<unknown, Halt>]>
  ): Effect.Effect<Array<readonly [K, unknown]>, Halt> => {
    const suspended: Array<RunStore.SuspendedStep> = []
    const outputs: Array<readonly [K, unknown]> = []
    let failure: Executor.StepFailure | undefined
    let pending: Executor.Pending | undefined
    let fenced: Executor.StepFenced | undefined
    for (const [key, result] of results) {
      if (Either.isRight(result)) {
        outputs.push([key, result.right])
        continue
      }
      const halt = result.left
      switch (halt._tag) {
        case "StepFailure":
          failure ??= halt
          break
        case "Pending":
          pending = pending === undefined || !halt.waitingOnly ? halt : pending
          break
        case "Suspension":
          suspended.push(...halt.suspended)
          break
        case "StepFenced":
          fenced ??= halt
      }
    }
    // A branch's step is another execution's: this walk records nothing of the whole (that execution's walk does).
    if (fenced !== undefined) return Effect.fail(fenced)
    if (pending !== undefined) return Effect.fail(pending)
    if (failure !== undefined) return Effect.fail(failure)
    if (suspended.length > 0) return Effect.fail(new Executor.Suspension({ suspended }))
    return Effect.succeed(outputs)
  }
  if (env.mode._tag === "Inline") {
    if (branches.length <= 1 || concurrency === "unbounded" || concurrency >= branches.length) {
      return Effect.flatMap(forkAll(branches, run), settle)
    }
    return Effect.flatMap(
      Effect.forEach(branches, (branch) => Effect.map(Effect.either(run(branch)), (r) => [branch.key, r] as const), {
        concurrency
      }),
      settle
    )
  }
  // A dispatching or executing walk replays, dispatches and evaluates, and executes at most one node: its branches are
  // walked in order, without a fiber each. Only dispatching counts what is in flight against the concurrency.
  const limit = env.mode._tag === "Dispatch" && concurrency !== "unbounded" ? concurrency : Number.POSITIVE_INFINITY
  const target = env.mode._tag === "Execute" && env.mode.path.length > path.length && holds(path, env.mode.path)
    ? env.mode.path
    : undefined
  return Effect.gen(function*() {
    const results: Array<readonly [K, Either.Either<unknown, Halt>]> = []
    let inFlight = 0
    for (const branch of branches) {
      const { key, step } = branch
      if (inFlight >= limit || (target !== undefined && !holds(branch.path, target))) {
        results.push([key, Either.left(Executor.notNow)])
        continue
      }
      // A step whose record alone decides it is answered without Effect (see `Executor.settledNow`).
      const result = (step._tag === "Step"
        ? Executor.settledNow(env, scope, step.id, (step as Step.Any).outputSchema, branch.path)
        : undefined) ?? (yield* Effect.either(run(branch)))
      if (Either.isLeft(result) && result.left._tag === "Pending") inFlight++
      results.push([key, result])
    }
    return yield* settle(results)
  })
}
