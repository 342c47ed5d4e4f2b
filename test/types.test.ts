/**
 * Compile-time checks of how types flow through the builders. `npm run typecheck` (tsc over test/) is what checks
 * them: each `@ts-expect-error` fails the type check if the error it expects goes away.
 */
import { describe, expectTypeOf, it } from "@effect/vitest"
import { Context, Effect, Schema } from "effect"
import { Step, Workflow, WorkflowEngine } from "stepwise"
import type { Run, WorkflowError } from "stepwise"

const User = Schema.Struct({ userId: Schema.String })
const Name = Schema.Struct({ name: Schema.String })

const fetchUser = Step.make({
  id: "fetch-user",
  inputSchema: User,
  outputSchema: Name,
  execute: ({ inputData }) => Effect.succeed({ name: inputData.userId })
})
const countLetters = Step.make({
  id: "count",
  inputSchema: Name,
  outputSchema: Schema.Number,
  execute: ({ inputData }) => Effect.succeed(inputData.name.length)
})
const shout = Step.make({
  id: "shout",
  inputSchema: Name,
  outputSchema: Schema.String,
  execute: ({ inputData }) => Effect.succeed(inputData.name.toUpperCase())
})

class Greeter extends Context.Tag("Greeter")<Greeter, { readonly greet: (n: string) => string }>() {}
class Oops extends Schema.TaggedError<Oops>()("Oops", {}) {}

const needsGreeter = Step.make({
  id: "greet",
  inputSchema: Name,
  outputSchema: Schema.String,
  execute: ({ inputData }) =>
    Effect.gen(function*() {
      const greeter = yield* Greeter
      const logs = yield* Workflow.getWritable<string>({ namespace: "logs" })
      yield* logs.write("greeting")
      if (inputData.name === "") return yield* new Oops()
      return greeter.greet(inputData.name)
    })
})

describe("types", () => {
  it("a step's context is typed by its schemas, and its type records I, O, E and R (without RunContext)", () => {
    expectTypeOf(Step.make).toBeFunction()
    expectTypeOf<Step.Input<typeof needsGreeter>>().toEqualTypeOf<{ readonly name: string }>()
    expectTypeOf<Step.Output<typeof needsGreeter>>().toEqualTypeOf<string>()
    // writing to a run stream can fail with StreamClosedError, and the type says so
    expectTypeOf<Step.Error<typeof needsGreeter>>().toEqualTypeOf<Oops | WorkflowError.StreamClosedError>()
    expectTypeOf<Step.Context<typeof needsGreeter>>().toEqualTypeOf<Greeter>()
  })

  it("each builder takes the previous node's output as input", () => {
    const wf = Workflow.make({ id: "typed", inputSchema: User, outputSchema: Schema.Number }).pipe(
      Workflow.then(fetchUser),
      Workflow.then(countLetters),
      Workflow.commit
    )
    expectTypeOf(wf).toEqualTypeOf<Workflow.Workflow<"typed", { readonly userId: string }, number, never, never>>()

    Workflow.make({ id: "mismatch", inputSchema: User, outputSchema: Schema.Number }).pipe(
      // @ts-expect-error count expects { name }, but the workflow input is { userId }
      Workflow.then(countLetters)
    )
  })

  it("commit checks the last output against the declared output", () => {
    Workflow.make({ id: "wrong-output", inputSchema: User, outputSchema: Schema.Number }).pipe(
      Workflow.then(fetchUser),
      // @ts-expect-error the last output is { name }, the workflow declares number
      Workflow.commit
    )
  })

  it("parallel outputs a record by step id; branch a partial one", () => {
    const par = Workflow.make({ id: "par", inputSchema: Name, outputSchema: Schema.Unknown }).pipe(
      Workflow.parallel([countLetters, shout]),
      Workflow.map(({ inputData }) => {
        expectTypeOf(inputData).toEqualTypeOf<{ readonly count: number; readonly shout: string }>()
        return Effect.succeed(inputData)
      }),
      Workflow.commit
    )
    expectTypeOf(par).not.toBeNever()

    Workflow.make({ id: "br", inputSchema: Name, outputSchema: Schema.Unknown }).pipe(
      Workflow.branch([
        [({ inputData }) => Effect.succeed(inputData.name.length > 3), countLetters],
        [({ inputData }) => Effect.succeed(inputData.name.length <= 3), shout]
      ]),
      Workflow.map(({ inputData }) => {
        expectTypeOf(inputData).toEqualTypeOf<{ readonly count?: number; readonly shout?: string }>()
        return Effect.succeed(inputData)
      })
    )
  })

  it("conditions, sleep functions and maps get the previous output as inputData, and a writer", () => {
    Workflow.make({ id: "ctx", inputSchema: Name, outputSchema: Schema.Unknown }).pipe(
      Workflow.sleep(({ inputData, writer }) => {
        expectTypeOf(inputData).toEqualTypeOf<{ readonly name: string }>()
        expectTypeOf(writer.write).toBeFunction()
        return Effect.succeed(10)
      }),
      Workflow.sleepUntil(({ inputData }) => Effect.succeed(new Date(inputData.name.length))),
      Workflow.dowhile(fetchUser as unknown as Step.Step<"loop", { readonly name: string }, { readonly name: string }>, ({ inputData }) => {
        expectTypeOf(inputData).toEqualTypeOf<{ readonly name: string }>()
        return Effect.succeed(false)
      })
    )
  })

  it("foreach needs an array of the step's input and outputs an array", () => {
    Workflow.make({ id: "each", inputSchema: Schema.Array(Name), outputSchema: Schema.Array(Schema.Number) }).pipe(
      Workflow.foreach(countLetters, { concurrency: 2 }),
      Workflow.commit
    )
    Workflow.make({ id: "each-bad", inputSchema: Name, outputSchema: Schema.Unknown }).pipe(
      // @ts-expect-error the input is not an array
      Workflow.foreach(countLetters)
    )
  })

  it("a workflow's errors and requirements are the union of its steps', and start requires them", () => {
    const wf = Workflow.make({ id: "needs", inputSchema: Name, outputSchema: Schema.String }).pipe(
      Workflow.then(needsGreeter),
      Workflow.commit
    )
    expectTypeOf(wf).toEqualTypeOf<
      Workflow.Workflow<"needs", { readonly name: string }, string, Oops | WorkflowError.StreamClosedError, Greeter>
    >()
    const started = Effect.flatMap(WorkflowEngine.WorkflowEngine, (engine) => engine.start(wf, { name: "ada" }))
    expectTypeOf(started).toEqualTypeOf<
      Effect.Effect<
        Run.Run<string, Oops | WorkflowError.StreamClosedError>,
        WorkflowError.WorkflowInputError,
        WorkflowEngine.WorkflowEngine | Greeter
      >
    >()
  })

  it("a committed workflow nests as a step", () => {
    const inner = Workflow.make({ id: "inner", inputSchema: User, outputSchema: Name }).pipe(
      Workflow.then(fetchUser),
      Workflow.commit
    )
    const outer = Workflow.make({ id: "outer", inputSchema: User, outputSchema: Schema.Number }).pipe(
      Workflow.then(inner),
      Workflow.then(countLetters),
      Workflow.commit
    )
    expectTypeOf(outer).toEqualTypeOf<Workflow.Workflow<"outer", { readonly userId: string }, number, never, never>>()
  })
})
