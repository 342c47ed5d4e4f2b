/**
 * A workflow's graph as a Mermaid flowchart (`Workflow.toMermaid`), optionally painted with a run's step records.
 *
 * Node ids follow the graph, not the run: node `i` of the root is `n<i>`, of a nested workflow drawn as subgraph `s`,
 * `s_n<i>`; the parts of a node at id `x` are `x_<j>` (the j-th step of a parallel or branch), `x_s` (the step of a
 * loop or foreach), `x_c` (a loop's condition) and `x_join`. The same workflow always gives the same text.
 *
 * Painting maps each drawn node to the paths the interpreter records it at (see `interpreter.ts`: `p:stepId`,
 * `p[k]`, `p#k`, `p#k?`, `p?i`, `p!`, `p/i`). A node drawn once but executed many times (a loop's step, a foreach's
 * step, anything inside them) shows the most telling state of its executions: failed, then suspended, then running,
 * then done.
 */
import * as Duration from "effect/Duration"
import type { Node, StepLike } from "../Workflow.js"
import type { StepRecord } from "./store/model.js"

/** The states a drawn node can be painted with. */
export type Paint = "done" | "running" | "failed" | "suspended"

const paints: ReadonlyArray<Paint> = ["done", "running", "failed", "suspended"]

const classDefs: Record<Paint, string> = {
  done: "fill:#d3f9d8,stroke:#2b8a3e,color:#000",
  running: "fill:#fff3bf,stroke:#f08c00,color:#000",
  failed: "fill:#ffe3e3,stroke:#c92a2a,color:#000",
  suspended: "fill:#e5dbff,stroke:#5f3dc4,color:#000"
}

/** Options of `render`: the step records of a run of the workflow, to paint on it. */
export interface Options {
  readonly run?: { readonly steps: ReadonlyArray<StepRecord> } | undefined
}

interface Exit {
  readonly id: string
  readonly label?: string
}

interface Fragment {
  readonly entry: string
  readonly exits: ReadonlyArray<Exit>
}

/**
 * A label as Mermaid reads it: quoted, with the characters that would end it or be taken for markup written as
 * Mermaid entities (`#35;` is `#`, `#34;` is `"`).
 */
export const escapeLabel = (text: string): string =>
  `"${text.replace(/[#"<>&`]/g, (c) => `#${c.charCodeAt(0)};`).replace(/\r?\n/g, "<br>")}"`

/** A function's own name, when it has one worth showing (arrow functions written in place have none). */
const nameOf = (fn: unknown): string | undefined => {
  if (typeof fn !== "function") return undefined
  const name = fn.name
  return name === "" || name === "anonymous" ? undefined : name
}

const describeDuration = (duration: unknown): string => {
  if (typeof duration === "function") return "sleep (computed)"
  const decoded = Duration.decodeUnknown(duration)
  if (decoded._tag === "None") return "sleep"
  // `Duration.format` writes no unit for nothing at all.
  return `sleep ${Duration.toMillis(decoded.value) === 0 ? "0ms" : Duration.format(decoded.value)}`
}

const describeDate = (date: unknown): string =>
  date instanceof Date
    ? `sleep until ${Number.isNaN(date.getTime()) ? "an invalid date" : date.toISOString()}`
    : "sleep until (computed)"

const paintOfRecord = (record: StepRecord): Paint =>
  record.status === "success" ? "done" : record.status

/** The most telling of several states (failed, suspended, running, done), or none when there is none. */
const worst = (states: ReadonlyArray<Paint | undefined>): Paint | undefined => {
  let found: Paint | undefined
  for (const state of states) {
    if (state === undefined) continue
    if (found === undefined || paints.indexOf(state) > paints.indexOf(found)) found = state
  }
  return found
}

/** Renders `workflow` as the text of a Mermaid `flowchart TD`. */
export const render = (
  workflow: { readonly id: string; readonly nodes: ReadonlyArray<Node> },
  options: Options = {}
): string => {
  const records = options.run === undefined ? undefined : new Map(options.run.steps.map((s) => [s.path, s]))
  const declarations: Array<string> = []
  const edges: Array<string> = []
  const painted = new Map<string, Paint>()

  const declare = (depth: number, line: string) => declarations.push(`${"  ".repeat(depth + 1)}${line}`)
  const edgeLine = (from: Exit, to: string) =>
    `  ${from.id} ${from.label === undefined ? "-->" : `-->|${escapeLabel(from.label)}|`} ${to}`
  const edge = (from: Exit, to: string) => edges.push(edgeLine(from, to))
  /** Renders a part, then puts the edges into it before the part's own edges, so that the text reads in order. */
  const into = (from: ReadonlyArray<Exit>, part: () => Fragment): Fragment => {
    const mark = edges.length
    const fragment = part()
    edges.splice(mark, 0, ...from.map((exit) => edgeLine(exit, fragment.entry)))
    return fragment
  }
  const paint = (id: string, state: Paint | undefined) => {
    if (state !== undefined) painted.set(id, state)
  }

  const at = (path: string): Paint | undefined => {
    const record = records?.get(path)
    return record === undefined ? undefined : paintOfRecord(record)
  }
  const atAll = (paths: ReadonlyArray<string>) => worst(paths.map(at))

  /** The recorded instances `p<open>k<close>` of each path (loop iterations, foreach items), in index order. */
  const instances = (paths: ReadonlyArray<string>, open: string, close: string): Array<string> => {
    if (records === undefined || paths.length === 0) return []
    const found: Array<string> = []
    for (const path of paths) {
      const indices: Array<number> = []
      for (const key of records.keys()) {
        if (!key.startsWith(path) || key[path.length] !== open || !key.endsWith(close)) continue
        const digits = key.slice(path.length + 1, key.length - close.length)
        if (/^(0|[1-9][0-9]*)$/.test(digits)) indices.push(Number(digits))
      }
      indices.sort((a, b) => a - b)
      for (const k of indices) found.push(`${path}${open}${k}${close}`)
    }
    return found
  }

  const renderNodes = (
    nodes: ReadonlyArray<Node>,
    idPrefix: string,
    pathPrefixes: ReadonlyArray<string>,
    depth: number
  ): Fragment => {
    let entry = ""
    let exits: ReadonlyArray<Exit> = []
    nodes.forEach((node, i) => {
      const fragment = into(
        exits,
        () => renderNode(node, `${idPrefix}${i}`, pathPrefixes.map((p) => `${p}${i}`), depth)
      )
      if (i === 0) entry = fragment.entry
      exits = fragment.exits
    })
    return { entry, exits }
  }

  const renderStepLike = (step: StepLike, id: string, paths: ReadonlyArray<string>, depth: number): Fragment => {
    if (step._tag === "Step") {
      declare(depth, `${id}[${escapeLabel(step.id)}]`)
      paint(id, atAll(paths))
      return { entry: id, exits: [{ id }] }
    }
    declare(depth, `subgraph ${id}[${escapeLabel(step.id)}]`)
    const inner = renderNodes(step.nodes, `${id}_n`, paths.map((p) => `${p}/`), depth + 1)
    declare(depth, "end")
    return inner
  }

  /** A fork into several step-likes that all meet at one join. */
  const fork = (
    id: string,
    text: string,
    depth: number,
    branches: ReadonlyArray<{ readonly step: StepLike; readonly id: string; readonly paths: ReadonlyArray<string>; readonly label?: string }>
  ): Fragment => {
    declare(depth, `${id}{{${escapeLabel(text)}}}`)
    const join = `${id}_join`
    for (const b of branches) {
      const fragment = into([b.label === undefined ? { id } : { id, label: b.label }], () =>
        renderStepLike(b.step, b.id, b.paths, depth))
      for (const exit of fragment.exits) edge(exit, join)
    }
    declare(depth, `${join}((${escapeLabel("join")}))`)
    return { entry: id, exits: [{ id: join }] }
  }

  const renderNode = (node: Node, id: string, paths: ReadonlyArray<string>, depth: number): Fragment => {
    switch (node._tag) {
      case "Step":
        return renderStepLike(node.step, id, paths, depth)
      case "Parallel":
        return fork(
          id,
          "parallel",
          depth,
          node.steps.map((step, j) => ({ step, id: `${id}_${j}`, paths: paths.map((p) => `${p}:${step.id}`) }))
        )
      case "Branch": {
        // The fork stands for the evaluation of the conditions: done once every one is recorded.
        if (records !== undefined) {
          const conditions = paths.flatMap((p) => node.branches.map((_, j) => at(`${p}?${j}`)))
          const evaluated = conditions.filter((c) => c !== undefined).length
          paint(
            id,
            conditions.includes("failed")
              ? "failed"
              : evaluated === 0
              ? undefined
              : evaluated === conditions.length
              ? "done"
              : "running"
          )
        }
        return fork(
          id,
          "branch",
          depth,
          node.branches.map(([condition, step], j) => ({
            step,
            id: `${id}_${j}`,
            paths: paths.map((p) => `${p}:${step.id}`),
            label: nameOf(condition) ?? `condition ${j + 1}`
          }))
        )
      }
      case "Foreach":
        return fork(id, `foreach (concurrency ${node.concurrency})`, depth, [{
          step: node.step,
          id: `${id}_s`,
          paths: instances(paths, "[", "]"),
          label: "each item"
        }])
      case "Loop": {
        const iterations = instances(paths, "#", "")
        const body = renderStepLike(node.step, `${id}_s`, iterations, depth)
        const condition = `${id}_c`
        const word = node.mode === "dowhile" ? "while" : "until"
        declare(depth, `${condition}{${escapeLabel(`${word} ${nameOf(node.condition) ?? "condition"}`)}}`)
        paint(condition, atAll(iterations.map((p) => `${p}?`)))
        for (const exit of body.exits) edge(exit, condition)
        edge({ id: condition, label: node.mode === "dowhile" ? "true" : "false" }, body.entry)
        return { entry: body.entry, exits: [{ id: condition, label: node.mode === "dowhile" ? "false" : "true" }] }
      }
      case "Sleep":
      case "SleepUntil": {
        const text = node._tag === "Sleep" ? describeDuration(node.duration) : describeDate(node.date)
        declare(depth, `${id}(${escapeLabel(text)})`)
        // Recorded at `p` when its wake-up time is known, at `p!` once it has woken.
        paint(id, worst(paths.map((p) => at(`${p}!`) ?? (at(p) === "done" ? "running" : at(p)))))
        return { entry: id, exits: [{ id }] }
      }
      case "Map": {
        const name = nameOf(node.fn)
        declare(depth, `${id}[/${escapeLabel(name === undefined ? "map" : `map ${name}`)}/]`)
        paint(id, atAll(paths))
        return { entry: id, exits: [{ id }] }
      }
    }
  }

  declare(0, `start([${escapeLabel(workflow.id)}])`)
  const body = into([{ id: "start" }], () => renderNodes(workflow.nodes, "n", [""], 0))
  declare(0, `finish([${escapeLabel("end")}])`)
  for (const exit of body.exits) edge(exit, "finish")

  const lines = ["flowchart TD", ...declarations, ...edges]
  if (records !== undefined) {
    for (const state of paints) lines.push(`  classDef ${state} ${classDefs[state]}`)
    for (const state of paints) {
      const ids = [...painted].filter(([, s]) => s === state).map(([id]) => id)
      if (ids.length > 0) lines.push(`  class ${ids.join(",")} ${state}`)
    }
  }
  return lines.join("\n")
}
