/**
 * The work every contender performs, so that all of them run the same step bodies and check the
 * same outcomes. Adapters wrap these functions in their own step API; the floors call them directly.
 */

/** Input and output of every no-op step. */
export interface Payload {
  readonly n: number
}

/** A chunk written by the writer step. `t` (performance.now() just before the write call) is set only in the latency figure. */
export interface Chunk {
  readonly i: number
  readonly t?: number
}

/** Steps in the linear workflow (figure 1) and branches of the parallel (figure 2). */
export const LINEAR_STEPS = 10
export const FAN_OUT = 10
/** Stages of the branching workflow (figure 7): each a branch of two arms, then a map taking the arm's output. */
export const BRANCH_STAGES = 10

/** The event each arm of figure 7 writes with `writer.custom`: the `{ type: "data-…", data }` shape Mastra types it with. */
export interface Tick {
  readonly type: "data-tick"
  readonly data: { readonly stage: number; readonly n: number }
}

/** The tick of `stage`, written by the arm whose input is `n`. */
export const tick = (stage: number, n: number): Tick => ({ type: "data-tick", data: { stage, n } })

/** Figure 7's arm ids: stage k has "even{k}" (taken when n is even) and "odd{k}". */
export const armId = (arm: "even" | "odd", stage: number): string => `${arm}${stage}`

/** The arms' conditions: exactly one holds, and since each arm bumps n, the stages alternate between them. */
export const isEven = (input: Payload): boolean => input.n % 2 === 0
export const isOdd = (input: Payload): boolean => input.n % 2 === 1

/**
 * What a stage's map does with the branch's `{ [armId]?: output }`: the output of the arm that ran. (Mastra's
 * default engine also lists the arm that did not run, as undefined.)
 */
export const pickArm = (stage: number, output: Readonly<Record<string, Payload | undefined>>): Payload => {
  const ran = Object.values(output).filter((value) => value !== undefined)
  const picked = output[armId("even", stage)] ?? output[armId("odd", stage)]
  if (picked === undefined || ran.length !== 1) {
    throw new Error(`stage ${stage}: branch returned ${JSON.stringify(output)}, expected exactly one arm's output`)
  }
  return picked
}

/** Reads a figure-7 tick out of an event a reader received, if it is one. */
export const asTick = (value: unknown): Tick | undefined => {
  if (typeof value !== "object" || value === null || !("type" in value) || value.type !== "data-tick") return undefined
  const data = "data" in value ? value.data : undefined
  return typeof data === "object" && data !== null && "stage" in data && typeof data.stage === "number" &&
      "n" in data && typeof data.n === "number"
    ? (value as Tick)
    : undefined
}

/**
 * Counts a run's ticks and checks they came once per stage, in order, each carrying the input its stage got.
 * With `dataDropped`, for a stream that delivers custom events without their data (Mastra's evented engine: its
 * `run.stream()` turns them into `{ type, runId, from, payload: {} }`), only the ticks' type and count are checked.
 */
export class TickCheck {
  private count = 0
  constructor(readonly who: string, readonly options: { readonly dataDropped?: boolean } = {}) {}

  /** Takes any event a reader received; ticks are checked and counted, other events ignored. */
  offer(event: unknown): void {
    if (typeof event !== "object" || event === null || !("type" in event) || event.type !== "data-tick") return
    const received = asTick(event)
    if (this.options.dataDropped !== true && (received === undefined || received.data.stage !== this.count || received.data.n !== this.count)) {
      throw new Error(`${this.who}: tick ${JSON.stringify(event)} arrived as number ${this.count}`)
    }
    this.count++
  }

  /** Throws unless every stage's tick arrived and the run's output shows every stage ran once. */
  done(output: unknown): void {
    if (this.count !== BRANCH_STAGES) throw new Error(`${this.who}: reader got ${this.count} ticks, expected ${BRANCH_STAGES}`)
    const n = typeof output === "object" && output !== null && "n" in output ? output.n : undefined
    if (n !== BRANCH_STAGES) {
      throw new Error(`${this.who}: branching run returned ${JSON.stringify(output)}, expected { n: ${BRANCH_STAGES} }`)
    }
  }
}

/** Step ids shared by every contender: s0 … s9 (and on to s999 in the steps-per-run curve, `linearIds`). */
export const stepIds: ReadonlyArray<string> = Array.from({ length: Math.max(LINEAR_STEPS, FAN_OUT) }, (_, i) => `s${i}`)

/** The step ids of a linear workflow of `steps` steps: s0 … s{steps − 1}. */
export const linearIds = (steps: number): ReadonlyArray<string> => Array.from({ length: steps }, (_, i) => `s${i}`)

/** The no-op step body: it only bumps a counter, so the final output proves every step ran once. */
export const bump = (input: Payload): Payload => ({ n: input.n + 1 })

/** Throws unless a linear run's output shows all its steps (LINEAR_STEPS unless told) ran. */
export const checkLinear = (who: string, output: unknown, steps = LINEAR_STEPS): void => {
  const n = typeof output === "object" && output !== null && "n" in output ? output.n : undefined
  if (n !== steps) throw new Error(`${who}: linear run returned ${JSON.stringify(output)}, expected { n: ${steps} }`)
}

/** Throws unless a fan-out run's output has all FAN_OUT branch results, each { n: 1 }. */
export const checkFanOut = (who: string, output: unknown): void => {
  const values: ReadonlyArray<unknown> = Array.isArray(output)
    ? output
    : typeof output === "object" && output !== null
      ? Object.values(output)
      : []
  const ok = values.length === FAN_OUT &&
    values.every((v) => typeof v === "object" && v !== null && "n" in v && v.n === 1)
  if (!ok) throw new Error(`${who}: fan-out run returned ${JSON.stringify(output)}, expected ${FAN_OUT} × { n: 1 }`)
}

/** Throws unless every reader received exactly `expected` chunks. */
export const checkReaders = (who: string, counts: ReadonlyArray<number>, expected: number): void => {
  const bad = counts.filter((c) => c !== expected)
  if (bad.length > 0) {
    throw new Error(`${who}: ${bad.length}/${counts.length} readers got ${bad.slice(0, 3).join(", ")} chunks, expected ${expected}`)
  }
}

/** Reads the chunk out of a value a reader received, if it is one. */
export const asChunk = (value: unknown): Chunk | undefined =>
  typeof value === "object" && value !== null && "i" in value && typeof value.i === "number"
    ? (value as Chunk)
    : undefined
