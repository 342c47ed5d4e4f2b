/**
 * The `stepwise` command: the runs in a store, one run in detail, a run's stream or events followed live, and a
 * workflow's graph as a Mermaid flowchart. Built with `@effect/cli`; `bin/stepwise.mjs` runs it.
 *
 * ```sh
 * npx stepwise runs --status failed --limit 5        # newest first
 * npx stepwise show <run-id>
 * npx stepwise tail <run-id> [--namespace logs] [--events]
 * npx stepwise graph examples/chat.ts#chat [--run <run-id>]
 * ```
 *
 * The store is the SQLite file of `--sqlite FILE`, or the Postgres database of `--postgres URL`; with neither, the
 * SQLite file of `STEPWISE_SQLITE_FILE` (default `.stepwise/stepwise.db`, where the demo writes) when it exists, else
 * the database of `DATABASE_URL`. Output is plain when it does not go to a terminal.
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import { existsSync, readFileSync } from "node:fs"
import { resolve } from "node:path"
import { pathToFileURL } from "node:url"
import * as EventBus from "./EventBus.js"
import * as Reader from "./internal/bus/reader.js"
import * as Format from "./internal/cli/format.js"
import * as Postgres from "./Postgres.js"
import * as RunStore from "./RunStore.js"
import * as Sqlite from "./Sqlite.js"
import * as Workflow from "./Workflow.js"
import type { WorkflowEvent } from "./WorkflowEvent.js"
import { redactUrl } from "./internal/url.js"

/**
 * Why the command could not do what it was asked: an unknown run, a store it cannot open, a module or export it
 * cannot find. The command prints the message and exits with code 1.
 *
 * @since 0.1.0
 * @category errors
 */
export class CliError extends Data.TaggedError("CliError")<{ readonly message: string }> {}

// -----------------------------------------------------------------------------------------------------------------
// the store

type StoreChoice =
  | { readonly _tag: "Sqlite"; readonly filename: string }
  | { readonly _tag: "Postgres"; readonly url: string }

const storeFlags = {
  sqlite: Options.text("sqlite").pipe(
    Options.withPseudoName("FILE"),
    Options.withDescription(
      "The SQLite store to read (default: STEPWISE_SQLITE_FILE, else .stepwise/stepwise.db, when that file exists)"
    ),
    Options.optional
  ),
  postgres: Options.text("postgres").pipe(
    Options.withPseudoName("URL"),
    Options.withDescription("The Postgres store to read (default: DATABASE_URL, when there is no SQLite file to read)"),
    Options.optional
  )
}

interface StoreFlags {
  readonly sqlite: Option.Option<string>
  readonly postgres: Option.Option<string>
}

const chooseStore = (flags: StoreFlags): Effect.Effect<StoreChoice, CliError> =>
  Effect.gen(function*() {
    if (Option.isSome(flags.sqlite) && Option.isSome(flags.postgres)) {
      return yield* new CliError({ message: "Give one store: --sqlite FILE or --postgres URL, not both." })
    }
    if (Option.isSome(flags.sqlite)) return { _tag: "Sqlite", filename: resolve(flags.sqlite.value) } as const
    if (Option.isSome(flags.postgres)) return { _tag: "Postgres", url: flags.postgres.value } as const
    // The demo's file first: `npm run demo` then `stepwise runs` shows the demo's runs, whatever DATABASE_URL says
    // (a developer's shell often sets it for the test suites).
    const file = yield* Effect.orDie(
      Config.nonEmptyString("STEPWISE_SQLITE_FILE").pipe(Config.withDefault(Sqlite.defaultFilename))
    )
    const filename = resolve(file)
    if (existsSync(filename)) return { _tag: "Sqlite", filename } as const
    const env = yield* Effect.orDie(Config.option(Config.nonEmptyString("DATABASE_URL")))
    if (Option.isSome(env)) return { _tag: "Postgres", url: env.value } as const
    return { _tag: "Sqlite", filename } as const
  })

const describeStore = (choice: StoreChoice): string =>
  choice._tag === "Sqlite" ? `the SQLite store at ${choice.filename}` : `the Postgres store at ${redactUrl(choice.url)}`

/** The message of a failure, with the message of what caused it when that says more (a driver's error). */
const reasonOf = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  const message = (e: unknown): string | undefined =>
    typeof e === "object" && e !== null && "message" in e && typeof e.message === "string" && e.message !== ""
      ? e.message
      : undefined
  const top = message(error) ?? String(error)
  const inner = typeof error === "object" && error !== null && "cause" in error ? message(error.cause) : undefined
  return inner === undefined || top.includes(inner) ? top : `${top} (${inner})`
}

const storeLayer = (choice: StoreChoice): Layer.Layer<RunStore.RunStore, CliError> => {
  const layer: Layer.Layer<RunStore.RunStore, unknown> = choice._tag === "Sqlite"
    ? Layer.unwrapEffect(Effect.suspend(() =>
      existsSync(choice.filename)
        ? Effect.succeed(Sqlite.layer({ filename: choice.filename }))
        : Effect.fail(
          new CliError({
            message: `There is no SQLite store at ${choice.filename}. Run a workflow first (npm run demo writes ` +
              `.stepwise/stepwise.db), or name the store with --sqlite FILE, --postgres URL or DATABASE_URL.`
          })
        )
    ))
    : Postgres.layer({ url: choice.url, maxConnections: 2 })
  return Layer.catchAllCause(layer, (cause) => {
    const failure = Cause.failureOption(cause)
    if (Option.isSome(failure) && failure.value instanceof CliError) return Layer.fail(failure.value)
    return Layer.fail(
      new CliError({
        message: choice._tag === "Sqlite"
          ? `Cannot open ${describeStore(choice)}: ${reasonOf(cause)}`
          : `Cannot reach ${describeStore(choice)}: ${reasonOf(cause)}`
      })
    )
  })
}

/** Runs `f` with the store the flags name; a store failure on the way becomes a `CliError` with its message. */
const withStore = <A, E extends { readonly message: string }>(
  flags: StoreFlags,
  f: (store: RunStore.RunStore["Type"], where: string) => Effect.Effect<A, E | CliError>
): Effect.Effect<A, CliError> =>
  Effect.flatMap(chooseStore(flags), (choice) =>
    Effect.flatMap(RunStore.RunStore, (store) => f(store, describeStore(choice))).pipe(
      Effect.mapError((e) => e instanceof CliError ? e : new CliError({ message: e.message })),
      Effect.provide(storeLayer(choice))
    ))

const findRun = (store: RunStore.RunStore["Type"], where: string, runId: string) =>
  Effect.flatMap(store.getRun(runId), (run) =>
    run === undefined
      ? Effect.fail(
        new CliError({ message: `There is no run "${runId}" in ${where}. \`stepwise runs\` lists the runs it has.` })
      )
      : Effect.succeed(run))

// -----------------------------------------------------------------------------------------------------------------
// output

const stdoutIsTty = () => process.stdout.isTTY === true

/** A terminal's width, less one column so that a full line does not wrap (some report 0 columns: take 100). */
const columns = (stream: NodeJS.WriteStream): number =>
  stream.columns !== undefined && stream.columns > 0 ? stream.columns - 1 : 100

const style = (): Format.Style => {
  const tty = stdoutIsTty()
  return {
    color: tty && (process.env["NO_COLOR"] ?? "") === "",
    width: tty ? columns(process.stdout) : undefined
  }
}

const print = (line: string) => Effect.sync(() => void process.stdout.write(`${line}\n`))
const warn = (line: string) => Effect.sync(() => void process.stderr.write(`${line}\n`))

// -----------------------------------------------------------------------------------------------------------------
// runs

const statuses = ["pending", "running", "waiting", "suspended", "success", "failed", "canceled"] as const

const runsCommand = Command.make("runs", {
  ...storeFlags,
  workflow: Options.text("workflow").pipe(
    Options.withPseudoName("ID"),
    Options.withDescription("Only the runs of this workflow"),
    Options.optional
  ),
  status: Options.choice("status", statuses).pipe(
    Options.withDescription("Only the runs in this status (repeat for several)"),
    Options.repeated
  ),
  limit: Options.integer("limit").pipe(
    Options.withPseudoName("N"),
    Options.withDescription("At most this many runs"),
    Options.withDefault(20)
  )
}, (flags) =>
  withStore(flags, (store, where) =>
    Effect.gen(function*() {
      if (flags.limit < 1) return yield* new CliError({ message: `--limit must be at least 1, got ${flags.limit}.` })
      const runs = yield* store.listRuns({
        ...(Option.isSome(flags.workflow) ? { workflowId: flags.workflow.value } : {}),
        ...(flags.status.length > 0 ? { statuses: flags.status } : {}),
        order: "newest-first",
        limit: flags.limit
      })
      if (runs.length === 0) {
        const filtered = Option.isSome(flags.workflow) || flags.status.length > 0
        return yield* warn(`No runs${filtered ? " match" : ""} in ${where}.`)
      }
      for (const line of Format.runsTable(style(), runs)) yield* print(line)
    }))).pipe(Command.withDescription("A table of the runs in the store, newest first"))

// -----------------------------------------------------------------------------------------------------------------
// show

/** Every event of a run, a page at a time. */
const allEvents = (store: RunStore.RunStore["Type"], runId: string) =>
  Effect.gen(function*() {
    const events: Array<WorkflowEvent> = []
    for (;;) {
      const page = yield* store.readEvents(runId, events.length, 4096)
      events.push(...page.events)
      if (page.events.length === 0 || events.length >= page.size) return events
    }
  })

const runIdArg = Args.text({ name: "run-id" }).pipe(Args.withDescription("The id of a run (see `stepwise runs`)"))

const showCommand = Command.make("show", { ...storeFlags, runId: runIdArg }, (flags) =>
  withStore(flags, (store, where) =>
    Effect.gen(function*() {
      const run = yield* findRun(store, where, flags.runId)
      const recorded = yield* store.getSteps(run.runId)
      // Records of the engine's own bookkeeping (a run's settlement, `$settled`) are no nodes of the graph.
      const steps = { ...recorded, steps: recorded.steps.filter((step) => !step.path.startsWith("$")) }
      const events = yield* allEvents(store, run.runId)
      const s = style()
      const field = (name: string, text: string) => print(`${Format.bold(s, name.padEnd(10))} ${text}`)
      yield* field("Run", run.runId)
      yield* field("Workflow", run.workflowId)
      yield* field("Status", Format.status(s, run.status))
      yield* field("Created", `${Format.time(run.createdAt, { millis: true })} UTC`)
      const finished = RunStore.isTerminal(run.status)
      yield* field(
        "Updated",
        `${Format.time(run.updatedAt, { millis: true })} UTC` +
          (finished ? ` (${Format.duration(run.updatedAt - run.createdAt)} after it was created)` : "")
      )
      if (run.owner !== undefined) yield* field("Owner", run.owner)
      yield* field("Input", Format.value(s, run.input, 11))
      if ("output" in run && run.status === "success") yield* field("Output", Format.value(s, run.output, 11))
      if (run.error !== undefined) yield* field("Error", Format.cut(s, `${run.error.name}: ${run.error.message}`, 11))
      if (run.failedStep !== undefined) yield* field("Failed at", run.failedStep)
      for (const suspended of run.suspended ?? []) {
        yield* field("Suspended", Format.cut(s, `${suspended.step} (path ${suspended.path}): ${Format.value(Format.plain, suspended.payload)}`, 11))
      }
      yield* print("")
      if (steps.steps.length === 0) return yield* print("No steps recorded yet.")
      yield* print(Format.bold(s, `Steps (${steps.steps.length})`))
      for (const line of Format.stepsTable(s, steps.steps, events, Date.now())) yield* print(line)
    }))).pipe(Command.withDescription("A run: its status, input, result or error, and each step with its attempts and timings"))

// -----------------------------------------------------------------------------------------------------------------
// tail

const spinner = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"]

/** What `tail` writes for one chunk: a string as it is, bytes as they are, anything else as a line of JSON. */
const writeChunk = (chunk: unknown) =>
  Effect.sync(() => {
    if (typeof chunk === "string") process.stdout.write(`${chunk}\n`)
    else if (chunk instanceof Uint8Array) process.stdout.write(chunk)
    else process.stdout.write(`${Format.value(Format.plain, chunk)}\n`)
  })

const tailCommand = Command.make("tail", {
  ...storeFlags,
  runId: runIdArg,
  namespace: Options.text("namespace").pipe(
    Options.withPseudoName("NS"),
    Options.withDescription("Follow this stream of the run instead of its default stream"),
    Options.optional
  ),
  events: Options.boolean("events").pipe(Options.withDescription("Follow the run's events instead of a stream"))
}, (flags) =>
  withStore(flags, (store, where) =>
    Effect.gen(function*() {
      if (flags.events && Option.isSome(flags.namespace)) {
        return yield* new CliError({ message: "Give --events or --namespace, not both: events are not a stream." })
      }
      const run = yield* findRun(store, where, flags.runId)
      const bus = yield* EventBus.EventBus
      const what = flags.events ? "events" : "chunks"
      const namespace = Option.getOrElse(flags.namespace, () => "")
      // Readers poll the store when the bus (this process's own) does not reach them: that is how a run executed by
      // another process is followed.
      const items: Stream.Stream<unknown, { readonly message: string }> = flags.events
        ? Reader.events(store, bus, run.runId)
        : Reader.chunks(store, bus, run.runId, namespace)
      const progress = process.stderr.isTTY === true
      let count = 0
      let status: string = run.status
      let frame = 0
      const since = Date.now()
      const clear = () => {
        if (progress) process.stderr.write("\r\x1b[K")
      }
      const draw = () => {
        if (!progress) return
        const s: Format.Style = { color: (process.env["NO_COLOR"] ?? "") === "", width: columns(process.stderr) }
        // Cut first, then color the status: escape codes count for nothing on the screen.
        const line = Format.cut(
          s,
          `${spinner[frame++ % spinner.length]} ${run.runId} ${status} · ${count} ${what} · ` +
            `following for ${Format.duration(Date.now() - since)}`
        )
        process.stderr.write(`\r\x1b[K${line.replace(` ${status} `, ` ${Format.status(s, status)} `)}`)
      }
      if (progress) {
        yield* Effect.forkScoped(Effect.repeat(Effect.sync(draw), Schedule.spaced("100 millis")))
        yield* Effect.forkScoped(Effect.repeat(
          Effect.flatMap(store.getRun(run.runId), (r) => Effect.sync(() => void (status = r?.status ?? status))),
          Schedule.spaced("1 second")
        ))
      }
      yield* Stream.runForEach(items, (item) =>
        Effect.zipRight(
          Effect.sync(clear),
          Effect.zipRight(
            flags.events ? print(Format.value(Format.plain, item)) : writeChunk(item),
            Effect.sync(() => {
              count++
              draw()
            })
          )
        ))
      clear()
      if (progress) {
        const last = yield* store.getRun(run.runId)
        yield* warn(
          `${flags.events ? "events" : `stream${namespace === "" ? "" : ` "${namespace}"`}`} ended after ${count} ${what}; ` +
            `run ${run.runId} is ${last?.status ?? "gone"}`
        )
      }
    }).pipe(Effect.scoped, Effect.provide(EventBus.layerMemory)))).pipe(
    Command.withDescription("Follow a run's default stream (or --namespace NS, or --events) live until it ends")
  )

// -----------------------------------------------------------------------------------------------------------------
// graph

const importModule = (file: string): Effect.Effect<Record<string, unknown>, CliError> =>
  Effect.tryPromise({
    try: async () => {
      const url = pathToFileURL(file).href
      try {
        return (await import(url)) as Record<string, unknown>
      } catch (error) {
        // Plain Node does not load TypeScript: load tsx's hooks (when it is installed) and try again.
        if ((error as { readonly code?: string }).code !== "ERR_UNKNOWN_FILE_EXTENSION") throw error
        const tsx = "tsx/esm/api"
        const api = (await import(tsx).catch(() => {
          throw new Error(`it is TypeScript, and tsx is not installed to load it: install tsx, or name its compiled .js`)
        })) as { readonly register: () => unknown }
        api.register()
        // Node remembers the failed import of `url`: ask for the module under another URL.
        return (await import(`${url}?tsx`)) as Record<string, unknown>
      }
    },
    catch: (error) =>
      new CliError({ message: `Cannot import ${file}: ${error instanceof Error ? error.message : String(error)}` })
  })

const loadWorkflow = (target: string): Effect.Effect<Workflow.Any, CliError> =>
  Effect.gen(function*() {
    const hash = target.lastIndexOf("#")
    const modulePath = hash === -1 ? target : target.slice(0, hash)
    const name = hash === -1 ? undefined : target.slice(hash + 1)
    const file = resolve(modulePath)
    if (!existsSync(file)) return yield* new CliError({ message: `There is no module at ${file}.` })
    const module = yield* importModule(file)
    const workflows = Object.keys(module).filter((key) => Workflow.isWorkflow(module[key]))
    const list = workflows.length === 0 ? "it exports no committed workflow" : `its workflows: ${workflows.join(", ")}`
    if (name === undefined || name === "") {
      if (Workflow.isWorkflow(module["default"])) return module["default"]
      if (workflows.length === 1) return module[workflows[0]!] as Workflow.Any
      return yield* new CliError({ message: `Name the workflow to draw as ${modulePath}#EXPORT (${list}).` })
    }
    if (!(name in module)) return yield* new CliError({ message: `${modulePath} has no export named "${name}" (${list}).` })
    const value = module[name]
    if (!Workflow.isWorkflow(value)) {
      const builder = typeof value === "object" && value !== null && "_tag" in value && value._tag === "Builder"
      return yield* new CliError({
        message: `${modulePath}#${name} is not a committed workflow` +
          (builder ? ": it is still being built; end it with Workflow.commit." : ` (${list}).`)
      })
    }
    return value
  })

const graphCommand = Command.make("graph", {
  ...storeFlags,
  target: Args.text({ name: "module#export" }).pipe(
    Args.withDescription("A module (path from here; .ts works) and the name of the workflow it exports")
  ),
  run: Options.text("run").pipe(
    Options.withPseudoName("RUN_ID"),
    Options.withDescription("Paint the state of this run of the workflow on the graph"),
    Options.optional
  )
}, (flags) =>
  Effect.gen(function*() {
    const workflow = yield* loadWorkflow(flags.target)
    if (Option.isNone(flags.run)) return yield* print(Workflow.toMermaid(workflow))
    const runId = flags.run.value
    const steps = yield* withStore(flags, (store, where) =>
      Effect.gen(function*() {
        const run = yield* findRun(store, where, runId)
        if (run.workflowId !== workflow.id) {
          return yield* new CliError({
            message: `Run ${runId} is a run of workflow "${run.workflowId}", not of "${workflow.id}".`
          })
        }
        return yield* store.getSteps(runId)
      }))
    yield* print(Workflow.toMermaid(workflow, { run: steps }))
  })).pipe(Command.withDescription("Print the Mermaid flowchart of a workflow a module exports"))

// -----------------------------------------------------------------------------------------------------------------

const version = (() => {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: string }
    return pkg.version ?? "0.0.0"
  } catch {
    return "0.0.0"
  }
})()

/**
 * The `stepwise` command and its subcommands (`runs`, `show`, `tail`, `graph`).
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("stepwise").pipe(
  Command.withDescription("Look at the runs of stepwise workflows, and draw workflows"),
  Command.withSubcommands([runsCommand, showCommand, tailCommand, graphCommand])
)

/**
 * Runs the command on `process.argv`-shaped arguments. A `CliError` is printed (`stepwise: <message>`) before the
 * effect fails with it; an invalid command line is printed by `@effect/cli`. Provide `NodeContext.layer`.
 *
 * @since 0.1.0
 * @category running
 */
export const run = (argv: ReadonlyArray<string>) =>
  Command.run(command, { name: "stepwise", version })(argv).pipe(
    Effect.tapError((error) => error instanceof CliError ? warn(`stepwise: ${error.message}`) : Effect.void),
    plainUnlessTty
  )

const ansiCodes = /\x1b\[[0-9;]*m/g

/** `@effect/cli` writes its help and its errors in color: keep them plain where no terminal shows them. */
const plainUnlessTty = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Console.consoleWith((console) => {
    const strip = (tty: boolean) => (args: ReadonlyArray<unknown>) =>
      tty ? args : args.map((arg) => typeof arg === "string" ? arg.replace(ansiCodes, "") : arg)
    const out = strip(stdoutIsTty())
    const err = strip(process.stderr.isTTY === true)
    return Effect.withConsole(effect, {
      ...console,
      log: (...args) => console.log(...out(args)),
      info: (...args) => console.info(...out(args)),
      error: (...args) => console.error(...err(args)),
      warn: (...args) => console.warn(...err(args))
    })
  })
