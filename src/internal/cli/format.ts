/**
 * What the `stepwise` command prints: tables, times and durations, values, and the timings of a run's steps as its
 * event log has them. Pure functions of the records, so that the command's output is the same on every store.
 */
import type { RunRecord, StepRecord } from "../store/model.js"
import type { WorkflowEvent } from "../../WorkflowEvent.js"

/** How output is written: colors and truncation only where a person reads it (a terminal). */
export interface Style {
  readonly color: boolean
  /** Long values are cut to this many characters; `undefined`: never cut. */
  readonly width: number | undefined
}

export const plain: Style = { color: false, width: undefined }

const ansi = (code: string) => (style: Style, text: string) => style.color ? `\x1b[${code}m${text}\x1b[0m` : text

export const bold = ansi("1")
export const dim = ansi("2")

const statusColors: Record<string, string> = {
  success: "32",
  done: "32",
  running: "33",
  waiting: "36",
  pending: "2",
  suspended: "35",
  failed: "31",
  canceled: "2"
}

export const status = (style: Style, text: string): string => {
  const code = statusColors[text]
  return code === undefined ? text : ansi(code)(style, text)
}

/** Milliseconds as a person reads them: `840ms`, `1.42s`, `2m 03s`, `1h 02m`. */
export const duration = (millis: number): string => {
  if (!Number.isFinite(millis)) return "-"
  const ms = Math.max(0, Math.round(millis))
  if (ms < 1000) return `${ms}ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`
  const s = Math.floor(ms / 1000)
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
}

/** A time in UTC: `2026-12-06 19:22:01`, with milliseconds when asked. */
export const time = (millis: number, options?: { readonly millis?: boolean }): string => {
  const iso = new Date(millis).toISOString()
  return `${iso.slice(0, 10)} ${iso.slice(11, options?.millis === true ? 23 : 19)}`
}

/** The clock part of a time in UTC: `19:22:01.130`. */
export const clock = (millis: number): string => new Date(millis).toISOString().slice(11, 23)

/** A value as one line of JSON (bytes as their length), cut to the style's width. */
export const value = (style: Style, v: unknown, room = 0): string => {
  let text: string
  try {
    text = v instanceof Uint8Array
      ? `<${v.length} bytes>`
      : JSON.stringify(v, (_key, x: unknown) => x instanceof Uint8Array ? `<${x.length} bytes>` : x) ?? "undefined"
  } catch {
    text = String(v)
  }
  return cut(style, text, room)
}

/** Cuts text to the style's width, less `room` for what precedes it on the line. */
export const cut = (style: Style, text: string, room = 0): string => {
  if (style.width === undefined) return text
  const max = Math.max(20, style.width - room)
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`
}

/**
 * A table: a header and rows of cells, each column as wide as its widest cell. `paint` colors a cell after it is
 * padded, so that colors do not upset the alignment.
 */
export const table = (
  style: Style,
  header: ReadonlyArray<string>,
  rows: ReadonlyArray<ReadonlyArray<string>>,
  paint: (column: number, cell: string, padded: string) => string = (_c, _cell, padded) => padded
): Array<string> => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>, color: (i: number, cell: string, padded: string) => string) =>
    cells.map((cell, i) => color(i, cell, i === cells.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ").trimEnd()
  return [
    line(header, (_i, _cell, padded) => bold(style, padded)),
    ...rows.map((row) => line(row, paint))
  ]
}

/** The table of `stepwise runs`. */
export const runsTable = (style: Style, runs: ReadonlyArray<RunRecord>): Array<string> =>
  table(
    style,
    ["RUN ID", "WORKFLOW", "STATUS", "CREATED (UTC)", "DURATION"],
    runs.map((run) => [
      run.runId,
      run.workflowId,
      run.status,
      time(run.createdAt),
      run.status === "success" || run.status === "failed" || run.status === "canceled"
        ? duration(run.updatedAt - run.createdAt)
        : "-"
    ]),
    (column, cell, padded) => column === 2 ? padded.replace(cell, status(style, cell)) : padded
  )

// ---------------------------------------------------------------------------------------------------------------
// steps

/** Compares paths in walk order: numbers as numbers (`2` before `10`), a node before its parts. */
export const comparePaths = (a: string, b: string): number => {
  const tokens = (p: string) => p.match(/\d+|\D+/g) ?? []
  const ta = tokens(a)
  const tb = tokens(b)
  for (let i = 0; i < Math.min(ta.length, tb.length); i++) {
    const x = ta[i]!
    const y = tb[i]!
    if (x === y) continue
    const nx = /^\d/.test(x)
    const ny = /^\d/.test(y)
    if (nx && ny) return Number(x) - Number(y)
    return x < y ? -1 : 1
  }
  return ta.length - tb.length
}

/** One execution of a step-like, as its `workflow-step-start` and `workflow-step-result` events tell it. */
interface Execution {
  readonly id: string
  startedAt?: number
  endedAt?: number
  status?: string
  output?: string
  error?: string
  used: boolean
}

/** When a step's record's execution started and ended, and what the row says besides. */
export interface Timing {
  readonly startedAt?: number
  readonly endedAt?: number
  readonly note?: string
}

const json = (v: unknown): string => {
  try {
    return JSON.stringify(v) ?? "undefined"
  } catch {
    return String(v)
  }
}

/**
 * The timings of a run's step records, from its event log. Events name a step by id, not by path, so each record is
 * matched with an execution of its step id: a running record by its call id; a finished one with the first unused
 * execution (in log order, records taken in walk order) that ended the same way (the same output, or the same error).
 * Executions of one step at several paths (loop iterations, foreach items) are told apart by their outputs; two with
 * the same outcome are matched in order. Conditions have no events, so no timings; sleeps have their waiting event.
 */
export const timings = (
  steps: ReadonlyArray<StepRecord>,
  events: ReadonlyArray<WorkflowEvent>
): Map<string, Timing> => {
  const executions: Array<Execution> = []
  const byCall = new Map<string, Execution>()
  const waits: Array<{ readonly id: string; readonly startedAt: number; readonly until: number }> = []
  for (const event of events) {
    if (event.from !== "WORKFLOW") continue
    const payload = (event as { readonly payload?: Record<string, unknown> }).payload ?? {}
    const id = String(payload["id"])
    if (event.type === "workflow-step-start") {
      const execution: Execution = { id, startedAt: Number(payload["startedAt"]), used: false }
      executions.push(execution)
      byCall.set(String(payload["stepCallId"]), execution)
    } else if (event.type === "workflow-step-result") {
      let execution = byCall.get(String(payload["stepCallId"]))
      if (execution === undefined) {
        execution = { id, used: false }
        executions.push(execution)
      }
      execution.endedAt = Number(payload["endedAt"])
      execution.status = String(payload["status"])
      execution.output = json(payload["output"])
      execution.error = json(payload["error"])
    } else if (event.type === "workflow-step-waiting") {
      waits.push({ id, startedAt: Number(payload["startedAt"]), until: Number(payload["until"]) })
    }
  }
  const byPath = new Map(steps.map((s) => [s.path, s]))
  const out = new Map<string, Timing>()
  for (const step of [...steps].sort((a, b) => comparePaths(a.path, b.path))) {
    // A sleep is recorded twice, with no attempt (which steps and maps have): its wake-up time at `p`, its end at `p!`.
    const resolved = step.path.endsWith("!") ? byPath.get(step.path.slice(0, -1)) : undefined
    const isSleep = (record: StepRecord | undefined) =>
      record !== undefined && record.attempt === undefined && record.status === "success" && typeof record.output === "number"
    if (step.attempt === undefined && (resolved === undefined ? isSleep(step) : isSleep(resolved))) {
      const until = (resolved ?? step).output as number
      const wait = waits.find((w) => w.id === step.stepId && w.until === until)
      if (resolved === undefined) {
        out.set(step.path, { ...(wait === undefined ? {} : { startedAt: wait.startedAt }), note: `until ${clock(until)}` })
        continue
      }
      const end = executions.find((e) => !e.used && e.id === step.stepId && e.startedAt === undefined && e.status === "success")
      if (end !== undefined) end.used = true
      out.set(step.path, {
        ...(wait === undefined ? {} : { startedAt: wait.startedAt }),
        ...(end?.endedAt === undefined ? {} : { endedAt: end.endedAt }),
        note: "woke"
      })
      continue
    }
    if (step.status === "running") {
      const execution = step.stepCallId === undefined ? undefined : byCall.get(step.stepCallId)
      const note = step.worker === undefined ? undefined : `on ${step.worker}`
      out.set(step.path, {
        ...(execution?.startedAt === undefined ? {} : { startedAt: execution.startedAt }),
        ...(note === undefined ? {} : { note })
      })
      continue
    }
    const output = json(step.output)
    const error = json(step.error)
    const execution = executions.find((e) =>
      !e.used && e.id === step.stepId && e.startedAt !== undefined && e.status === step.status &&
      (step.status === "success" ? e.output === output : step.status === "failed" ? e.error === error : true)
    )
    if (execution !== undefined) execution.used = true
    const note = step.status === "failed"
      ? `${step.error?.name ?? "Error"}: ${step.error?.message ?? ""}`
      : step.status === "suspended"
      ? `payload ${json(step.suspendPayload)}`
      : step.attempt === undefined && typeof step.output === "boolean" && /(\?\d*)$/.test(step.path)
      ? `condition ${step.output}`
      : undefined
    out.set(step.path, {
      ...(execution?.startedAt === undefined ? {} : { startedAt: execution.startedAt }),
      ...(execution?.endedAt === undefined ? {} : { endedAt: execution.endedAt }),
      ...(note === undefined ? {} : { note })
    })
  }
  return out
}

/** The steps table of `stepwise show`. */
export const stepsTable = (
  style: Style,
  steps: ReadonlyArray<StepRecord>,
  events: ReadonlyArray<WorkflowEvent>,
  now: number
): Array<string> => {
  const timed = timings(steps, events)
  const sorted = [...steps].sort((a, b) => comparePaths(a.path, b.path))
  const rows = sorted.map((step) => {
    const t = timed.get(step.path) ?? {}
    const took = t.startedAt === undefined
      ? "-"
      : t.endedAt !== undefined
      ? duration(t.endedAt - t.startedAt)
      : step.status === "running"
      ? `${duration(now - t.startedAt)}…`
      : "-"
    return [
      step.path,
      step.stepId,
      step.status,
      step.attempt === undefined ? "-" : String(step.attempt),
      t.startedAt === undefined ? "-" : clock(t.startedAt),
      took,
      t.note ?? ""
    ]
  })
  const header = ["PATH", "STEP", "STATUS", "ATTEMPTS", "STARTED (UTC)", "TOOK", "NOTE"]
  // The note is last: cut it to what the line leaves.
  let room = 0
  for (let i = 0; i < header.length - 1; i++) room += Math.max(header[i]!.length, ...rows.map((r) => r[i]!.length)) + 2
  return table(
    style,
    header,
    rows.map((row) => [...row.slice(0, -1), cut(style, row[row.length - 1]!, room)]),
    (column, cell, padded) => column === 2 ? padded.replace(cell, status(style, cell)) : padded
  )
}
