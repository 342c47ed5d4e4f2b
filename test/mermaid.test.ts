import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Schema } from "effect"
import { RunStore, Step, Workflow, WorkflowEngine } from "stepwise"

const inc = <const Id extends string>(id: Id) =>
  Step.make({
    id,
    inputSchema: Schema.Number,
    outputSchema: Schema.Number,
    execute: ({ inputData }) => Effect.succeed(inputData + 1)
  })

const start = (id = "wf") => Workflow.make({ id, inputSchema: Schema.Number, outputSchema: Schema.Number })

const lines = (...text: ReadonlyArray<string>) => text.join("\n")

describe("Workflow.toMermaid", () => {
  it("draws a chain of steps from start to end", () => {
    const wf = start().pipe(Workflow.andThen(inc("a")), Workflow.andThen(inc("b")), Workflow.commit)
    expect(Workflow.toMermaid(wf)).toBe(lines(
      "flowchart TD",
      `  start(["wf"])`,
      `  n0["a"]`,
      `  n1["b"]`,
      `  finish(["end"])`,
      "  start --> n0",
      "  n0 --> n1",
      "  n1 --> finish"
    ))
  })

  it("draws a parallel as a fork to each step and a join", () => {
    const wf = start().pipe(
      Workflow.parallel([inc("a"), inc("b")]),
      Workflow.map(({ inputData }) => Effect.succeed(inputData.a + inputData.b)),
      Workflow.commit
    )
    expect(Workflow.toMermaid(wf)).toBe(lines(
      "flowchart TD",
      `  start(["wf"])`,
      `  n0{{"parallel"}}`,
      `  n0_0["a"]`,
      `  n0_1["b"]`,
      `  n0_join(("join"))`,
      `  n1[/"map"/]`,
      `  finish(["end"])`,
      "  start --> n0",
      "  n0 --> n0_0",
      "  n0_0 --> n0_join",
      "  n0 --> n0_1",
      "  n0_1 --> n0_join",
      "  n0_join --> n1",
      "  n1 --> finish"
    ))
  })

  it("labels each branch with its condition's name, or its number when the condition has none", () => {
    const isBig = ({ inputData }: Workflow.Context<number>) => Effect.succeed(inputData > 10)
    const wf = start().pipe(
      Workflow.branch([
        [isBig, inc("big")],
        [({ inputData }) => Effect.succeed(inputData <= 10), inc("small")]
      ]),
      Workflow.map(({ inputData }) => Effect.succeed(inputData.big ?? inputData.small ?? 0)),
      Workflow.commit
    )
    expect(Workflow.toMermaid(wf)).toBe(lines(
      "flowchart TD",
      `  start(["wf"])`,
      `  n0{{"branch"}}`,
      `  n0_0["big"]`,
      `  n0_1["small"]`,
      `  n0_join(("join"))`,
      `  n1[/"map"/]`,
      `  finish(["end"])`,
      "  start --> n0",
      `  n0 -->|"isBig"| n0_0`,
      "  n0_0 --> n0_join",
      `  n0 -->|"condition 2"| n0_1`,
      "  n0_1 --> n0_join",
      "  n0_join --> n1",
      "  n1 --> finish"
    ))
  })

  it("draws dowhile and dountil as a condition with an edge back to the step", () => {
    const wf = start().pipe(
      Workflow.dowhile(inc("grow"), ({ inputData }) => Effect.succeed(inputData < 3)),
      Workflow.dountil(inc("more"), function enough({ inputData }) {
        return Effect.succeed(inputData > 5)
      }),
      Workflow.commit
    )
    expect(Workflow.toMermaid(wf)).toBe(lines(
      "flowchart TD",
      `  start(["wf"])`,
      `  n0_s["grow"]`,
      `  n0_c{"while condition"}`,
      `  n1_s["more"]`,
      `  n1_c{"until enough"}`,
      `  finish(["end"])`,
      "  start --> n0_s",
      "  n0_s --> n0_c",
      `  n0_c -->|"true"| n0_s`,
      `  n0_c -->|"false"| n1_s`,
      "  n1_s --> n1_c",
      `  n1_c -->|"false"| n1_s`,
      `  n1_c -->|"true"| finish`
    ))
  })

  it("draws a foreach with its concurrency", () => {
    const wf = Workflow.make({ id: "each", inputSchema: Schema.Array(Schema.Number), outputSchema: Schema.Array(Schema.Number) })
      .pipe(Workflow.foreach(inc("item"), { concurrency: 4 }), Workflow.commit)
    expect(Workflow.toMermaid(wf)).toBe(lines(
      "flowchart TD",
      `  start(["each"])`,
      `  n0{{"foreach (concurrency 4)"}}`,
      `  n0_s["item"]`,
      `  n0_join(("join"))`,
      `  finish(["end"])`,
      "  start --> n0",
      `  n0 -->|"each item"| n0_s`,
      "  n0_s --> n0_join",
      "  n0_join --> finish"
    ))
  })

  it("draws sleeps with their duration or date, or says they are computed", () => {
    const wf = start().pipe(
      Workflow.sleep("90 seconds"),
      Workflow.sleep(({ inputData }) => Effect.succeed(inputData)),
      Workflow.sleepUntil(new Date("2030-01-02T03:04:05.000Z")),
      Workflow.sleepUntil(() => Effect.succeed(new Date())),
      Workflow.commit
    )
    expect(Workflow.toMermaid(wf)).toBe(lines(
      "flowchart TD",
      `  start(["wf"])`,
      `  n0("sleep 1m 30s")`,
      `  n1("sleep (computed)")`,
      `  n2("sleep until 2030-01-02T03:04:05.000Z")`,
      `  n3("sleep until (computed)")`,
      `  finish(["end"])`,
      "  start --> n0",
      "  n0 --> n1",
      "  n1 --> n2",
      "  n2 --> n3",
      "  n3 --> finish"
    ))
  })

  it("draws a map with its function's name when it has one", () => {
    const double = ({ inputData }: Workflow.Context<number>) => Effect.succeed(inputData * 2)
    const wf = start().pipe(Workflow.map(double), Workflow.commit)
    expect(Workflow.toMermaid(wf)).toContain(`  n0[/"map double"/]`)
  })

  it("draws a nested workflow as a subgraph, also as the step of a loop", () => {
    const inner = start("inner").pipe(Workflow.andThen(inc("x")), Workflow.andThen(inc("y")), Workflow.commit)
    const wf = start("outer").pipe(
      Workflow.andThen(inner),
      Workflow.dountil(inner, ({ inputData }) => Effect.succeed(inputData > 9)),
      Workflow.commit
    )
    expect(Workflow.toMermaid(wf)).toBe(lines(
      "flowchart TD",
      `  start(["outer"])`,
      `  subgraph n0["inner"]`,
      `    n0_n0["x"]`,
      `    n0_n1["y"]`,
      "  end",
      `  subgraph n1_s["inner"]`,
      `    n1_s_n0["x"]`,
      `    n1_s_n1["y"]`,
      "  end",
      `  n1_c{"until condition"}`,
      `  finish(["end"])`,
      "  start --> n0_n0",
      "  n0_n0 --> n0_n1",
      "  n0_n1 --> n1_s_n0",
      "  n1_s_n0 --> n1_s_n1",
      "  n1_s_n1 --> n1_c",
      `  n1_c -->|"false"| n1_s_n0`,
      `  n1_c -->|"true"| finish`
    ))
  })

  it("escapes what would end a label or be read as markup", () => {
    const condition = () => Effect.succeed(true)
    Object.defineProperty(condition, "name", { value: `is "big" & <b>#1</b>` })
    const wf = start().pipe(Workflow.branch([[condition, inc("a")]]), Workflow.map(() => Effect.succeed(1)), Workflow.commit)
    expect(Workflow.toMermaid(wf)).toContain(`  n0 -->|"is #34;big#34; #38; #60;b#62;#35;1#60;/b#62;"| n0_0`)
  })

  it("is pipeable", () => {
    const wf = start().pipe(Workflow.andThen(inc("a")), Workflow.commit)
    expect(wf.pipe(Workflow.toMermaid())).toBe(Workflow.toMermaid(wf))
    expect(wf.pipe(Workflow.toMermaid({ run: { steps: [] } }))).toBe(Workflow.toMermaid(wf, { run: { steps: [] } }))
  })
})

const classDefs = [
  "  classDef done fill:#d3f9d8,stroke:#2b8a3e,color:#000",
  "  classDef running fill:#fff3bf,stroke:#f08c00,color:#000",
  "  classDef failed fill:#ffe3e3,stroke:#c92a2a,color:#000",
  "  classDef suspended fill:#e5dbff,stroke:#5f3dc4,color:#000"
]

describe("Workflow.toMermaid with a run", () => {
  it.effect("paints every node a finished run went through as done", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const store = yield* RunStore.RunStore
      const inner = start("inner").pipe(Workflow.andThen(inc("h")), Workflow.commit)
      const wf = start("paint").pipe(
        Workflow.andThen(inc("a")),
        Workflow.parallel([inc("b"), inc("c")]),
        Workflow.map(({ inputData }) => Effect.succeed(inputData.b)),
        Workflow.branch([
          [({ inputData }) => Effect.succeed(inputData > 0), inc("d")],
          [({ inputData }) => Effect.succeed(inputData < 0), inc("e")]
        ]),
        Workflow.map(({ inputData }) => Effect.succeed([inputData.d ?? 0, 1, 2])),
        Workflow.foreach(inc("f"), { concurrency: 2 }),
        Workflow.map(({ inputData }) => Effect.succeed(inputData.length)),
        Workflow.dountil(inc("g"), ({ inputData }) => Effect.succeed(inputData >= 5)),
        Workflow.sleep(0),
        Workflow.andThen(inner),
        Workflow.commit
      )
      const run = yield* engine.start(wf, 1)
      expect(yield* run.result).toBe(6)
      const steps = yield* store.getSteps(run.runId)
      expect(Workflow.toMermaid(wf, { run: steps })).toBe(lines(
        "flowchart TD",
        `  start(["paint"])`,
        `  n0["a"]`,
        `  n1{{"parallel"}}`,
        `  n1_0["b"]`,
        `  n1_1["c"]`,
        `  n1_join(("join"))`,
        `  n2[/"map"/]`,
        `  n3{{"branch"}}`,
        `  n3_0["d"]`,
        `  n3_1["e"]`,
        `  n3_join(("join"))`,
        `  n4[/"map"/]`,
        `  n5{{"foreach (concurrency 2)"}}`,
        `  n5_s["f"]`,
        `  n5_join(("join"))`,
        `  n6[/"map"/]`,
        `  n7_s["g"]`,
        `  n7_c{"until condition"}`,
        `  n8("sleep 0ms")`,
        `  subgraph n9["inner"]`,
        `    n9_n0["h"]`,
        "  end",
        `  finish(["end"])`,
        "  start --> n0",
        "  n0 --> n1",
        "  n1 --> n1_0",
        "  n1_0 --> n1_join",
        "  n1 --> n1_1",
        "  n1_1 --> n1_join",
        "  n1_join --> n2",
        "  n2 --> n3",
        `  n3 -->|"condition 1"| n3_0`,
        "  n3_0 --> n3_join",
        `  n3 -->|"condition 2"| n3_1`,
        "  n3_1 --> n3_join",
        "  n3_join --> n4",
        "  n4 --> n5",
        `  n5 -->|"each item"| n5_s`,
        "  n5_s --> n5_join",
        "  n5_join --> n6",
        "  n6 --> n7_s",
        "  n7_s --> n7_c",
        `  n7_c -->|"false"| n7_s`,
        `  n7_c -->|"true"| n8`,
        "  n8 --> n9_n0",
        "  n9_n0 --> finish",
        ...classDefs,
        // `e` is not painted: its condition did not hold.
        "  class n0,n1_0,n1_1,n2,n3,n3_0,n4,n5_s,n6,n7_s,n7_c,n8,n9_n0 done"
      ))
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it.effect("paints steps running, failed and suspended as the store has them mid-run", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const store = yield* RunStore.RunStore
      const started = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const wf = start("states").pipe(
        Workflow.parallel([
          inc("ok"),
          Step.make({
            id: "boom",
            inputSchema: Schema.Number,
            outputSchema: Schema.Number,
            execute: () => Effect.fail("no")
          }),
          Step.make({
            id: "ask",
            inputSchema: Schema.Number,
            outputSchema: Schema.Number,
            execute: ({ suspend }) => suspend({ question: "go on?" })
          }),
          Step.make({
            id: "slow",
            inputSchema: Schema.Number,
            outputSchema: Schema.Number,
            execute: ({ inputData }) =>
              Effect.zipRight(Deferred.succeed(started, undefined), Effect.as(Deferred.await(gate), inputData))
          })
        ]),
        Workflow.map(({ inputData }) => Effect.succeed(inputData.ok)),
        Workflow.commit
      )
      const run = yield* engine.start(wf, 1)
      yield* Deferred.await(started)
      // the other three settle on their own; wait until the store shows them
      const steps = yield* store.getSteps(run.runId).pipe(
        Effect.repeat({ until: (s) => s.steps.filter((r) => r.status !== "running").length === 3 })
      )
      expect(Workflow.toMermaid(wf, { run: steps }).split("\n").slice(-4)).toEqual([
        "  class n0_0 done",
        "  class n0_3 running",
        "  class n0_1 failed",
        "  class n0_2 suspended"
      ])
      yield* Deferred.succeed(gate, undefined)
      yield* Effect.exit(run.result)
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))

  it("paints a sleep that is waiting as running, and a loop by its worst iteration", () => {
    const wf = start().pipe(
      Workflow.dowhile(inc("again"), ({ inputData }) => Effect.succeed(inputData < 3)),
      Workflow.sleep("1 hour"),
      Workflow.commit
    )
    const steps: ReadonlyArray<RunStore.StepRecord> = [
      { path: "0#0", stepId: "again", status: "success", output: 2, attempt: 1 },
      { path: "0#0?", stepId: "dowhile-0", status: "success", output: true },
      { path: "0#1", stepId: "again", status: "failed", error: { name: "Error", message: "x" }, attempt: 3 },
      { path: "1", stepId: "sleep-1", status: "success", output: 0 }
    ]
    expect(Workflow.toMermaid(wf, { run: { steps } }).split("\n").slice(-3)).toEqual([
      "  class n0_c done",
      "  class n1 running",
      "  class n0_s failed"
    ])
  })
})
