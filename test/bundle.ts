/**
 * A test's child-process script, bundled once with esbuild (the transform tsx itself uses) into plain JavaScript.
 * `node --import tsx script.ts` resolves and loads every module of the process, dependencies included, through tsx's
 * loader hooks: measured on the crash worker, 1.8 s of CPU a start against 0.65 s for its bundle, and the crash
 * suites start dozens of processes. The bundle holds the script and this package's source (`stepwise` resolves to
 * `src/` through tsconfig's paths, as under tsx); the dependencies stay imports of node_modules.
 *
 * Not for the `stepwise` command: its tests run `bin/stepwise.mjs` as users run it.
 */
import { build } from "esbuild"
import { mkdtempSync, rmSync, symlinkSync } from "node:fs"
import { tmpdir } from "node:os"
import { basename, join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))

/** Bundles `entry` (a path from the package's root) and returns the bundle's path and how to remove it. */
export const bundleScript = async (entry: string): Promise<{ readonly file: string; readonly remove: () => void }> => {
  const dir = mkdtempSync(join(tmpdir(), "stepwise-bundle-"))
  // The bundle imports its dependencies by name: from its folder, Node finds them through this link.
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"), "dir")
  const file = join(dir, basename(entry).replace(/\.ts$/, ".mjs"))
  await build({
    entryPoints: [join(root, entry)],
    outfile: file,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    tsconfig: join(root, "tsconfig.json"),
    logLevel: "warning"
  })
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) }
}
