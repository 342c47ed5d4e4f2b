#!/usr/bin/env node
// Runs the `stepwise` command: the build (dist/bin/stepwise.js) when there is one, else the TypeScript source
// through tsx (what `node --import tsx` does, in this process), so that a checkout runs it without building.
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"

const built = new URL("../dist/bin/stepwise.js", import.meta.url)
if (existsSync(fileURLToPath(built))) {
  await import(built.href)
} else {
  try {
    await import("tsx")
  } catch {
    process.stderr.write("stepwise: there is no build (dist/) and tsx is not installed to run the source: run `npm run build`, or `npm install`.\n")
    process.exit(1)
  }
  await import(new URL("../src/bin/stepwise.ts", import.meta.url).href)
}
