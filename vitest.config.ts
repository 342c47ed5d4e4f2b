import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

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
    hookTimeout: 30_000
  }
})
