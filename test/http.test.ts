import { FetchHttpClient, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { DefaultChatTransport, readUIMessageStream, type UIMessage, type UIMessageChunk } from "ai"
import { Context, Deferred, Effect, Fiber, Layer, Schedule, Schema, Stream } from "effect"
import { spawn } from "node:child_process"
import { createServer, type Server } from "node:http"
import { EventBus, Run, RunStore, Step, Workflow, WorkflowEngine } from "stepwise"
import * as Http from "stepwise/http"
import * as Chat from "../examples/chat.js"
import { awaitStatus } from "./scenarios.js"

// ---------------------------------------------------------------------------------------------------------------
// Workflows served in these tests

const Count = Schema.Struct({ n: Schema.Number, pace: Schema.optionalWith(Schema.Number, { default: () => 5 }) })

const countStep = Step.make({
  id: "count",
  inputSchema: Count,
  outputSchema: Schema.Number,
  execute: ({ inputData }) =>
    Effect.gen(function*() {
      const out = yield* Workflow.getWritable<number>()
      const logs = yield* Workflow.getWritable<string>({ namespace: "logs" })
      for (let i = 0; i < inputData.n; i++) {
        yield* out.write(i)
        yield* logs.write(`wrote ${i}`)
        yield* Effect.sleep(`${inputData.pace} millis`)
      }
      return inputData.n
    })
})

const count = Workflow.make({ id: "count", inputSchema: Count, outputSchema: Schema.Number }).pipe(
  Workflow.then(countStep),
  Workflow.commit
)

const approval = Step.make({
  id: "approval",
  inputSchema: Schema.String,
  outputSchema: Schema.String,
  resumeSchema: Schema.Struct({ approved: Schema.Boolean }),
  execute: ({ inputData, resumeData, suspend }) =>
    resumeData === undefined
      ? suspend({ question: `approve ${inputData}?` })
      : Effect.succeed(resumeData.approved ? `${inputData}: approved` : `${inputData}: refused`)
})

const approve = Workflow.make({ id: "approve", inputSchema: Schema.String, outputSchema: Schema.String }).pipe(
  Workflow.then(approval),
  Workflow.commit
)

const boom = Workflow.make({ id: "boom", inputSchema: Schema.Number, outputSchema: Schema.Number }).pipe(
  Workflow.then(Step.make({
    id: "explode",
    inputSchema: Schema.Number,
    outputSchema: Schema.Number,
    execute: () => Effect.fail("kaboom")
  })),
  Workflow.commit
)

const workflows = [count, approve, Chat.chat, boom] as const

// ---------------------------------------------------------------------------------------------------------------
// A server on a free port, with its Node server (to cut connections) and the store and bus behind it

class Served extends Context.Tag("test/Served")<Served, { readonly base: string; readonly server: Server }>() {}

const serve = (options?: { readonly auth?: Layer.Layer<Http.Authorization> }) => {
  const server = createServer()
  const http = Http.layer({ workflows, maxBodySize: 64 * 1024, heartbeat: "50 millis", retry: "100 millis" }).pipe(
    Layer.provide(options?.auth ?? Layer.empty),
    Layer.provideMerge(NodeHttpServer.layer(() => server, { port: 0, host: "127.0.0.1" }))
  )
  return Layer.scoped(
    Served,
    Effect.gen(function*() {
      // Keep-alive sockets of aborted readers would hold the server's close back for seconds.
      yield* Effect.addFinalizer(() => Effect.sync(() => server.closeAllConnections()))
      const address = (yield* HttpServer.HttpServer).address as HttpServer.TcpAddress
      return { base: `http://127.0.0.1:${address.port}`, server }
    })
  ).pipe(Layer.provideMerge(http))
}

const engine = Layer.merge(WorkflowEngine.layerMemory, Chat.FakeChatModel("2 millis"))

const provideServer = (options?: Parameters<typeof serve>[0]) =>
  Effect.provide(serve(options).pipe(Layer.provideMerge(engine), Layer.merge(FetchHttpClient.layer)))

const request = (path: string, init?: RequestInit) =>
  Effect.flatMap(Served, ({ base }) =>
    Effect.promise(async () => {
      const response = await fetch(`${base}${path}`, init)
      return { status: response.status, headers: response.headers, text: await response.text() }
    }))

const post = (path: string, body: unknown) =>
  request(path, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    headers: { "content-type": "application/json" }
  })

const json = (text: string) => JSON.parse(text) as Record<string, unknown>

/** The SSE messages of a body: `{ id?, event?, data? }` per message, comments and `retry:` left out. */
const parseSse = (text: string) =>
  text.split("\n\n").filter((block) => block.trim() !== "" && !block.startsWith(":") && !block.startsWith("retry:"))
    .map((block) => {
      const fields: Record<string, string> = {}
      for (const line of block.split("\n")) {
        const at = line.indexOf(": ")
        fields[line.slice(0, at)] = line.slice(at + 2)
      }
      return fields as { readonly id?: string; readonly event?: string; readonly data?: string }
    })

/** Reads an SSE response until `stop` says so, then drops the connection; answers what it read. */
const readSome = (path: string, headers: Record<string, string>, stop: (text: string) => boolean) =>
  Effect.flatMap(Served, ({ base }) =>
    Effect.promise(async () => {
      const abort = new AbortController()
      const response = await fetch(`${base}${path}`, { headers, signal: abort.signal })
      const reader = response.body!.getReader()
      const decoder = new TextDecoder()
      let text = ""
      while (!stop(text)) {
        const { done, value } = await reader.read()
        if (done) break
        text += decoder.decode(value, { stream: true })
      }
      abort.abort()
      // Only whole messages: a reader dispatches nothing of a message cut before its blank line.
      return text.slice(0, text.lastIndexOf("\n\n") + 2)
    }))

const startCount = (n: number, pace = 5) =>
  Effect.map(post("/workflows/count/runs", { n, pace }), (r) => json(r.text).runId as string)

const awaitRun = (runId: string) =>
  Effect.flatMap(WorkflowEngine.WorkflowEngine, (e) => Effect.flatMap(e.getRun(runId), (run) => Effect.exit(run.result)))

describe("stepwise/http", () => {
  it.live("starts a run: 201 with its id; GET /runs/{runId} answers its status and output", () =>
    Effect.gen(function*() {
      const started = yield* post("/workflows/count/runs", { n: 3, pace: 1 })
      expect(started.status).toBe(201)
      const runId = json(started.text).runId as string
      yield* awaitRun(runId)
      const info = yield* request(`/runs/${runId}`)
      expect(info.status).toBe(200)
      expect(json(info.text)).toMatchObject({ runId, workflowId: "count", status: "success", output: 3, suspended: [] })
      const spec = json((yield* request("/openapi.json")).text) as { readonly paths: Record<string, unknown> }
      expect(Object.keys(spec.paths)).toContain("/runs/{runId}/streams/{namespace}")
    }).pipe(provideServer()))

  it.live("Http.layerServer serves on a port of its own (0: any free one, read from HttpServer)", () =>
    Effect.gen(function*() {
      const address = (yield* HttpServer.HttpServer).address as HttpServer.TcpAddress
      const client = yield* Http.client(`http://127.0.0.1:${address.port}`)
      const run = yield* client.start(count, { n: 2, pace: 1 })
      expect(yield* run.result).toBe(2)
    }).pipe(
      Effect.provide(Http.layerServer({ port: 0, host: "127.0.0.1", workflows: [count] }).pipe(
        Layer.provideMerge(WorkflowEngine.layerMemory),
        Layer.merge(FetchHttpClient.layer)
      ))
    ))

  it.live("with cors, browsers of other origins may start and read runs (preflight allows Last-Event-ID)", () =>
    Effect.gen(function*() {
      const address = (yield* HttpServer.HttpServer).address as HttpServer.TcpAddress
      const base = `http://127.0.0.1:${address.port}`
      const preflight = yield* Effect.promise(() =>
        fetch(`${base}/runs/r/streams`, {
          method: "OPTIONS",
          headers: {
            origin: "https://app.example",
            "access-control-request-method": "GET",
            "access-control-request-headers": "last-event-id"
          }
        })
      )
      expect(preflight.headers.get("access-control-allow-origin")).toBe("https://app.example")
      expect(preflight.headers.get("access-control-allow-headers")).toContain("last-event-id")
      const started = yield* Effect.promise(() =>
        fetch(`${base}/workflows/count/runs`, {
          method: "POST",
          body: JSON.stringify({ n: 1 }),
          headers: { origin: "https://app.example", "content-type": "application/json" }
        })
      )
      expect(started.status).toBe(201)
      expect(started.headers.get("access-control-allow-origin")).toBe("https://app.example")
    }).pipe(
      Effect.provide(Http.layerServer({
        port: 0,
        host: "127.0.0.1",
        workflows: [count],
        cors: { allowedOrigins: ["https://app.example"] }
      }).pipe(Layer.provideMerge(WorkflowEngine.layerMemory)))
    ))

  it.live("a chosen runId makes start idempotent", () =>
    Effect.gen(function*() {
      const first = yield* post("/workflows/count/runs?runId=order-1", { n: 1 })
      const again = yield* post("/workflows/count/runs?runId=order-1", { n: 1 })
      expect([first.status, again.status]).toEqual([201, 201])
      expect(json(again.text).runId).toBe("order-1")
      const taken = yield* post("/workflows/approve/runs?runId=order-1", "\"x\"")
      expect(taken.status).toBe(409)
      expect(json(taken.text).message).toBe(`runId "order-1" already belongs to a run of workflow "count".`)
      const store = yield* RunStore.RunStore
      expect(yield* store.listRuns({})).toHaveLength(1)
    }).pipe(provideServer()))

  it.live("stopping the server ends open SSE responses of runs that go on, without event: end", () =>
    Effect.gen(function*() {
      const stopped = yield* Effect.gen(function*() {
        const runId = json((yield* post("/workflows/approve/runs", "\"x\"")).text).runId as string
        yield* Effect.flatMap(WorkflowEngine.WorkflowEngine, (e) =>
          Effect.flatMap(e.getRun(runId), (run) => awaitStatus(run, "suspended")))
        const { base } = yield* Served
        const response = yield* Effect.promise(() => fetch(`${base}/runs/${runId}/events`))
        const reader = response.body!.getReader()
        yield* Effect.promise(() => reader.read())
        return reader
      }).pipe(provideServer())
      // The server's layer is closed here; the reader's response ended with it (or its connection did), short of
      // an `event: end`, so that the reader connects again.
      let text = ""
      const decoder = new TextDecoder()
      for (;;) {
        const read = yield* Effect.either(Effect.tryPromise(() => stopped.read()))
        if (read._tag === "Left" || read.right.done) break
        text += decoder.decode(read.right.value)
      }
      expect(text).not.toContain("event: end")
    }), 20_000)

  it.live("bad input gets a 4xx with a message and creates no run", () =>
    Effect.gen(function*() {
      const malformed = yield* post("/workflows/count/runs", "{\"n\": 3")
      expect(malformed.status).toBe(400)
      expect(json(malformed.text).message).toMatch(/^The request body is not valid JSON: /)
      const invalid = yield* post("/workflows/count/runs", { n: "three" })
      expect(invalid.status).toBe(400)
      expect(json(invalid.text).message).toMatch(/does not match the inputSchema of "count".*\["n"\]/s)
      const empty = yield* post("/workflows/count/runs", "")
      expect(json(empty.text).message).toBe("The request body is empty: send JSON.")
      const unknown = yield* post("/workflows/nope/runs", {})
      expect(unknown.status).toBe(404)
      expect(json(unknown.text).message).toBe(`No workflow "nope" is served here (served: "count", "approve", "chat", "boom").`)
      const large = yield* post("/workflows/count/runs", { n: 1, padding: "x".repeat(100 * 1024) })
      expect(large.status).toBe(413)
      expect(json(large.text).message).toBe("The request body is larger than the server's limit of 65536 bytes (maxBodySize).")
      const form = yield* request("/workflows/count/runs", { method: "POST", body: JSON.stringify({ n: 1 }) })
      expect(form.status).toBe(415)
      expect(json(form.text).message).toBe(
          `Send content-type: application/json (got "text/plain;charset=utf-8"); with curl: -H 'content-type: application/json'.`
      )
      const { base } = yield* Served
      // A body sent in chunks, with no content-length to refuse it by: read to the limit, then refused.
      const chunked = yield* Effect.promise(() =>
        fetch(`${base}/workflows/count/runs`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: new ReadableStream({
            start(controller) {
              for (let i = 0; i < 20; i++) controller.enqueue(new TextEncoder().encode("x".repeat(10 * 1024)))
              controller.close()
            }
          }),
          duplex: "half"
        } as RequestInit).then(async (r) => ({ status: r.status, text: await r.text() }))
      )
      expect(chunked.status).toBe(413)
      const store = yield* RunStore.RunStore
      expect(yield* store.listRuns({})).toEqual([])
    }).pipe(provideServer()))

  it.live("GET /runs/{runId}/events: one SSE message per event, id = its index, then event: end", () =>
    Effect.gen(function*() {
      const runId = yield* startCount(3, 1)
      const response = yield* request(`/runs/${runId}/events`)
      expect(response.status).toBe(200)
      expect(response.headers.get("content-type")).toBe("text/event-stream")
      const messages = parseSse(response.text)
      expect(messages.at(-1)).toEqual({ event: "end", data: "{}" })
      const events = yield* Effect.flatMap(WorkflowEngine.WorkflowEngine, (e) =>
        Effect.flatMap(e.getRun(runId), (run) => Stream.runCollect(run.events())))
      expect(messages.slice(0, -1)).toEqual(
        Array.from(events).map((event, i) => ({ id: String(i), data: JSON.stringify(event) }))
      )
    }).pipe(provideServer()))

  it.live("a reader that drops resumes with Last-Event-ID: no gap, no duplicate", () =>
    Effect.gen(function*() {
      const runId = yield* startCount(40, 3)
      const first = yield* readSome(`/runs/${runId}/streams`, {}, (text) => parseSse(text).length >= 5)
      const seen = parseSse(first).filter((m) => m.id !== undefined)
      const last = seen.at(-1)!.id!
      const rest = yield* request(`/runs/${runId}/streams`, { headers: { "last-event-id": last } })
      const resumed = parseSse(rest.text).filter((m) => m.event === undefined)
      const all = [...seen, ...resumed].map((m) => ({ id: Number(m.id), chunk: JSON.parse(m.data!) }))
      expect(all).toEqual(Array.from({ length: 40 }, (_, i) => ({ id: i, chunk: i })))
    }).pipe(provideServer()))

  it.live("?startIndex= reads from an index (negative: the last N); a named stream has its own indexes", () =>
    Effect.gen(function*() {
      const runId = yield* startCount(5, 1)
      yield* awaitRun(runId)
      const tail = parseSse((yield* request(`/runs/${runId}/streams?startIndex=-2`)).text)
      expect(tail).toEqual([{ id: "3", data: "3" }, { id: "4", data: "4" }, { event: "end", data: "{}" }])
      const logs = parseSse((yield* request(`/runs/${runId}/streams/logs?startIndex=4`)).text)
      expect(logs).toEqual([{ id: "4", data: "\"wrote 4\"" }, { event: "end", data: "{}" }])
      // A reader that resumes after the last item of an ended stream gets 204: EventSource stops reconnecting.
      expect((yield* request(`/runs/${runId}/streams`, { headers: { "last-event-id": "4" } })).status).toBe(204)
      const size = (yield* Effect.flatMap(RunStore.RunStore, (store) => store.readEvents(runId, 0, 0))).size
      expect((yield* request(`/runs/${runId}/ui`, { headers: { "last-event-id": String(size - 1) } })).status).toBe(204)
    }).pipe(provideServer()))

  it.live("a bad Last-Event-ID or startIndex gets 400 with a message, an unknown run 404; other readers go on", () =>
    Effect.gen(function*() {
      const runId = yield* startCount(30, 5)
      const reader = yield* Effect.fork(request(`/runs/${runId}/streams`))
      const notNumber = yield* request(`/runs/${runId}/streams`, { headers: { "last-event-id": "abc" } })
      expect(notNumber.status).toBe(400)
      expect(json(notNumber.text).message).toBe(
        `Last-Event-ID must be the id of a message this stream sent (a non-negative integer), got "abc"`
      )
      const past = yield* request(`/runs/${runId}/events`, { headers: { "last-event-id": "9999" } })
      expect(past.status).toBe(400)
      expect(json(past.text).message).toMatch(/^Last-Event-ID 9999 is past the end: the event log of run .* holds \d+ item/)
      const badIndex = yield* request(`/runs/${runId}/streams?startIndex=first`)
      expect(json(badIndex.text).message).toBe(`startIndex must be an integer (negative: count from the end), got "first"`)
      const farIndex = yield* request(`/runs/${runId}/streams/logs?startIndex=500`)
      expect(json(farIndex.text).message).toMatch(/^startIndex 500 is past the end: the stream "logs" of run /)
      const unknown = yield* request(`/runs/no-such-run/events`)
      expect(unknown.status).toBe(404)
      expect(json(unknown.text)).toMatchObject({
        _tag: "RunNotFound",
        message: `No run "no-such-run" in the run store (it never existed, or the store's retention removed it).`
      })
      const full = parseSse((yield* reader.await.pipe(Effect.flatten)).text)
      expect(full.filter((m) => m.id !== undefined).map((m) => Number(m.data))).toEqual(Array.from({ length: 30 }, (_, i) => i))
    }).pipe(provideServer()))

  it.live("an idle SSE response sends heartbeat comments", () =>
    Effect.gen(function*() {
      const runId = yield* startCount(2, 300)
      const text = yield* readSome(`/runs/${runId}/streams`, {}, (t) => t.includes(": ping"))
      expect(text).toContain(": ping\n\n")
    }).pipe(provideServer()))

  it.live("a reader that disconnects leaves no subscription behind, and the run goes on", () =>
    Effect.gen(function*() {
      // A suspended run: its stream never ends by itself, so only the disconnect can release its readers.
      const runId = json((yield* post("/workflows/approve/runs", "\"x\"")).text).runId as string
      yield* Effect.flatMap(WorkflowEngine.WorkflowEngine, (e) => Effect.flatMap(e.getRun(runId), (run) => awaitStatus(run, "suspended")))
      const channels = yield* EventBus.MemoryChannels
      const before = yield* channels.size
      // Each request is a root fiber of the server's runtime; a reader's stream lives in it.
      const fibersBefore = (yield* Fiber.roots).length
      const fibersDuring = yield* Effect.forEach(
        Array.from({ length: 5 }),
        () =>
          Effect.zipRight(
            readSome(`/runs/${runId}/streams`, {}, (text) => text.includes("retry:")),
            Effect.map(Fiber.roots, (roots) => roots.length)
          ),
        { concurrency: "unbounded" }
      )
      expect(Math.max(...fibersDuring)).toBeGreaterThan(fibersBefore)
      const released = Effect.all([channels.size, Fiber.roots]).pipe(
        Effect.flatMap(([size, roots]) =>
          size === before && roots.length <= fibersBefore ? Effect.void : Effect.fail("still open")
        ),
        Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.upTo("3 seconds")))
      )
      yield* Effect.orElse(released, () => Effect.void)
      expect(yield* channels.size).toBe(before)
      expect((yield* Fiber.roots).length).toBeLessThanOrEqual(fibersBefore)
      yield* post(`/runs/${runId}/resume`, { step: "approval", resumeData: { approved: true } })
      const exit = yield* awaitRun(runId)
      expect(exit._tag).toBe("Success")
    }).pipe(provideServer()))

  it.live("cancel: 202 and the run ends canceled", () =>
    Effect.gen(function*() {
      const runId = yield* startCount(100, 20)
      const bare = yield* request(`/runs/${runId}/cancel`, { method: "POST" })
      expect(bare.status).toBe(415)
      const canceled = yield* post(`/runs/${runId}/cancel`, "")
      expect(canceled.status).toBe(202)
      const info = json((yield* request(`/runs/${runId}`)).text)
      expect(info.status).toBe("canceled")
    }).pipe(provideServer()))

  it.live("resume: refused with 409 unless suspended, 400 for data its resumeSchema rejects, else 202", () =>
    Effect.gen(function*() {
      const running = yield* startCount(100, 20)
      const conflict = yield* post(`/runs/${running}/resume`, { step: "count", resumeData: {} })
      expect(conflict.status).toBe(409)
      expect(json(conflict.text).message).toBe(`Run ${running} is running, not suspended: only a suspended run can be resumed.`)
      const runId = json((yield* post("/workflows/approve/runs", "\"the budget\"")).text).runId as string
      yield* awaitRun(runId)
      const info = json((yield* request(`/runs/${runId}`)).text)
      expect(info).toMatchObject({ status: "suspended", suspended: [{ step: "approval", payload: { question: "approve the budget?" } }] })
      const invalid = yield* post(`/runs/${runId}/resume`, { step: "approval", resumeData: { approved: "yes" } })
      expect(invalid.status).toBe(400)
      expect(json(invalid.text).message).toMatch(/resumeData does not match the step's resumeSchema.*\["approved"\]/s)
      const shapeless = yield* post(`/runs/${runId}/resume`, { resumeData: 1 })
      expect(json(shapeless.text).message).toMatch(/^The body must be \{ step, resumeData \}: .*\["step"\]/s)
      const resumed = yield* post(`/runs/${runId}/resume`, { step: "approval", resumeData: { approved: true } })
      expect(resumed.status).toBe(202)
      const engine = yield* WorkflowEngine.WorkflowEngine
      expect(yield* Effect.flatMap(engine.getRun(runId), (run) => run.result)).toBe("the budget: approved")
    }).pipe(provideServer()))

  it.live("the Authorization hook refuses a request before any run is read or started", () => {
    let storeCalls = 0
    const counting = Layer.effect(
      RunStore.RunStore,
      Effect.map(RunStore.RunStore, (store) =>
        new Proxy(store, {
          get: (target, key) => {
            const member = target[key as keyof typeof target]
            return typeof member === "function"
              ? (...args: Array<unknown>) => {
                storeCalls++
                return (member as (...a: Array<unknown>) => unknown)(...args)
              }
              : member
          }
        }))
    )
    const auth = Http.layerAuthorization((request, action) =>
      request.headers.authorization === "Bearer sesame"
        ? Effect.void
        : action._tag === "start"
        ? Effect.fail(new Http.Forbidden({ message: `You may not start "${action.workflowId}".` }))
        : Effect.fail(new Http.Unauthorized({ message: "Send Authorization: Bearer <token>." })))
    return Effect.gen(function*() {
      const allowed = { authorization: "Bearer sesame" }
      const runId = json((yield* request("/workflows/count/runs", {
        method: "POST",
        body: JSON.stringify({ n: 2, pace: 1 }),
        headers: { ...allowed, "content-type": "application/json" }
      })).text).runId as string
      yield* awaitRun(runId)
      const before = storeCalls
      const read = yield* request(`/runs/${runId}/events`)
      expect(read.status).toBe(401)
      expect(json(read.text).message).toBe("Send Authorization: Bearer <token>.")
      const started = yield* post("/workflows/count/runs", { n: 1 })
      expect(started.status).toBe(403)
      expect((yield* post(`/runs/${runId}/cancel`, "")).status).toBe(401)
      expect((yield* request(`/runs/${runId}`)).status).toBe(401)
      expect(storeCalls).toBe(before)
      expect((yield* request(`/runs/${runId}`, { headers: allowed })).status).toBe(200)
    }).pipe(
      Effect.provide(
        serve({ auth }).pipe(
          Layer.provideMerge(WorkflowEngine.layerDefault.pipe(Layer.provideMerge(Layer.merge(EventBus.layerMemory, counting.pipe(Layer.provideMerge(RunStore.layerMemory)))))),
          Layer.provideMerge(Chat.FakeChatModel(0))
        )
      )
    )
  })
})

describe("AI SDK UI message streams", () => {
  /** The message `readUIMessageStream` builds from chunks, with the parts that depend on the transport left out. */
  const readMessage = (stream: ReadableStream<UIMessageChunk>) =>
    Effect.promise(async () => {
      let last: UIMessage | undefined
      for await (const message of readUIMessageStream({ stream })) last = message
      return last!
    })

  const contentParts = (message: UIMessage) => message.parts.filter((part) => part.type !== "data-workflow-step")

  it.live("the ai package reads GET /runs/{runId}/ui into the same message as the in-process chat", () =>
    Effect.gen(function*() {
      const { base } = yield* Served
      const runId = json((yield* post("/workflows/chat/runs", [{ role: "user", content: "weather?" }])).text).runId as string
      const transport = new DefaultChatTransport({
        api: `${base}/unused`,
        prepareReconnectToStreamRequest: ({ id }) => ({ api: `${base}/runs/${id}/ui` })
      })
      const stream = yield* Effect.promise(() => transport.reconnectToStream({ chatId: runId }))
      const remote = yield* readMessage(stream!)
      const engine = yield* WorkflowEngine.WorkflowEngine
      const run = yield* engine.getRun(runId)
      const chunks = Array.from(yield* Stream.runCollect(run.readable<UIMessageChunk>()))
      const local = yield* readMessage(Run.toReadableStream(Stream.fromIterable(chunks)))
      expect(remote.id).toBe(runId)
      expect(contentParts(remote)).toEqual(contentParts(local))
      expect(remote.parts.flatMap((part) => part.type === "data-workflow-step" ? [part.data] : [])).toEqual([
        { step: "start-stream", status: "success" },
        { step: "stream-text", status: "success" },
        { step: "end-stream", status: "success" }
      ])
      const headers = (yield* request(`/runs/${runId}/ui`)).headers
      expect(headers.get("x-vercel-ai-ui-message-stream")).toBe("v1")
    }).pipe(provideServer()))

  it.live("GET /runs/{runId}/ui resumes from Last-Event-ID: the chunks of both reads are those of one", () =>
    Effect.gen(function*() {
      const runId = json((yield* post("/workflows/chat/runs", [{ role: "user", content: "weather?" }])).text).runId as string
      const whole = parseSse((yield* request(`/runs/${runId}/ui`)).text)
      // A reader cut after its ninth message (the run may be over already: then the cut is simulated on what it read).
      const first = parseSse(yield* readSome(`/runs/${runId}/ui`, {}, (text) => parseSse(text).length >= 9)).slice(0, 9)
      const lastId = first.at(-1)!.id!
      const rest = parseSse((yield* request(`/runs/${runId}/ui`, { headers: { "last-event-id": lastId } })).text)
      expect([...first, ...rest].map((m) => m.data)).toEqual(whole.map((m) => m.data))
      expect(whole.at(-1)!.data).toBe("[DONE]")
    }).pipe(provideServer()))

  it.live("an event that becomes several messages gives each an id: a reader cut between them misses nothing", () =>
    Effect.gen(function*() {
      const runId = json((yield* post("/workflows/boom/runs", "1")).text).runId as string
      yield* awaitRun(runId)
      const whole = parseSse((yield* request(`/runs/${runId}/ui`)).text)
      const error = whole.findIndex((m) => m.data?.includes(`"type":"error"`))
      expect(whole.slice(error).map((m) => m.data)).toEqual([
        JSON.stringify({ type: "error", errorText: "kaboom" }),
        JSON.stringify({ type: "finish" }),
        "[DONE]"
      ])
      const [errorId, finishId] = [whole[error]!.id!, whole[error + 1]!.id!]
      expect(errorId).toBe(`${finishId}.0`)
      const rest = parseSse((yield* request(`/runs/${runId}/ui`, { headers: { "last-event-id": errorId } })).text)
      expect(rest.map((m) => m.data)).toEqual([JSON.stringify({ type: "finish" }), "[DONE]"])
    }).pipe(provideServer()))

  it.effect("Run.toUIMessageStream maps events without state: a failed run ends with error then finish", () =>
    Effect.gen(function*() {
      const chunks = yield* Stream.runCollect(Run.toUIMessageStream(Stream.make(
        { type: "workflow-start", runId: "r", from: "WORKFLOW", payload: { workflowId: "w" } } as const,
        { type: "text-delta", id: "t", delta: "hi" },
        { type: "progress", pct: 50 },
        { type: "finish", messageMetadata: { tokens: 3 } },
        {
          type: "workflow-finish",
          runId: "r",
          from: "WORKFLOW",
          payload: { workflowStatus: "failed", error: { name: "Error", message: "boom" } }
        } as const
      )))
      expect(Array.from(chunks)).toEqual([
        { type: "start", messageId: "r" },
        { type: "text-delta", id: "t", delta: "hi" },
        { type: "data-progress", data: { type: "progress", pct: 50 } },
        { type: "message-metadata", messageMetadata: { tokens: 3 } },
        { type: "error", errorText: "boom" },
        { type: "finish" }
      ])
    }))
})

describe("Http.client", () => {
  it.live("starts a run by workflow, follows its stream and events, and decodes its result", () =>
    Effect.gen(function*() {
      const { base } = yield* Served
      const client = yield* Http.client(base)
      const run = yield* client.start(count, { n: 6, pace: 2 })
      const chunks = yield* Stream.runCollect(run.readable<number>())
      expect(Array.from(chunks)).toEqual([0, 1, 2, 3, 4, 5])
      const logs = yield* Stream.runCollect(run.readable<string>({ namespace: "logs", startIndex: -1 }))
      expect(Array.from(logs)).toEqual(["wrote 5"])
      expect(yield* run.result).toBe(6)
      const events = Array.from(yield* Stream.runCollect(run.events()))
      expect(events.at(0)?.type).toBe("workflow-start")
      expect(events.at(-1)?.type).toBe("workflow-finish")
      const missing = yield* Effect.flip(client.getRun("missing"))
      expect(missing._tag).toBe("RunNotFound")
      const invalid = yield* Effect.flip(client.start("count", { n: "x" }))
      expect(invalid._tag).toBe("InvalidRequest")
    }).pipe(provideServer()))

  it.live("result fails as run.result does: suspended, then resumed through the client", () =>
    Effect.gen(function*() {
      const { base } = yield* Served
      const client = yield* Http.client(base)
      const run = yield* client.start(approve, "the trip")
      const suspended = yield* Effect.flip(run.result)
      expect(suspended._tag).toBe("RunSuspendedError")
      yield* run.resume({ step: "approval", resumeData: { approved: false } })
      expect(yield* run.result).toBe("the trip: refused")
    }).pipe(provideServer()))

  it.live("a remote stream reconnects by itself after the server cuts every connection: no gap, no duplicate", () =>
    Effect.gen(function*() {
      const { base, server } = yield* Served
      const client = yield* Http.client(base)
      const run = yield* client.start(count, { n: 60, pace: 4 })
      const halfway = yield* Deferred.make<void>()
      const reader = yield* run.readable<number>().pipe(
        Stream.tap((i) => i === 15 ? Deferred.succeed(halfway, undefined) : Effect.void),
        Stream.runCollect,
        Effect.fork
      )
      yield* Deferred.await(halfway)
      server.closeAllConnections()
      const chunks = Array.from(yield* reader.await.pipe(Effect.flatten))
      expect(chunks).toEqual(Array.from({ length: 60 }, (_, i) => i))
      expect(yield* run.result).toBe(60)
    }).pipe(provideServer()))

  it.live("a second process starts and reads a run through Http.client", () =>
    Effect.gen(function*() {
      const { base } = yield* Served
      const output = yield* Effect.async<string, Error>((resume) => {
        const child = spawn(process.execPath, ["--import", "tsx", "test/fixtures/httpClient.ts", base], {
          stdio: ["ignore", "pipe", "inherit"]
        })
        let out = ""
        child.stdout.on("data", (data) => (out += data))
        child.on("exit", (code) =>
          resume(code === 0 ? Effect.succeed(out) : Effect.fail(new Error(`the client process exited with ${code}`))))
        return Effect.sync(() => child.kill())
      })
      const report = JSON.parse(output.trim().split("\n").at(-1)!) as {
        readonly runId: string
        readonly chunks: ReadonlyArray<number>
        readonly result: number
      }
      expect(report.chunks).toEqual([0, 1, 2, 3, 4, 5, 6, 7])
      expect(report.result).toBe(8)
      const store = yield* RunStore.RunStore
      expect((yield* store.getRun(report.runId))?.status).toBe("success")
    }).pipe(provideServer()), 60_000)
})
