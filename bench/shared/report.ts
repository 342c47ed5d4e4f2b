/**
 * What the benches run under the root's dependencies (cluster/, http/) measure and report with: medians and their
 * spread, percentiles, the number formats of the markdown tables, this process's CPU time, and the machine.
 * Plain Node: the reader process of bench:http loads it without any stepwise or Effect code.
 */
import { cpus, platform, release, totalmem } from "node:os"

export const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** Median, min, max and the samples themselves: an entry of the results JSON. */
export const stats = (xs: ReadonlyArray<number>) => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), samples: xs })

/** The `p` quantile (0–1) of samples sorted in ascending order. */
export const percentile = (sorted: ArrayLike<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!

export const int = (x: number) => Number.isNaN(x) ? "–" : Math.round(x).toLocaleString("en-US")
export const ms = (x: number) => Number.isNaN(x) ? "–" : x.toFixed(2)
export const ratio = (x: number) => Number.isNaN(x) ? "–" : `${x.toFixed(2)}×`

/** CPU ms (user + system) this process has used. */
export const ownCpuMs = () => {
  const { system, user } = process.cpuUsage()
  return (user + system) / 1000
}

/** The machine a results file was measured on (its `meta`). */
export const machine = () => ({
  node: process.version,
  platform: `${platform()} ${release()} ${process.arch}`,
  cpus: `${cpus().length} × ${cpus()[0]?.model ?? "?"}`,
  memory: `${Math.round(totalmem() / 2 ** 30)} GiB RAM`
})

/**
 * A bench's command line: `--help` prints `help` and exits; `option("name")` is the value of `--name=value`;
 * `--quick` (a smoke run), `--cpu-prof`, and `--reps=N` (default 3, quick 2).
 */
export const commandLine = (help: string) => {
  const args = process.argv.slice(2)
  if (args.includes("--help")) {
    console.log(help)
    process.exit(0)
  }
  const option = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
  const quick = args.includes("--quick")
  return { args, option, quick, cpuProf: args.includes("--cpu-prof"), reps: Number(option("reps") ?? (quick ? 2 : 3)) }
}
