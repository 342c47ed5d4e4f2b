/**
 * One memory measurement in a process of its own (started by main.ts, under the same Node, flags and loader):
 *
 *   child.ts <contender id> <waiting runs>
 *
 * Loads the contender's adapter, runs `memoryWaiting` on a small batch to warm up, then on `n`, and prints the sample as one JSON line prefixed
 * `sample ` on stdout. In a fresh process the heap holds nothing of earlier cases, and a measurement that never ends
 * (a peer's engine canceling 10,000 runs) is ended by killing the process, which no in-process timeout can do.
 */
import { adapterOf } from "./adapters.ts"

const [contenderId, waiting] = process.argv.slice(2)
const n = Number(waiting)

const main = async (): Promise<void> => {
  if (contenderId === undefined || !Number.isInteger(n) || n < 1) {
    throw new Error(`usage: child.ts <contender id> <waiting runs> (got ${JSON.stringify(process.argv.slice(2))})`)
  }
  const adapter = adapterOf(contenderId)
  if (adapter === undefined) throw new Error(`no adapter for contender "${contenderId}"`)
  const loaded = await adapter.load()
  const contender = loaded.contenders.find((c) => c.id === contenderId)
  if (contender === undefined) {
    const reason = loaded.unavailable.find((u) => u.id === contenderId)?.reason
    throw new Error(`contender "${contenderId}" is not available${reason === undefined ? "" : `: ${reason}`}`)
  }
  // A first, smaller batch warms what a fresh process allocates once (compiled code, tables grown to size), which an
  // in-process measurement had from the cases before it; only the second batch is measured.
  await contender.memoryWaiting(Math.min(n, 200))
  const sample = await contender.memoryWaiting(n)
  process.stdout.write(`sample ${JSON.stringify(sample ?? null)}\n`)
}

main().then(
  // some engines leave timers behind (canceled 1-hour sleeps): the sample is out, so leave now
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exit(1)
  }
)
