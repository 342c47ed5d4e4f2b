/**
 * The reader process of `npm run bench:http`: SSE readers of one run's default stream, over Node's `fetch`, in a
 * process of their own (a real process boundary between the server and its readers).
 *
 * Commands arrive on stdin, one JSON line each: `{ url, readers, count }`. For each, the process opens `readers`
 * connections to `url`, prints `{"connected":true}` once every one has received the first bytes of its body (the
 * server's `retry:` message: its handler is streaming), reads every body to its `event: end`, checks that each reader
 * got chunks 0 … count-1 exactly once and in order (the SSE `id:` and the chunk's own index), and prints one JSON line
 * with what it measured (`Result`). It exits when stdin closes: the bench process holds the other end.
 */
import { createInterface } from "node:readline"
import { ownCpuMs, percentile } from "../shared/report.js"

/** As workflow.ts's (not imported: this process loads no stepwise code). */
const wallMs = (): number => performance.timeOrigin + performance.now()

interface Command {
  readonly url: string
  readonly readers: number
  readonly count: number
}

/** What one command measured, across its readers. Times are `wallMs` (comparable between processes). */
export interface Result {
  readonly delivered: number
  /** Every reader got every chunk exactly once, in order, and then `event: end`. */
  readonly complete: boolean
  /** What went wrong, per reader (at most 10). */
  readonly problems: ReadonlyArray<string>
  readonly connectedAt: number
  readonly firstReadAt: number
  readonly lastReadAt: number
  /** Receipt − write time, over every chunk of every reader, in ms. */
  readonly latency: { readonly p50: number; readonly p99: number; readonly max: number }
  /** CPU ms this process spent on the command (user + system). */
  readonly cpuMs: number
}


/** One reader: its connection, parsed as it arrives. */
const read = async (
  url: string,
  count: number,
  connected: () => void,
  latencies: Float64Array,
  offset: number
) => {
  const response = await fetch(url)
  if (response.status !== 200 || response.body === null) {
    connected()
    return { got: 0, problem: `HTTP ${response.status}: ${await response.text()}`, first: NaN, last: NaN }
  }
  const reader = response.body.getReader()
  const decoder = new TextDecoder()
  let buffer = ""
  let got = 0
  let ended = false
  let problem: string | undefined
  let first = NaN
  let last = NaN
  let announced = false
  while (!ended) {
    const { done, value } = await reader.read()
    if (done) break
    const now = wallMs()
    if (!announced) {
      announced = true
      connected()
    }
    buffer += decoder.decode(value, { stream: true })
    let from = 0
    for (;;) {
      const end = buffer.indexOf("\n\n", from)
      if (end < 0) break
      const block = buffer.slice(from, end)
      from = end + 2
      if (block.startsWith("id: ")) {
        // `id: <index>\ndata: <json>`: the server's format for a chunk of one datum.
        const newline = block.indexOf("\n")
        const id = Number(block.slice(4, newline))
        const chunk = JSON.parse(block.slice(newline + 7)) as { readonly i: number; readonly at: number }
        if (problem === undefined && (id !== got || chunk.i !== got)) {
          problem = `expected chunk ${got}, got id ${id} carrying chunk ${chunk.i}`
        }
        if (got < count) latencies[offset + got] = now - chunk.at
        if (got === 0) first = now
        last = now
        got++
      } else if (block.startsWith("event: end")) {
        ended = true
        break
      } else if (block.startsWith("event: stepwise-error")) {
        problem ??= `the server ended the stream with ${block}`
      }
      // `retry:` and `: ping` comments need nothing.
    }
    buffer = buffer.slice(from)
  }
  if (!ended) problem ??= "the connection ended without event: end"
  else await reader.cancel()
  if (problem === undefined && got !== count) problem = `got ${got} chunks of ${count}`
  return { got, problem, first, last }
}

const run = async ({ count, readers, url }: Command): Promise<Result> => {
  const c0 = ownCpuMs()
  const latencies = new Float64Array(readers * count)
  let waiting = readers
  let connectedAt = NaN
  const connected = () => {
    if (--waiting === 0) {
      connectedAt = wallMs()
      process.stdout.write(`${JSON.stringify({ connected: true })}\n`)
    }
  }
  const outcomes = await Promise.all(
    Array.from({ length: readers }, (_, r) =>
      read(url, count, connected, latencies, r * count).catch((e: unknown) => ({
        got: 0,
        problem: `failed: ${String(e)}`,
        first: NaN,
        last: NaN
      })))
  )
  const problems = outcomes.flatMap((o, r) => o.problem === undefined ? [] : [`reader ${r}: ${o.problem}`])
  const sorted = latencies.sort()
  return {
    delivered: outcomes.reduce((sum, o) => sum + o.got, 0),
    complete: problems.length === 0,
    problems: problems.slice(0, 10),
    connectedAt,
    firstReadAt: Math.min(...outcomes.map((o) => o.first)),
    lastReadAt: Math.max(...outcomes.map((o) => o.last)),
    latency: { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted[sorted.length - 1]! },
    cpuMs: ownCpuMs() - c0
  }
}

// One command at a time: the bench waits for each result before it sends the next.
const lines = createInterface({ input: process.stdin })
let queue = Promise.resolve()
lines.on("line", (line) => {
  if (line.trim() === "") return
  queue = queue.then(async () => {
    const result = await run(JSON.parse(line) as Command)
    process.stdout.write(`${JSON.stringify(result)}\n`)
  })
})
// The bench has finished with us, or died: either way nothing is left to report to.
lines.on("close", () => process.exit(0))
process.stdout.write(`${JSON.stringify({ ready: true })}\n`)
