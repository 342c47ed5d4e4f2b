/**
 * A worker process of `npm run bench:cluster`: the evented engine with the bench's workflows, over the deployment's
 * bus and store (deployment.ts). Prints `ready` once built, then executes commands until SIGTERM, on which it closes
 * its layers and exits (so that `--cpu-prof` can write its profile). It also exits when its stdin closes: the bench
 * process holds the other end, so a worker never outlives it, whatever killed it.
 *
 * env: BUS (redis | postgres), DATABASE_URL, REDIS_URL, REDIS_PREFIX, WORKER_ID
 */
import { Cause, Effect, Exit, Fiber, Layer } from "effect"
import { type BusName, workerLayer } from "./deployment.js"

const env = (name: string) => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`bench worker needs ${name}`)
  return value
}

const program = Effect.gen(function*() {
  yield* Layer.build(
    workerLayer(env("BUS") as BusName, {
      databaseUrl: env("DATABASE_URL"),
      redisUrl: env("REDIS_URL"),
      redisPrefix: env("REDIS_PREFIX")
    }, env("WORKER_ID"))
  )
  console.log("ready")
  return yield* Effect.never
}).pipe(Effect.scoped)

const fiber = Effect.runFork(program)
fiber.addObserver((exit) => {
  if (Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)) process.exit(0)
  console.error(Cause.pretty(exit.cause))
  process.exit(1)
})
const stop = () => {
  Effect.runFork(Fiber.interrupt(fiber))
  // A layer that does not close within 5 s must not keep the process (and the bench) waiting.
  setTimeout(() => process.exit(2), 5_000).unref()
}
process.once("SIGTERM", stop)
process.stdin.on("end", stop)
process.stdin.resume()
