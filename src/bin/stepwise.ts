/**
 * The `stepwise` executable (`bin/stepwise.mjs` runs this, built or through tsx). See `Cli.ts`.
 *
 * @since 0.1.0
 */
// The modules themselves, not the package index: it loads all of @effect/platform-node (HTTP included), which took
// half a second of every start.
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Cli from "../Cli.js"

// `stepwise runs | head`: the reader went away, which is no failure of ours.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0)
  throw error
})

NodeRuntime.runMain(Cli.run(process.argv).pipe(Effect.provide(NodeContext.layer)), { disableErrorReporting: true })
