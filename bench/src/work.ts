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

/** Step ids shared by every contender: s0 … s9. */
export const stepIds: ReadonlyArray<string> = Array.from({ length: Math.max(LINEAR_STEPS, FAN_OUT) }, (_, i) => `s${i}`)

/** The no-op step body: it only bumps a counter, so the final output proves every step ran once. */
export const bump = (input: Payload): Payload => ({ n: input.n + 1 })

/** Throws unless a linear run's output shows all LINEAR_STEPS steps ran. */
export const checkLinear = (who: string, output: unknown): void => {
  const n = typeof output === "object" && output !== null && "n" in output ? output.n : undefined
  if (n !== LINEAR_STEPS) throw new Error(`${who}: linear run returned ${JSON.stringify(output)}, expected { n: ${LINEAR_STEPS} }`)
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
