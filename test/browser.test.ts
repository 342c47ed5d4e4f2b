/**
 * A real browser reads a run: headless Chromium (Debian's `chromium` package, driven by `playwright-core`, which
 * downloads no browser) opens the chat example's page, which starts a run and renders its UI message stream with
 * `EventSource`. Mid-stream the server cuts every connection; the browser reconnects by itself with `Last-Event-ID`
 * and the page must end up with the run's whole answer, nothing missing and nothing twice.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Stream } from "effect"
import { existsSync, mkdirSync } from "node:fs"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { chromium } from "playwright-core"
import { WorkflowEngine } from "stepwise"
import * as Http from "stepwise/http"
import * as Chat from "../examples/chat.js"

const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
const available = existsSync(executablePath)
if (!available && process.env.CI) {
  throw new Error(`Chromium is not at ${executablePath}: install Debian's chromium package (.ci/run does) or set CHROMIUM_PATH`)
}

describe.skipIf(!available)("a browser reading a run", () => {
  it.live("EventSource resumes with Last-Event-ID after the server cuts the connection: the whole answer, once", () => {
    const server = createServer()
    const lastEventIds: Array<string> = []
    // The authorization hook sees every request: here it only notes how readers (re)connect.
    const watch = Http.layerAuthorization((request) =>
      Effect.sync(() => {
        const id = request.headers["last-event-id"]
        if (request.url.endsWith("/ui")) lastEventIds.push(id ?? "")
      })
    )
    return Effect.gen(function*() {
      const port = (server.address() as AddressInfo).port
      const browser = yield* Effect.acquireRelease(
        Effect.promise(() => chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-gpu"] })),
        (b) => Effect.promise(() => b.close())
      )
      const page = yield* Effect.promise(() => browser.newPage())
      const check = Effect.gen(function*() {
        yield* Effect.promise(() => page.goto(`http://127.0.0.1:${port}/`))
        yield* Effect.promise(() => page.click("button"))
        // Some words are on the page, more are coming: cut every connection now.
        yield* Effect.promise(() =>
          page.waitForFunction(() => (document.getElementById("answer")?.textContent ?? "").split(" ").length >= 4)
        )
        const before = yield* Effect.promise(() => page.textContent("#answer"))
        server.closeAllConnections()
        yield* Effect.promise(() => page.waitForSelector("body[data-done=true]", { timeout: 30_000 }))
        const runId = yield* Effect.promise(() => page.getAttribute("body", "data-run-id"))
        const rendered = yield* Effect.promise(() => page.textContent("#answer"))
        const engine = yield* WorkflowEngine.WorkflowEngine
        const run = yield* engine.getRun(runId!)
        const chunks = Array.from(yield* Stream.runCollect(run.readable<Chat.UIMessageChunk>()))
        const answer = chunks.flatMap((c) => c.type === "text-delta" ? [c.delta] : []).join("")
        expect(answer).toBe("It is sunny in Paris today, about 21°C: a fine day for a walk along the Seine.")
        expect(before!.length).toBeLessThan(answer.length)
        expect(rendered).toBe(answer)
        // The first connection had no Last-Event-ID; the browser's reconnection sent the id it had reached.
        expect(lastEventIds[0]).toBe("")
        expect(lastEventIds.length).toBeGreaterThanOrEqual(2)
        expect(Number(lastEventIds[1])).toBeGreaterThan(0)
        const tools = yield* Effect.promise(() => page.textContent("#tools"))
        expect(tools).toBe(`calling weather({"city":"Paris"}) → {"forecast":"sunny, 21°C"}`)
      })
      yield* check.pipe(Effect.tapErrorCause(() =>
        Effect.promise(async () => {
          mkdirSync("test/artifacts", { recursive: true })
          await page.screenshot({ path: "test/artifacts/browser-failure.png", fullPage: true })
        })
      ))
    }).pipe(
      Effect.scoped,
      Effect.provide(
        Chat.serve({ port: 0, server }).pipe(
          Layer.provide(watch),
          Layer.provideMerge(Layer.merge(WorkflowEngine.layerMemory, Chat.FakeChatModel("40 millis")))
        )
      )
    )
  }, 60_000)
})
