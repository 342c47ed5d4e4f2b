/**
 * The contender adapter modules, each imported on its own so that one that fails to load leaves the others running.
 * Shared by the bench entry (main.ts) and the child that measures one memory case in a process of its own (child.ts).
 */
import type { Loaded } from "./types.ts"

export interface Adapter {
  /** Prefix of its contenders' ids. */
  readonly id: string
  readonly label: string
  readonly load: () => Promise<Loaded>
}

export const adapters: ReadonlyArray<Adapter> = [
  { id: "floor", label: "floors", load: async () => (await import("./contenders/floors.ts")).load() },
  { id: "stepwise", label: "stepwise (../dist, built from ../src)", load: async () => (await import("./contenders/stepwise.ts")).load() },
  { id: "mastra", label: "@mastra/core", load: async () => (await import("./contenders/mastra.ts")).load() },
  { id: "effect-workflow", label: "@effect/workflow", load: async () => (await import("./contenders/effect-workflow.ts")).load() }
]

/** The adapter whose contenders' ids start with it: `mastra` for `mastra-evented`. */
export const adapterOf = (contenderId: string): Adapter | undefined =>
  adapters.find((a) => contenderId === a.id || contenderId.startsWith(`${a.id}-`))
