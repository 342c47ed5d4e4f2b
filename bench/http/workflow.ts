/**
 * What the server side (main.ts) and the reader process (readers.ts) of `npm run bench:http` share: the clock, the
 * chunk, and the workflow whose step writes the chunks once the bench opens its gate.
 */
import { Context, Deferred, Effect, FiberId, Layer, Schema } from "effect"
import { Step, Workflow } from "stepwise"

/** Wall-clock milliseconds with sub-millisecond precision, comparable between processes of one machine. */
export const wallMs = (): number => performance.timeOrigin + performance.now()

/** A chunk: its index, when it was written (`wallMs`), and padding to about 100 bytes of JSON. */
export interface Chunk {
  readonly i: number
  readonly at: number
  readonly pad: string
}

const pad = "x".repeat(48)

/**
 * Where a run's step waits before its first write, so that every reader is connected and following by then: the
 * bench opens the gate named in the run's input once its readers are.
 */
export class Gate extends Context.Tag("bench/http/Gate")<Gate, {
  readonly wait: (name: string) => Effect.Effect<void>
  readonly open: (name: string) => Effect.Effect<void>
}>() {}

export const layerGate = Layer.sync(Gate, () => {
  const gates = new Map<string, Deferred.Deferred<void>>()
  const gate = (name: string) =>
    Effect.sync(() => {
      let deferred = gates.get(name)
      if (deferred === undefined) {
        deferred = Deferred.unsafeMake<void>(FiberId.none)
        gates.set(name, deferred)
      }
      return deferred
    })
  return {
    wait: (name) => Effect.flatMap(gate(name), Deferred.await),
    open: (name) => Effect.flatMap(gate(name), (d) => Deferred.succeed(d, undefined))
  }
})

export const Burst = Schema.Struct({
  /** Chunks to write. */
  count: Schema.Number,
  /** 0: as fast as the writer goes; otherwise chunk i is written at (gate opened) + i × everyMs. */
  everyMs: Schema.Number,
  /** The gate to wait at. */
  gate: Schema.String
})

const WriteSpan = Schema.Struct({ firstWriteAt: Schema.Number, lastWriteAt: Schema.Number })

/** One step: waits at its gate, writes `count` chunks to the run's default stream (flat out or paced), closes it. */
export const burst = Workflow.make({ id: "bench-http-burst", inputSchema: Burst, outputSchema: WriteSpan }).pipe(
  Workflow.then(Step.make({
    id: "write",
    inputSchema: Burst,
    outputSchema: WriteSpan,
    execute: ({ inputData: { count, everyMs, gate } }) =>
      Effect.gen(function*() {
        yield* Effect.flatMap(Gate, (g) => g.wait(gate))
        const out = yield* Workflow.getWritable<Chunk>()
        const firstWriteAt = wallMs()
        for (let i = 0; i < count; i++) {
          if (everyMs > 0) {
            // Paced to the schedule, not to the previous write: a late timer does not slow the rate down.
            const wait = firstWriteAt + i * everyMs - wallMs()
            if (wait > 0) yield* Effect.sleep(wait)
          }
          yield* out.write({ i, at: wallMs(), pad })
        }
        yield* out.close
        return { firstWriteAt, lastWriteAt: wallMs() }
      })
  })),
  Workflow.commit
)
