/**
 * The handlers of the `runs` group: bodies read with a cap, inputs decoded with the workflow's schema, SSE responses
 * with an `id:` per item, `Last-Event-ID` resume, heartbeats and an explicit end.
 */
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { RunStore } from "../../RunStore.js"
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
  RunConflict,
  ResumeRequest,
  RunNotFound,
  WorkflowNotFound
} from "./api.js"

const encoder = new TextEncoder()

/**
 * The SSE messages of one item: one per datum (JSON, so one line each), the last with the item's index as `id`, so a
 * reader that drops in the middle of an item's messages resumes at that item again rather than past it. An item
 * with no data still moves the reader's `Last-Event-ID` on.
 */
const messagesOf = (data: ReadonlyArray<string>, id: number): string => {
  let text = ""
  for (let i = 0; i < data.length - 1; i++) text += `data: ${data[i]}\n\n`
  return data.length === 0 ? `${text}id: ${id}\n\n` : `${text}id: ${id}\ndata: ${data[data.length - 1]}\n\n`
}

/** The message that says a stream is over, so that a reader can tell the end from a dropped connection. */
const endMessage = "event: end\ndata: {}\n\n"

const errorMessage = (text: string) => `event: error\ndata: ${JSON.stringify({ message: text })}\n\n`

const sseHeaders = {
  "cache-control": "no-cache, no-transform",
  "x-accel-buffering": "no"
} as const

/**
 * Where a reader starts: after its `Last-Event-ID` (it has that item), else at `startIndex` (negative: the last N),
 * else at 0. An index the run does not have yet is refused: the reader cannot have seen it.
 */
export const resolveStart = (
  what: string,
  lastEventId: string | undefined,
  startIndex: string | undefined,
  size: number
): Effect.Effect<number, InvalidRequest> => {
  const fail = (text: string) => Effect.fail(new InvalidRequest({ message: text }))
  const holds = size === 0 ? `${what} holds no item yet` : `${what} holds ${size} item(s), indexes 0 to ${size - 1}`
  if (lastEventId !== undefined && lastEventId.trim() !== "") {
    if (!/^\d+$/.test(lastEventId.trim())) {
      return fail(`Last-Event-ID must be the id of a message this stream sent (a non-negative integer), got "${lastEventId}"`)
    }
    const last = Number(lastEventId)
    if (last >= size) return fail(`Last-Event-ID ${last} is past the end: the ${holds}`)
    return Effect.succeed(last + 1)
  }
  if (startIndex !== undefined) {
    if (!/^-?\d+$/.test(startIndex.trim())) {
      return fail(`startIndex must be an integer (negative: count from the end), got "${startIndex}"`)
    }
    const index = Number(startIndex)
    if (index < 0) return Effect.succeed(Math.max(0, size + index))
    if (index > size) return fail(`startIndex ${index} is past the end: the ${holds}`)
    return Effect.succeed(index)
  }
  return Effect.succeed(0)
}

/**
 * Reads a JSON body of at most `limit` bytes, refusing more without reading it all. The content type is not checked
 * (`curl -d` says form-urlencoded): the body must parse as JSON, whatever it claims.
 */
const readJson = (request: HttpServerRequest.HttpServerRequest, limit: number) =>
  Effect.gen(function*() {
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
        if (size > limit) return tooLarge
        parts.push(chunk)
        return Effect.void
      })
    )
    const text = Buffer.concat(parts).toString("utf8")
    if (text.trim() === "") return yield* new InvalidRequest({ message: "The request body is empty: send JSON." })
    return yield* Effect.try({
      try: (): unknown => JSON.parse(text),
      catch: (e) => new InvalidRequest({ message: `The request body is not valid JSON: ${(e as Error).message}` })
    })
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

      const authorize = (request: HttpServerRequest.HttpServerRequest, action: Action) =>
        Option.isNone(hook) ? Effect.void : hook.value.authorize(request, action)

      const findRun = (runId: string) =>
        Effect.flatMap(Effect.orDie(store.getRun(runId)), (record) =>
          record === undefined
            ? Effect.fail(new RunNotFound({ runId, message: `No run "${runId}" in the run store.` }))
            : Effect.succeed(record))

      const handleOf = (runId: string) =>
        Effect.catchTag(
          engine.getRun(runId),
          "RunNotFoundError",
          () => Effect.fail(new RunNotFound({ runId, message: `No run "${runId}" in the run store.` }))
        )

      /** An SSE response: the data of each item from index `start` on, then `last`. */
      const respond = <E extends { readonly message: string }>(
        items: Stream.Stream<ReadonlyArray<string>, E>,
        start: number,
        last: string,
        headers: Record<string, string> = {}
      ) => {
        const messages = items.pipe(
          Stream.zipWithIndex,
          Stream.map(([data, i]) => messagesOf(data, start + i)),
          Stream.concat(Stream.make(last)),
          Stream.catchAll((e) => Stream.make(errorMessage(e.message)))
        )
        const pings = Stream.tick(heartbeat).pipe(Stream.drop(1), Stream.as(": ping\n\n"))
        const body = Stream.make(`retry: ${retry}\n\n`).pipe(
          Stream.concat(messages),
          Stream.merge(pings, { haltStrategy: "left" }),
          Stream.map((text) => encoder.encode(text))
        )
        return HttpServerResponse.stream(body, {
          contentType: "text/event-stream",
          headers: { ...sseHeaders, "x-stepwise-start-index": String(start), ...headers }
        })
      }

      const readStream = (
        request: HttpServerRequest.HttpServerRequest,
        runId: string,
        lastEventId: string | undefined,
        startIndex: string | undefined,
        namespace: string
      ) =>
        Effect.gen(function*() {
          yield* authorize(request, { _tag: "read", runId })
          const run = yield* handleOf(runId)
          const size = yield* Effect.orDie(run.streamSize({ namespace }))
          const what = namespace === "" ? `default stream of run ${runId}` : `stream "${namespace}" of run ${runId}`
          const start = yield* resolveStart(what, lastEventId, startIndex, size)
          const chunks = run.readable({ namespace, startIndex: start }).pipe(
            Stream.map((chunk) => [JSON.stringify(chunk) ?? "null"])
          )
          return respond(chunks, start, endMessage)
        })

      const readEvents = (
        request: HttpServerRequest.HttpServerRequest,
        runId: string,
        lastEventId: string | undefined,
        startIndex: string | undefined,
        toMessages: (event: WorkflowEvent) => ReadonlyArray<string>,
        last: string,
        headers?: Record<string, string>
      ) =>
        Effect.gen(function*() {
          yield* authorize(request, { _tag: "read", runId })
          const run = yield* handleOf(runId)
          const { size } = yield* Effect.orDie(store.readEvents(runId, 0, 0))
          const start = yield* resolveStart(`event log of run ${runId}`, lastEventId, startIndex, size)
          return respond(run.events({ startIndex: start }).pipe(Stream.map(toMessages)), start, last, headers)
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
            const run = yield* engine.start(workflow as Workflow.Workflow<string, unknown, unknown, unknown, never>, input, urlParams.runId === undefined ? undefined : { runId: urlParams.runId }).pipe(
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
            endMessage
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
            { "x-vercel-ai-ui-message-stream": "v1" }
          ))
        .handle("cancel", ({ path, request }) =>
          Effect.gen(function*() {
            yield* authorize(request, { _tag: "cancel", runId: path.runId })
            const run = yield* handleOf(path.runId)
            yield* run.cancel
          }))
        .handleRaw("resume", ({ path, request }) =>
          Effect.gen(function*() {
            const runId = path.runId
            yield* authorize(request, { _tag: "resume", runId })
            const record = yield* findRun(runId)
            if (record.status !== "suspended") {
              return yield* new RunConflict({
                runId,
                message: `Run ${runId} is ${record.status}, not suspended: only a suspended run can be resumed.`
              })
            }
            const body = yield* readJson(request, limit)
            const { resumeData, step } = yield* Effect.mapError(
              Schema.decodeUnknown(ResumeRequest)(body),
              (e) => new InvalidRequest({ message: `The body must be { step, resumeData }: ${e.message}` })
            )
            const run = yield* handleOf(runId)
            yield* Effect.mapError(
              run.resume({ step, resumeData }),
              (e) => new InvalidRequest({ message: e.message })
            )
          }))
    }))
