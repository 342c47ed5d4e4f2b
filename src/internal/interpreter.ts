/**
 * The default engine's walk of a workflow graph, in fibers. Every piece of user code goes through the executor;
 * this module only decides what runs next. Each node has a path; results recorded at a path are replayed, which is
 * what makes resume (and recovery) re-walk the graph without re-running finished work.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import type * as Step from "../Step.js"
import type { Node, StepLike } from "../Workflow.js"
import * as Executor from "./executor.js"
import type { Halt, RunEnv, WorkflowScope } from "./executor.js"
import * as Cause from "effect/Cause"

/** Tracks how many sleeps are in progress, so the run's status is `waiting` exactly while one is. */
export interface WaitTracker {
  readonly enter: Effect.Effect<void>
  readonly leave: Effect.Effect<void>
}

/** Walks a whole workflow (the root, or a nested one) and answers its last node's output. */
export const runWorkflow = (
  env: RunEnv,
  waits: WaitTracker,
  workflow: { readonly nodes: ReadonlyArray<Node> },
  input: unknown,
  prefix: string
): Effect.Effect<unknown, Halt> =>
  Effect.suspend(() => {
    const scope: WorkflowScope = { initData: input, results: new Map() }
    let value: unknown = input
    return Effect.as(
      Effect.forEach(workflow.nodes, (node, i) =>
        Effect.map(runNode(env, waits, scope, node, value, `${prefix}${i}`), (out) => {
          value = out
        }), { discard: true }),
      undefined
    ).pipe(Effect.map(() => value))
  })

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
      return all(
        node.steps.map((step) => [step.id, runStepLike(env, waits, scope, step, input, `${path}:${step.id}`)] as const),
        "unbounded"
      ).pipe(Effect.map(Object.fromEntries))
    case "Branch":
      return Effect.gen(function*() {
        const chosen: Array<StepLike> = []
        for (let i = 0; i < node.branches.length; i++) {
          const [condition, step] = node.branches[i]!
          if (yield* Executor.evaluateCondition(env, scope, condition, input, node.id, `${path}?${i}`)) {
            chosen.push(step)
          }
        }
        const outputs = yield* all(
          chosen.map((step) => [step.id, runStepLike(env, waits, scope, step, input, `${path}:${step.id}`)] as const),
          "unbounded"
        )
        return Object.fromEntries(outputs)
      })
    case "Sleep":
      return Effect.flatMap(
        Executor.resolveSleep(env, scope, node.duration, input, node.id, path),
        (until) => wait(env, waits, node.id, path, until, input)
      )
    case "SleepUntil":
      return Effect.flatMap(
        Executor.resolveSleepUntil(env, scope, node.date, input, node.id, path),
        (until) => wait(env, waits, node.id, path, until, input)
      )
    case "Loop":
      return Effect.gen(function*() {
        let value = input
        for (let i = 0;; i++) {
          value = yield* runStepLike(env, waits, scope, node.step, value, `${path}#${i}`)
          const holds = yield* Executor.evaluateCondition(env, scope, node.condition, value, node.id, `${path}#${i}?`)
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
              cause: Cause.die(new TypeError(`"${node.id}" iterates over its input, which must be an array, but got ${typeof input}.`))
            })
          )
        }
        return all(
          input.map((item: unknown, k) => [k, runStepLike(env, waits, scope, node.step, item, `${path}[${k}]`)] as const),
          node.concurrency
        ).pipe(Effect.map((entries) => entries.map(([, out]) => out)))
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
  workflow: Extract<StepLike, { readonly _tag: "Workflow" }>,
  input: unknown,
  path: string
): Effect.Effect<unknown, Halt> =>
  Effect.gen(function*() {
    const known = env.memo.get(path)
    if (known !== undefined && known.status === "success") {
      const output = yield* Executor.decodeStored(workflow.id, path, workflow.outputSchema, known.output)
      scope.results.set(workflow.id, output)
      return output
    }
    const stepCallId = crypto.randomUUID()
    const encodedInput = yield* Effect.exit(Schema.encodeUnknown(workflow.inputSchema)(input))
    yield* Executor.emitStepStart(env, workflow.id, stepCallId, Exit.isSuccess(encodedInput) ? encodedInput.value : input)
    if (Exit.isFailure(encodedInput)) {
      return yield* Executor.fail(env, workflow.id, path, stepCallId, 1, Cause.die(new Error(
        `Nested workflow "${workflow.id}" received input that does not match its inputSchema: ${
          Cause.squash(encodedInput.cause) instanceof Error ? (Cause.squash(encodedInput.cause) as Error).message : ""
        }`
      )))
    }
    const output = yield* runWorkflow(env, waits, workflow, input, `${path}/`)
    const encoded = yield* Effect.exit(Schema.encodeUnknown(workflow.outputSchema)(output))
    if (Exit.isFailure(encoded)) {
      return yield* Executor.fail(env, workflow.id, path, stepCallId, 1, Cause.die(new Error(
        `Nested workflow "${workflow.id}" produced output that does not match its outputSchema: ${
          (Cause.squash(encoded.cause) as Error).message
        }`
      )))
    }
    return yield* Executor.succeed(env, scope, workflow.id, path, stepCallId, 1, output, encoded.value)
  })

/** Sleeps until `until` (recorded by the executor), emitting `workflow-step-waiting`, then passes `input` through. */
const wait = (
  env: RunEnv,
  waits: WaitTracker,
  id: string,
  path: string,
  until: number,
  input: unknown
): Effect.Effect<unknown> =>
  Effect.gen(function*() {
    const done = `${path}!`
    if (env.memo.get(done)?.status === "success") return input
    const startedAt = yield* Clock.currentTimeMillis
    yield* env.emit({ type: "workflow-step-waiting", runId: env.runId, from: "WORKFLOW", payload: { id, startedAt, until } })
    yield* Effect.acquireUseRelease(waits.enter, () => Effect.sleep(Math.max(0, until - startedAt)), () => waits.leave)
    const record = { path: done, stepId: id, status: "success" as const }
    yield* Effect.orDie(env.store.putStep(env.runId, record))
    env.memo.set(done, record)
    const endedAt = yield* Clock.currentTimeMillis
    yield* env.emit({
      type: "workflow-step-result",
      runId: env.runId,
      from: "WORKFLOW",
      payload: { id, stepCallId: crypto.randomUUID(), status: "success", endedAt }
    })
    return input
  })

/**
 * Runs keyed branches concurrently to their end, then fails with the first failure in the given order, or with all
 * suspensions together, or answers every output. Siblings are never interrupted by a failure, so what a run emits
 * does not depend on timing.
 */
const all = <K>(
  entries: ReadonlyArray<readonly [K, Effect.Effect<unknown, Halt>]>,
  concurrency: number | "unbounded"
): Effect.Effect<Array<readonly [K, unknown]>, Halt> =>
  Effect.flatMap(
    Effect.forEach(entries, ([key, effect]) => Effect.map(Effect.either(effect), (result) => [key, result] as const), {
      concurrency
    }),
    (results): Effect.Effect<Array<readonly [K, unknown]>, Halt> => {
      const suspended: Array<Executor.Suspension["suspended"][number]> = []
      const outputs: Array<readonly [K, unknown]> = []
      for (const [key, result] of results) {
        if (Either.isRight(result)) {
          outputs.push([key, result.right])
        } else if (result.left._tag === "StepFailure") {
          return Effect.fail(result.left)
        } else {
          suspended.push(...result.left.suspended)
        }
      }
      return suspended.length > 0 ? Effect.fail(new Executor.Suspension({ suspended })) : Effect.succeed(outputs)
    }
  )
