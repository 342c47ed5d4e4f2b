import { basename } from "node:path"
import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"
import { BaseSequencer, type TestSpecification } from "vitest/node"

/**
 * The files that take longest (measured 2026-12-07 on this 2-core machine), longest first. They start first, so that
 * the short files fill the other worker beside them instead of one long file running alone at the end: without a
 * results cache (CI's fresh clone), vitest orders by file size, which put the soak, a small file, last.
 */
const longest = [
  "soak.test.ts",
  "processes.test.ts",
  "restarts.test.ts",
  "cli.test.ts",
  "EventBus.contract.test.ts",
  "engine.test.ts",
  "recovery.test.ts",
  "PostgresBus.test.ts",
  "parity.test.ts"
]

class LongestFirst extends BaseSequencer {
  override async sort(files: Array<TestSpecification>): Promise<Array<TestSpecification>> {
    const rank = (file: TestSpecification) => {
      const at = longest.indexOf(basename(file.moduleId))
      return at === -1 ? longest.length : at
    }
    // Array.prototype.sort is stable: the rest keep vitest's order (slowest known first, else largest).
    return (await super.sort(files)).sort((a, b) => rank(a) - rank(b))
  }
}

export default defineConfig({
  resolve: {
    alias: [
      { find: /^stepwise$/, replacement: fileURLToPath(new URL("./src/index.ts", import.meta.url)) },
      { find: /^stepwise\/sqlite$/, replacement: fileURLToPath(new URL("./src/Sqlite.ts", import.meta.url)) },
      { find: /^stepwise\/postgres$/, replacement: fileURLToPath(new URL("./src/Postgres.ts", import.meta.url)) },
      { find: /^stepwise\/redis$/, replacement: fileURLToPath(new URL("./src/Redis.ts", import.meta.url)) },
      { find: /^stepwise\/http$/, replacement: fileURLToPath(new URL("./src/Http.ts", import.meta.url)) }
    ]
  },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Two files at a time, even on 2 cores (vitest's default there is one): most files spend much of their time
    // waiting (child processes starting, leases running out, servers restarting), which the other file fills.
    maxWorkers: 2,
    minWorkers: 1,
    sequence: { sequencer: LongestFirst }
  }
})
