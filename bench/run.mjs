#!/usr/bin/env node
// Entry of `npm run bench` (root package.json). Runs under whatever Node the machine has (20 here):
// installs bench/'s own dependencies if they are missing, builds stepwise (root `npm run build`, into ../dist),
// then re-executes the real bench entry,
// src/main.ts, under the Node 22 binary that bench/'s `node` package ships (@mastra/core needs
// Node >= 22.13), with tsx's loader and --expose-gc. Arguments are passed through; see --help.
import { spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const benchDir = dirname(fileURLToPath(import.meta.url))
const node22 = join(benchDir, "node_modules", "node", "bin", "node")
const tsx = join(benchDir, "node_modules", "tsx", "package.json")
const npm = process.platform === "win32" ? "npm.cmd" : "npm"

const run = (command, args, options = {}) => {
  const result = spawnSync(command, args, { stdio: "inherit", ...options })
  if (result.error) throw result.error
  return result.status ?? 1
}

if (!existsSync(join(benchDir, "node_modules")) || !existsSync(node22) || !existsSync(tsx)) {
  console.error("bench: installing bench/ dependencies (npm ci --prefix bench) ...")
  const status = run(npm, ["ci", "--prefix", benchDir, "--no-audit", "--no-fund"])
  if (status !== 0) process.exit(status)
}

// stepwise runs as built (../dist), as its users and the peers' users run them: tsconfig.runtime.json maps "stepwise"
// there. The build takes a few seconds; building every time means the bench never measures a stale dist/.
const rootDir = join(benchDir, "..")
const tsc = join(rootDir, "node_modules", "typescript", "bin", "tsc")
if (!existsSync(tsc)) {
  console.error("bench: the root's dependencies are missing (run npm ci in the repository root first)")
  process.exit(1)
}
const built = run(process.execPath, [tsc, "-p", join(rootDir, "tsconfig.build.json")], { cwd: rootDir })
if (built !== 0) {
  console.error("bench: building stepwise (tsc -p tsconfig.build.json) failed")
  process.exit(built)
}

const version = spawnSync(node22, ["--version"], { encoding: "utf8" })
if (version.status !== 0 || !/^v22\./.test(version.stdout)) {
  console.error(
    `bench: ${node22} is not a working Node 22 (got ${JSON.stringify(version.stdout || version.stderr)}); ` +
      "remove bench/node_modules and run again"
  )
  process.exit(1)
}

const status = run(
  node22,
  ["--expose-gc", "--max-old-space-size=8192", "--import", "tsx", join(benchDir, "src", "main.ts"), ...process.argv.slice(2)],
  {
    cwd: benchDir,
    // tsx loads ../src with the bench's compiler options minus the `paths` used only for type-checking
    env: { ...process.env, TSX_TSCONFIG_PATH: join(benchDir, "tsconfig.runtime.json") }
  }
)
process.exit(status)
