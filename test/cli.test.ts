/**
 * The `stepwise` command, run as users run it: a child process (`node bin/stepwise.mjs ...`, and once through
 * `npx stepwise`) reading a store that the test fills by running workflows (test/fixtures/cli-workflows.ts) with the
 * default engine, on SQLite and on Postgres. Its output is not a terminal, so it is plain.
 *
 * Each start of the command costs about two seconds of CPU (most of it tsx loading the source and its dependencies
 * through its hooks), and a test mostly waits for it: the tests run at once, and so do the commands of a test that
 * do not depend on each other. Only `runs` needs its store to itself, so it runs first on it, alone.
 */
import { PgClient } from "@effect/sql-pg"
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Layer, Redacted, Schema } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { availableParallelism } from "node:os"
import { fileURLToPath } from "node:url"
import { EventBus, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"
import * as Format from "../src/internal/cli/format.js"
import * as Postgres from "stepwise/postgres"
import * as Sqlite from "stepwise/sqlite"
import { databaseUrl, postgresEnabled, tempSqliteFile } from "./backends.js"
import { fails, Gate, gated, greet } from "./fixtures/cli-workflows.js"

const root = fileURLToPath(new URL("..", import.meta.url))
const fixture = "test/fixtures/cli-workflows.ts"

interface Child {
  readonly child: ChildProcess
  stdout: string
  stderr: string
  readonly exited: Promise<number | null>
}

/** Starts the command; the environment names no store, so only its flags do. */
const spawnCli = (
  args: ReadonlyArray<string>,
  command: ReadonlyArray<string> = [process.execPath, "bin/stepwise.mjs"],
  extraEnv: Record<string, string> = {}
) => {
  const env: Record<string, string | undefined> = { ...process.env, NO_COLOR: "1" }
  delete env["DATABASE_URL"]
  delete env["STEPWISE_SQLITE_FILE"]
  Object.assign(env, extraEnv)
  const child = spawn(command[0]!, [...command.slice(1), ...args], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] })
  const proc: Child = {
    child,
    stdout: "",
    stderr: "",
    exited: new Promise((resolve) => child.on("exit", (code) => resolve(code)))
  }
  child.stdout!.on("data", (data) => (proc.stdout += String(data)))
  child.stderr!.on("data", (data) => (proc.stderr += String(data)))
  return proc
}

/**
 * How many commands run at once: a start is CPU-bound, so more than the cores can take only slows each one down
 * (all of this file's at once starved the test's own Postgres connection past its timeout).
 */
const slots = Effect.unsafeMakeSemaphore(availableParallelism() + 1)

/** Runs an effect that starts one command, holding a slot until it ends. */
const inSlot = slots.withPermits(1)

/** Runs the command to its end. */
const cli = (...args: ReadonlyArray<string>) => cliWith({}, ...args)

const cliWith = (env: Record<string, string>, ...args: ReadonlyArray<string>) =>
  inSlot(Effect.promise(async () => {
    const proc = spawnCli(args, undefined, env)
    const code = await proc.exited
    return { code, stdout: proc.stdout, stderr: proc.stderr }
  }))

const rows = (stdout: string) => stdout.trimEnd().split("\n").slice(1).map((line) => line.split(/\s{2,}/))

/** The store the command reads, and the flags that name it. */
class Store extends Context.Tag("test/cli/Store")<Store, { readonly flags: ReadonlyArray<string>; readonly where: string }>() {}

const engineOn = <E>(store: Layer.Layer<RunStore.RunStore, E>) =>
  WorkflowEngine.layerDefault.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, store)))

const sqliteBackend = Layer.unwrapEffect(Effect.sync(() => {
  const filename = tempSqliteFile()
  return Layer.merge(
    Layer.succeed(Store, { flags: ["--sqlite", filename], where: `the SQLite store at ${filename}` }),
    engineOn(Sqlite.layer({ filename }))
  )
}))

/** A database of its own, so that `runs` lists only what these tests wrote; dropped at the end. */
const postgresBackend = Layer.unwrapScoped(Effect.gen(function*() {
  const name = `stepwise_cli_${process.pid}_${Date.now()}`
  yield* Effect.acquireRelease(
    Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(`CREATE DATABASE ${name}`)),
    () => Effect.ignore(Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)))
  ).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 })))
  const url = new URL(databaseUrl)
  url.pathname = `/${name}`
  return Layer.merge(
    Layer.succeed(Store, { flags: ["--postgres", url.toString()], where: `the Postgres store at ${url.toString()}` }),
    engineOn(Postgres.layer({ url: url.toString(), maxConnections: 4 }))
  )
}))

const cliSuite = (name: string, backend: Layer.Layer<Store | WorkflowEngine.WorkflowEngine | RunStore.RunStore, unknown>) =>
  layer(backend, { timeout: 60_000, excludeTestServices: true })(`on ${name}`, (it) => {
    // Not at once with this store's other tests: it compares the whole listing with the store's.
    it.effect("runs lists the runs newest first, and filters them by workflow, status and limit", () =>
      Effect.gen(function*() {
        const { flags } = yield* Store
        const engine = yield* WorkflowEngine.WorkflowEngine
        const store = yield* RunStore.RunStore
        yield* Effect.flatMap(engine.start(greet, { name: "Ada" }), (run) => run.result)
        yield* Effect.flatMap(engine.start(fails, 0), (run) => Effect.exit(run.result))
        yield* Effect.flatMap(engine.start(greet, { name: "Bob" }), (run) => run.result)
        const newest = (yield* store.listRuns({ order: "newest-first", limit: 20 })).map((r) => r.runId)

        const [all, failed, ofGreet, none] = yield* Effect.all([
          cli("runs", ...flags),
          cli("runs", ...flags, "--status", "failed"),
          cli("runs", ...flags, "--workflow", "cli-greet", "--limit", "1"),
          cli("runs", ...flags, "--workflow", "no-such-workflow")
        ], { concurrency: "unbounded" })
        expect(all.code).toBe(0)
        expect(all.stdout.split("\n")[0]).toMatch(/^RUN ID\s+WORKFLOW\s+STATUS\s+CREATED \(UTC\)\s+DURATION$/)
        expect(rows(all.stdout).map((row) => row[0])).toEqual(newest)
        expect(rows(all.stdout)[0]).toEqual([newest[0], "cli-greet", "success", expect.stringMatching(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/), expect.stringMatching(/^\d+(ms|\.\d+s)$/)])

        expect(rows(failed.stdout).map((row) => [row[1], row[2]])).toContainEqual(["cli-fails", "failed"])
        expect(rows(failed.stdout).every((row) => row[2] === "failed")).toBe(true)
        expect(rows(ofGreet.stdout)).toHaveLength(1)
        expect(rows(ofGreet.stdout)[0]![0]).toBe(newest[0])
        expect(none).toMatchObject({ code: 0, stdout: "", stderr: expect.stringContaining("No runs match in the") })
      }), { concurrent: false })

    it.effect("show prints a run's status, input and output, and each step with its attempts and timings", () =>
      Effect.gen(function*() {
        const { flags } = yield* Store
        const engine = yield* WorkflowEngine.WorkflowEngine
        const run = yield* engine.start(greet, { name: "Ada" })
        yield* run.result
        const { code, stdout } = yield* cli("show", run.runId, ...flags)
        expect(code).toBe(0)
        const lines = stdout.split("\n")
        expect(lines.slice(0, 3)).toEqual([`Run        ${run.runId}`, "Workflow   cli-greet", "Status     success"])
        expect(lines).toContain(`Input      {"name":"Ada"}`)
        expect(lines).toContain(`Output     "HELLO ADA / hello Ada!"`)
        expect(lines).toContain("Steps (4)")
        const table = stdout.slice(stdout.indexOf("PATH"))
        expect(table.split("\n")[0]).toMatch(/^PATH\s+STEP\s+STATUS\s+ATTEMPTS\s+STARTED \(UTC\)\s+TOOK\s+NOTE$/)
        const time = expect.stringMatching(/^\d\d:\d\d:\d\d\.\d{3}$/)
        const took = expect.stringMatching(/^\d+ms$/)
        expect(rows(table)).toEqual([
          ["0", "hello", "success", "1", time, took],
          ["1:exclaim", "exclaim", "success", "1", time, took],
          ["1:shout", "shout", "success", "1", time, took],
          ["2", "map-2", "success", "1", time, took]
        ])
      }))

    it.effect("show prints the error of a failed run, and which step failed", () =>
      Effect.gen(function*() {
        const { flags } = yield* Store
        const engine = yield* WorkflowEngine.WorkflowEngine
        const run = yield* engine.start(fails, 0)
        expect(Exit.isFailure(yield* Effect.exit(run.result))).toBe(true)
        const { code, stdout } = yield* cli("show", run.runId, ...flags)
        expect(code).toBe(0)
        const lines = stdout.split("\n")
        expect(lines).toContain("Status     failed")
        expect(lines).toContain("Error      Error: cannot divide by zero")
        expect(lines).toContain("Failed at  divide")
        expect(rows(stdout.slice(stdout.indexOf("PATH")))).toEqual([
          ["0", "divide", "failed", "1", expect.stringMatching(/:/), expect.stringMatching(/ms$/), "Error: cannot divide by zero"]
        ])
      }))

    it.effect("tail follows a run's stream live, and ends when the stream does", () =>
      Effect.gen(function*() {
        const { flags } = yield* Store
        const engine = yield* WorkflowEngine.WorkflowEngine
        const gate = yield* Deferred.make<void>()
        const run = yield* engine.start(gated, null).pipe(Effect.provideService(Gate, gate))
        yield* inSlot(Effect.gen(function*() {
          const tail = spawnCli(["tail", run.runId, ...flags])
          // The first chunk arrives while the step still waits: the command is following the run live.
          const deadline = Date.now() + 30_000
          while (!tail.stdout.includes("one\n")) {
            if (tail.child.exitCode !== null || Date.now() > deadline) {
              return expect.fail(`tail printed ${JSON.stringify(tail.stdout)}; stderr: ${tail.stderr}`)
            }
            yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
          }
          expect(tail.child.exitCode).toBeNull()
          yield* Deferred.succeed(gate, undefined)
          yield* run.result
          expect(yield* Effect.promise(() => tail.exited)).toBe(0)
          expect(tail.stdout).toBe("one\ntwo\nthree\n")
          // not a terminal: no progress line
          expect(tail.stderr).toBe("")
        }))
      }))

    it.effect("tail reads a named stream with --namespace, and the run's events with --events", () =>
      Effect.gen(function*() {
        const { flags } = yield* Store
        const engine = yield* WorkflowEngine.WorkflowEngine
        const run = yield* engine.start(greet, { name: "Ada" })
        yield* run.result
        const [stream, logs, events] = yield* Effect.all([
          cli("tail", run.runId, ...flags),
          cli("tail", run.runId, "--namespace", "logs", ...flags),
          cli("tail", run.runId, "--events", ...flags)
        ], { concurrency: "unbounded" })
        expect(stream).toMatchObject({ code: 0, stdout: `{"word":"hello"}\n{"word":"Ada"}\n` })
        expect(logs).toMatchObject({ code: 0, stdout: "greeting Ada\n" })
        expect(events.code).toBe(0)
        const parsed = events.stdout.trimEnd().split("\n").map((line) => JSON.parse(line) as { type: string; runId: string })
        expect(parsed[0]).toMatchObject({ type: "workflow-start", runId: run.runId })
        expect(parsed.at(-1)).toMatchObject({ type: "workflow-finish", payload: { workflowStatus: "success" } })
        expect(parsed.filter((e) => e.type === "workflow-step-result")).toHaveLength(4)
      }))

    it.effect("graph paints a module's workflow with a run of it", () =>
      Effect.gen(function*() {
        const { flags } = yield* Store
        const engine = yield* WorkflowEngine.WorkflowEngine
        const store = yield* RunStore.RunStore
        const run = yield* engine.start(greet, { name: "Ada" })
        yield* run.result
        const painted = yield* cli("graph", `${fixture}#greet`, "--run", run.runId, ...flags)
        const steps = yield* store.getSteps(run.runId)
        expect(painted).toEqual({ code: 0, stdout: `${Workflow.toMermaid(greet, { run: steps })}\n`, stderr: "" })
        expect(painted.stdout).toContain("class n0,n1_0,n1_1,n2 done")
      }))

    it.effect("an unknown run id exits with code 1 and says where it looked", () =>
      Effect.gen(function*() {
        const { flags, where } = yield* Store
        const results = yield* Effect.all([
          cli("show", "no-such-run", ...flags),
          cli("tail", "no-such-run", ...flags),
          cli("graph", `${fixture}#greet`, "--run", "no-such-run", ...flags)
        ], { concurrency: "unbounded" })
        for (const result of results) {
          expect(result).toEqual({
            code: 1,
            stdout: "",
            stderr: `stepwise: There is no run "no-such-run" in ${where}. \`stepwise runs\` lists the runs it has.\n`
          })
        }
      }))
  })

// A test's time includes waiting for slots behind the other tests' commands: more than a command's own minute.
describe.concurrent("stepwise command", { timeout: 180_000 }, () => {
  cliSuite("SQLite", sqliteBackend)
  if (postgresEnabled) cliSuite("Postgres", postgresBackend)

  it.live("a store that is not there, or not reachable, exits with code 1 and says so", () =>
    Effect.gen(function*() {
      const missing = `${tempSqliteFile()}.missing`
      const [sqlite, postgres, both] = yield* Effect.all([
        cli("runs", "--sqlite", missing),
        cli("runs", "--postgres", "postgres://postgres:secret@127.0.0.1:1/nowhere"),
        cli("runs", "--sqlite", missing, "--postgres", databaseUrl)
      ], { concurrency: "unbounded" })
      expect(sqlite).toEqual({
        code: 1,
        stdout: "",
        stderr: `stepwise: There is no SQLite store at ${missing}. Run a workflow first (npm run demo writes ` +
          ".stepwise/stepwise.db), or name the store with --sqlite FILE, --postgres URL or DATABASE_URL.\n"
      })
      expect(postgres.code).toBe(1)
      expect(postgres.stderr).toMatch(
        /^stepwise: Cannot reach the Postgres store at postgres:\/\/postgres@127\.0\.0\.1:1\/nowhere: .*ECONNREFUSED/
      )
      expect(postgres.stderr).not.toContain("secret")
      expect(both).toMatchObject({ code: 1, stderr: "stepwise: Give one store: --sqlite FILE or --postgres URL, not both.\n" })
    }))

  it.live("with no store named, reads the SQLite file of STEPWISE_SQLITE_FILE when it exists, else DATABASE_URL", () =>
    Effect.gen(function*() {
      const filename = tempSqliteFile()
      const run = yield* Effect.flatMap(WorkflowEngine.WorkflowEngine, (engine) => engine.start(greet, { name: "Ada" }))
        .pipe(Effect.tap((run) => run.result), Effect.provide(engineOn(Sqlite.layer({ filename }))))
      const unreachable = "postgres://postgres@127.0.0.1:1/nowhere"
      const [sqlite, postgres] = yield* Effect.all([
        cliWith({ STEPWISE_SQLITE_FILE: filename, DATABASE_URL: unreachable }, "runs"),
        cliWith({ STEPWISE_SQLITE_FILE: `${filename}.missing`, DATABASE_URL: unreachable }, "runs")
      ], { concurrency: "unbounded" })
      expect(sqlite.code).toBe(0)
      expect(rows(sqlite.stdout).map((row) => row[0])).toEqual([run.runId])
      expect(postgres.code).toBe(1)
      expect(postgres.stderr).toContain(`stepwise: Cannot reach the Postgres store at ${unreachable}: `)
    }))

  // It reads no store: once here, not on each backend.
  it.live("graph prints a module's workflow as Mermaid", () =>
    Effect.gen(function*() {
      expect(yield* cli("graph", `${fixture}#greet`)).toEqual({ code: 0, stdout: `${Workflow.toMermaid(greet)}\n`, stderr: "" })
    }))

  it.live("graph says which module or export it cannot find", () =>
    Effect.gen(function*() {
      const [module, exported, notWorkflow, unnamed] = yield* Effect.all([
        cli("graph", "test/fixtures/nowhere.ts#wf"),
        cli("graph", `${fixture}#nope`),
        cli("graph", `${fixture}#notAWorkflow`),
        cli("graph", fixture)
      ], { concurrency: "unbounded" })
      expect(module).toMatchObject({
        code: 1,
        stderr: `stepwise: There is no module at ${root}test/fixtures/nowhere.ts.\n`
      })
      const list = "its workflows: fails, gated, greet"
      expect(exported).toMatchObject({ code: 1, stderr: `stepwise: ${fixture} has no export named "nope" (${list}).\n` })
      expect(notWorkflow).toMatchObject({
        code: 1,
        stderr: `stepwise: ${fixture}#notAWorkflow is not a committed workflow (${list}).\n`
      })
      expect(unnamed).toMatchObject({ code: 1, stderr: `stepwise: Name the workflow to draw as ${fixture}#EXPORT (${list}).\n` })
    }))

  it.live("npx stepwise runs the package's own command from its folder", () =>
    Effect.gen(function*() {
      const { code, proc } = yield* inSlot(Effect.promise(async () => {
        const proc = spawnCli(["--help"], ["npx", "--no-install", "stepwise"])
        return { code: await proc.exited, proc }
      }))
      expect({ code, stderr: proc.stderr }).toEqual({ code: 0, stderr: "" })
      for (const command of ["runs", "show", "tail", "graph"]) expect(proc.stdout).toContain(`  - ${command} `)
    }))
})

describe("stepwise show's timings", () => {
  it.live("match each step record with its own execution: foreach items by output, sleeps by their events", () =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine.WorkflowEngine
      const store = yield* RunStore.RunStore
      const slowDouble = Step.make({
        id: "double",
        inputSchema: Schema.Number,
        outputSchema: Schema.Number,
        // item k takes (3 - k) * 20 ms: the items end in the reverse of the order they started
        execute: ({ inputData }) => Effect.as(Effect.sleep(`${(3 - inputData) * 20} millis`), inputData * 2)
      })
      const inner = Workflow.make({ id: "inner", inputSchema: Schema.Array(Schema.Number), outputSchema: Schema.Number })
        .pipe(Workflow.map(({ inputData }) => Effect.succeed(inputData.length)), Workflow.commit)
      const wf = Workflow.make({ id: "timed", inputSchema: Schema.Array(Schema.Number), outputSchema: Schema.Number }).pipe(
        Workflow.foreach(slowDouble, { concurrency: 3 }),
        Workflow.sleep("10 millis"),
        Workflow.andThen(inner),
        Workflow.commit
      )
      const run = yield* engine.start(wf, [0, 1, 2])
      expect(yield* run.result).toBe(3)
      const { steps } = yield* store.getSteps(run.runId)
      const { events } = yield* store.readEvents(run.runId, 0, 1000)
      const timed = Format.timings(steps, events)
      const took = (path: string) => {
        const t = timed.get(path)
        return t?.startedAt === undefined || t.endedAt === undefined ? undefined : t.endedAt - t.startedAt
      }
      // each item's own duration, not a sibling's
      expect(took("0[0]")).toBeGreaterThanOrEqual(55)
      expect(took("0[1]")).toBeGreaterThanOrEqual(35)
      expect(took("0[1]")).toBeLessThan(took("0[0]")!)
      expect(took("0[2]")).toBeLessThan(took("0[1]")!)
      expect(timed.get("1")?.note).toMatch(/^until \d\d:\d\d:\d\d\.\d{3}$/)
      expect(took("1!")).toBeGreaterThanOrEqual(9)
      expect(took("2")).toBeDefined()
      expect(took("2/0")).toBeDefined()
      expect(Format.stepsTable(Format.plain, steps, events, Date.now()).map((line) => line.split(/\s{2,}/).slice(0, 3)))
        .toEqual([
          ["PATH", "STEP", "STATUS"],
          ["0[0]", "double", "success"],
          ["0[1]", "double", "success"],
          ["0[2]", "double", "success"],
          ["1", "sleep-1", "success"],
          ["1!", "sleep-1", "success"],
          ["2", "inner", "success"],
          ["2/0", "map-0", "success"]
        ])
    }).pipe(Effect.provide(WorkflowEngine.layerMemory)))
})
