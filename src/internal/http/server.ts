/**
 * The handlers of the `runs` group: bodies read with a cap, inputs decoded with the workflow's schema, SSE responses
 * with an `id:` per message, `Last-Event-ID` resume, heartbeats, an explicit end, and an end at shutdown.
 */
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { isTerminal, RunStore } from "../../RunStore.js"
import type * as Workflow from "../../Workflow.js"
import { WorkflowEngine } from "../../WorkflowEngine.js"
import type { WorkflowEvent } from "../../WorkflowEvent.js"
import * as UIMessage from "../uiMessage.js"
import {
  type Action,
  Api,
  Authorization,
  InvalidRequest,
  type Options,
  PayloadTooLarge,
  ResumeRequest,
  RunConflict,
  RunNotFound,
  StoreUnavailable,
  UnsupportedMediaType,
  WorkflowNotFound
} from "./api.js"

const encoder = new TextEncoder()

/** Where a reader starts: at item `index`, skipping that item's first `skip` messages (it was cut among them). */
export interface Start {
  readonly index: number
  readonly skip: number
}

/**
 * The SSE messages of one item, one per datum (JSON: one line each), from message `skip` on. The last carries the
 * item's index as its `id`, the others `<index>.<k>`, so a reader cut among an item's messages resumes right after
 * the last one it has. An item with no data still moves the reader's `Last-Event-ID` on.
 */
const messagesOf = (data: ReadonlyArray<string>, index: number, skip: number): string => {
  if (data.length === 0) return `id: ${index}\n\n`
  let text = ""
  for (let k = skip; k < data.length - 1; k++) text += `id: ${index}.${k}\ndata: ${data[k]}\n\n`
  return `${text}id: ${index}\ndata: ${data[data.length - 1]}\n\n`
}

/** The message that says a stream is over, so that a reader can tell the end from a dropped connection. */
const endMessage = "event: end\ndata: {}\n\n"

/** A failure while streaming, named so that `EventSource.onerror` (the connection's errors) does not get it. */
const errorMessage = (text: string) => `event: stepwise-error\ndata: ${JSON.stringify({ message: text })}\n\n`

/** How many batches of messages (and pings) a response holds for a reader that has not taken them yet. */
const bodyBuffer = 16

/**
 * The body of an SSE response: `messages`, with a `: ping` comment every `heartbeat` between them, ending when
 * `messages` ends. Both go through one bounded queue, from which the response takes whatever is waiting as one write:
 * a reader that falls behind gets its backlog in few large writes rather than one per message. (`Stream.merge` with a
 * ticker raced a pull of both sides for every chunk of messages, and each message was a write of its own: with 100
 * readers of a writer going flat out, 40% more CPU per delivered chunk than this; see bench/http.)
 */
const withHeartbeats = (messages: Stream.Stream<string>, heartbeat: Duration.Duration): Stream.Stream<Uint8Array> =>
  Stream.unwrapScoped(Effect.gen(function*() {
    const queue = yield* Queue.bounded<string | Exit.Exit<void>>(bodyBuffer)
    yield* messages.pipe(
      Stream.runForEachChunk((chunk) => Queue.offerAll(queue, chunk)),
      Effect.exit,
      Effect.flatMap((exit) => Queue.offer(queue, exit)),
      Effect.forkScoped
    )
    yield* Queue.offer(queue, ": ping\n\n").pipe(Effect.delay(heartbeat), Effect.forever, Effect.forkScoped)
    let done: Exit.Exit<void> | undefined
    const take = Effect.map(Queue.takeBetween(queue, 1, bodyBuffer), (taken) => {
      let text = ""
      for (const item of taken) {
        if (typeof item === "string") text += item
        else done = item
      }
      return text === "" ? Chunk.empty<Uint8Array>() : Chunk.of(encoder.encode(text))
    })
    const pull = Effect.suspend(() =>
      done === undefined
        ? take
        : Exit.isSuccess(done)
        ? Effect.fail(Option.none())
        : Effect.failCause(done.cause)
    )
    return Stream.repeatEffectChunkOption(pull)
  }))

const sseHeaders = {
  "cache-control": "no-cache, no-transform",
  "x-accel-buffering": "no"
} as const

/**
 * Where a reader starts: after its `Last-Event-ID` (it has that message), else at `startIndex` (negative: the last
 * N), else at 0. An index the run does not have yet is refused: the reader cannot have seen it.
 */
export const resolveStart = (
  what: string,
  lastEventId: string | undefined,
  startIndex: string | undefined,
  size: number
): Effect.Effect<Start, InvalidRequest> => {
  const fail = (text: string) => Effect.fail(new InvalidRequest({ message: text }))
  const holds = size === 0 ? `${what} holds no item yet` : `${what} holds ${size} item(s), indexes 0 to ${size - 1}`
  if (lastEventId !== undefined && lastEventId.trim() !== "") {
    const match = /^(\d+)(?:\.(\d+))?$/.exec(lastEventId.trim())
    if (match === null) {
      return fail(`Last-Event-ID must be the id of a message this stream sent (a non-negative integer), got "${lastEventId}"`)
    }
    const last = Number(match[1])
    if (last >= size) return fail(`Last-Event-ID ${last} is past the end: the ${holds}`)
    return Effect.succeed(match[2] === undefined ? { index: last + 1, skip: 0 } : { index: last, skip: Number(match[2]) + 1 })
  }
  if (startIndex !== undefined) {
    if (!/^-?\d+$/.test(startIndex.trim())) {
      return fail(`startIndex must be an integer (negative: count from the end), got "${startIndex}"`)
    }
    const index = Number(startIndex)
    if (index < 0) return Effect.succeed({ index: Math.max(0, size + index), skip: 0 })
    if (index > size) return fail(`startIndex ${index} is past the end: the ${holds}`)
    return Effect.succeed({ index, skip: 0 })
  }
  return Effect.succeed({ index: 0, skip: 0 })
}

/**
 * What a `POST` must say: `content-type: application/json`. Browsers send other types (forms, `text/plain`) to any
 * site without asking first; this one makes them ask (a CORS preflight).
 */
const requireJson = (request: HttpServerRequest.HttpServerRequest) => {
  const type = request.headers["content-type"]?.toLowerCase() ?? ""
  return /^application\/([\w.-]+\+)?json\b/.test(type.trim())
    ? Effect.void
    : Effect.fail(
      new UnsupportedMediaType({
        message: `Send content-type: application/json${type === "" ? "" : ` (got "${type}")`}; with curl: -H 'content-type: application/json'.`
      })
    )
}

/**
 * Reads a JSON body of at most `limit` bytes. A body over the limit is read on (and dropped) up to 16 times the
 * limit so that the client gets its 413 answer; past that, the connection is cut.
 */
const readJson = (request: HttpServerRequest.HttpServerRequest, limit: number) =>
  Effect.gen(function*() {
    yield* requireJson(request)
    const tooLarge = new PayloadTooLarge({
      limit,
      message: `The request body is larger than the server's limit of ${limit} bytes (maxBodySize).`
    })
    const declared = Number(request.headers["content-length"])
    if (Number.isFinite(declared) && declared > limit) return yield* tooLarge
    const parts: Array<Uint8Array> = []
    let size = 0
    yield* request.stream.pipe(
      Stream.mapError(() => new InvalidRequest({ message: "The request body could not be read (the connection failed)." })),
      Stream.runForEach((chunk) => {
        size += chunk.length
        if (size > limit * 16) return tooLarge
        if (size <= limit) parts.push(chunk)
        return Effect.void
      })
    )
    if (size > limit) return yield* tooLarge
    const text = Buffer.concat(parts).toString("utf8")
    if (text.trim() === "") return yield* new InvalidRequest({ message: "The request body is empty: send JSON." })
    return yield* Effect.try({
      try: (): unknown => JSON.parse(text),
      catch: (e) => new InvalidRequest({ message: `The request body is not valid JSON: ${(e as Error).message}` })
    })
  })

const unavailable = (error: { readonly message: string }) =>
  new StoreUnavailable({ message: `The run store failed: ${error.message}` })

const notFound = (runId: string) =>
  new RunNotFound({
    runId,
    message: `No run "${runId}" in the run store (it never existed, or the store's retention removed it).`
  })

/** The handlers, with the services they need taken when the layer is built. */
export const layerGroup = <W extends ReadonlyArray<Workflow.Any>>(options: Options<W>) =>
  HttpApiBuilder.group(Api, "runs", (handlers) =>
    Effect.gen(function*() {
      const engine = yield* WorkflowEngine
      const store = yield* RunStore
      const services = yield* Effect.context<never>()
      const hook = yield* Effect.serviceOption(Authorization)
      const workflows = new Map<string, Workflow.Any>(options.workflows.map((w) => [w.id, w]))
      const limit = options.maxBodySize ?? 1024 * 1024
      const heartbeat = Duration.decode(options.heartbeat ?? "15 seconds")
      const retry = Duration.toMillis(options.retry ?? "1 second")
      // Open SSE responses end when the layer does, so that the server's close (which waits for every response)
      // does not wait for runs that go on. Their readers, given no `event: end`, connect again elsewhere.
      const closing = yield* Deferred.make<void>()
      yield* Effect.addFinalizer(() => Deferred.succeed(closing, undefined))

      const authorize = (request: HttpServerRequest.HttpServerRequest, action: Action) =>
        Option.isNone(hook) ? Effect.void : hook.value.authorize(request, action)

      const findRun = (runId: string) =>
        Effect.flatMap(Effect.mapError(store.getRun(runId), unavailable), (record) =>
          record === undefined ? Effect.fail(notFound(runId)) : Effect.succeed(record))

      const handleOf = (runId: string) =>
        Effect.catchTag(engine.getRun(runId), "RunNotFoundError", () => Effect.fail(notFound(runId)))

      /**
       * An SSE response: the data of each item from `start` on, then `last`; `onError` says what a failure while
       * streaming becomes.
       */
      const respond = <E extends { readonly message: string }>(
        items: Stream.Stream<ReadonlyArray<string>, E>,
        start: Start,
        last: string,
        onError: (message: string) => string,
        headers: Record<string, string> = {}
      ) => {
        // One string per chunk of items: one write for all the items a read of the run found.
        const messages = Stream.suspend(() => {
          let i = 0
          return items.pipe(
            Stream.mapChunks((chunk) => {
              if (Chunk.isEmpty(chunk)) return Chunk.empty<string>()
              let text = ""
              for (const data of chunk) {
                text += messagesOf(data, start.index + i, i === 0 ? start.skip : 0)
                i++
              }
              return Chunk.of(text)
            }),
            Stream.concat(Stream.make(last)),
            Stream.catchAll((e) => Stream.make(onError(e.message)))
          )
        })
        const body = withHeartbeats(Stream.concat(Stream.make(`retry: ${retry}\n\n`), messages), heartbeat).pipe(
          Stream.interruptWhen(Deferred.await(closing))
        )
        return HttpServerResponse.stream(body, {
          contentType: "text/event-stream",
          headers: { ...sseHeaders, "x-stepwise-start-index": String(start.index), ...headers }
        })
      }

      /** 204 for a reader that resumes after the end: `EventSource` stops reconnecting, the AI SDK sees no stream. */
      const ended = HttpServerResponse.empty({ status: 204 })

      const readStream = (
        request: HttpServerRequest.HttpServerRequest,
        runId: string,
        lastEventId: string | undefined,
        startIndex: string | undefined,
        namespace: string
      ) =>
        Effect.gen(function*() {
          yield* authorize(request, { _tag: "read", runId })
          const record = yield* findRun(runId)
          const run = yield* handleOf(runId)
          const page = yield* Effect.mapError(store.readChunks(runId, namespace, 0, 0), unavailable)
          const what = namespace === "" ? `default stream of run ${runId}` : `stream "${namespace}" of run ${runId}`
          const start = yield* resolveStart(what, lastEventId, startIndex, page.size)
          if (lastEventId !== undefined && start.index === page.size && (page.closed || isTerminal(record.status))) {
            return ended
          }
          const chunks = run.readable({ namespace, startIndex: start.index }).pipe(
            Stream.map((chunk) => [JSON.stringify(chunk) ?? "null"])
          )
          return respond(chunks, start, endMessage, errorMessage)
        })

      const readEvents = (
        request: HttpServerRequest.HttpServerRequest,
        runId: string,
        lastEventId: string | undefined,
        startIndex: string | undefined,
        toData: (event: WorkflowEvent) => ReadonlyArray<string>,
        last: string,
        onError: (message: string) => string,
        headers?: Record<string, string>
      ) =>
        Effect.gen(function*() {
          yield* authorize(request, { _tag: "read", runId })
          yield* findRun(runId)
          const run = yield* handleOf(runId)
          const { size } = yield* Effect.mapError(store.readEvents(runId, 0, 0), unavailable)
          const start = yield* resolveStart(`event log of run ${runId}`, lastEventId, startIndex, size)
          if (lastEventId !== undefined && start.index === size && size > 0) {
            const previous = yield* Effect.mapError(store.readEvents(runId, size - 1, 1), unavailable)
            if (previous.events.some((e) => e.type === "workflow-finish" && e.from === "WORKFLOW")) return ended
          }
          return respond(run.events({ startIndex: start.index }).pipe(Stream.map(toData)), start, last, onError, headers)
        })

      return handlers
        .handleRaw("start", ({ path, request, urlParams }) =>
          Effect.gen(function*() {
            yield* authorize(request, { _tag: "start", workflowId: path.workflowId })
            const workflow = workflows.get(path.workflowId)
            if (workflow === undefined) {
              const served = Array.from(workflows.keys()).map((id) => `"${id}"`).join(", ") || "none"
              return yield* new WorkflowNotFound({
                workflowId: path.workflowId,
                message: `No workflow "${path.workflowId}" is served here (served: ${served}).`
              })
            }
            const body = yield* readJson(request, limit)
            const input = yield* Effect.mapError(
              Schema.decodeUnknown(workflow.inputSchema)(body),
              (e) => new InvalidRequest({ message: `The input does not match the inputSchema of "${workflow.id}": ${e.message}` })
            )
            const runId = urlParams.runId
            if (runId !== undefined) {
              const existing = yield* Effect.mapError(store.getRun(runId), unavailable)
              if (existing !== undefined && existing.workflowId !== workflow.id) {
                return yield* new RunConflict({
                  runId,
                  message: `runId "${runId}" already belongs to a run of workflow "${existing.workflowId}".`
                })
              }
            }
            const run = yield* engine.start(
              workflow as Workflow.Workflow<string, unknown, unknown, unknown, never>,
              input,
              runId === undefined ? undefined : { runId }
            ).pipe(
              Effect.provide(services),
              Effect.mapError((e) => new InvalidRequest({ message: e.message }))
            )
            return { runId: run.runId }
          }))
        .handle("get", ({ path, request }) =>
          Effect.gen(function*() {
            yield* authorize(request, { _tag: "read", runId: path.runId })
            const record = yield* findRun(path.runId)
            return {
              runId: record.runId,
              workflowId: record.workflowId,
              status: record.status,
              input: record.input,
              ...(record.output === undefined ? {} : { output: record.output }),
              ...(record.error === undefined ? {} : { error: record.error }),
              ...(record.failedStep === undefined ? {} : { failedStep: record.failedStep }),
              suspended: (record.suspended ?? []).map(({ path, payload, step }) => ({ step, path, payload })),
              createdAt: record.createdAt,
              updatedAt: record.updatedAt
            }
          }))
        .handle("events", ({ headers, path, request, urlParams }) =>
          readEvents(
            request,
            path.runId,
            headers["last-event-id"],
            urlParams.startIndex,
            (event) => [JSON.stringify(event)],
            endMessage,
            errorMessage
          ))
        .handle("stream", ({ headers, path, request, urlParams }) =>
          readStream(request, path.runId, headers["last-event-id"], urlParams.startIndex, ""))
        .handle("namespacedStream", ({ headers, path, request, urlParams }) =>
          readStream(request, path.runId, headers["last-event-id"], urlParams.startIndex, path.namespace))
        .handle("ui", ({ headers, path, request, urlParams }) =>
          readEvents(
            request,
            path.runId,
            headers["last-event-id"],
            urlParams.startIndex,
            (event) => UIMessage.chunksOf(event).map((chunk) => JSON.stringify(chunk)),
            "data: [DONE]\n\n",
            // The protocol's own error part, then its end: the AI SDK reads data only.
            (message) => `data: ${JSON.stringify({ type: "error", errorText: message })}\n\ndata: [DONE]\n\n`,
            { "x-vercel-ai-ui-message-stream": "v1" }
          ))
        .handleRaw("cancel", ({ path, request }) =>
          Effect.gen(function*() {
            yield* authorize(request, { _tag: "cancel", runId: path.runId })
            yield* requireJson(request)
            yield* findRun(path.runId)
            const run = yield* handleOf(path.runId)
            yield* run.cancel
          }))
        .handleRaw("resume", ({ path, request }) =>
          Effect.gen(function*() {
            const runId = path.runId
            yield* authorize(request, { _tag: "resume", runId })
            const conflict = (status: string) =>
              new RunConflict({
                runId,
                message: `Run ${runId} is ${status}, not suspended: only a suspended run can be resumed.`
              })
            const record = yield* findRun(runId)
            if (record.status !== "suspended") return yield* conflict(record.status)
            const body = yield* readJson(request, limit)
            const { resumeData, step } = yield* Effect.mapError(
              Schema.decodeUnknown(ResumeRequest)(body),
              (e) => new InvalidRequest({ message: `The body must be { step, resumeData }: ${e.message}` })
            )
            const run = yield* handleOf(runId)
            yield* Effect.catchAll(run.resume({ step, resumeData }), (error) =>
              // The run may have moved since it was read: say so rather than blame the request.
              Effect.flatMap(findRun(runId), (now): Effect.Effect<never, RunConflict | InvalidRequest> =>
                now.status !== "suspended"
                  ? Effect.fail(conflict(now.status))
                  : error.reason.startsWith("the run is still being executed")
                  ? Effect.fail(new RunConflict({ runId, message: error.message }))
                  : Effect.fail(new InvalidRequest({ message: error.message }))))
          }))
    }))
