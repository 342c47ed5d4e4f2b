/**
 * The client of a stepwise server: the `runs` group's typed client (`HttpApiClient`) for requests, and SSE readers
 * that reconnect by themselves with `Last-Event-ID`.
 */
import * as Sse from "@effect/experimental/Sse"
import * as HttpApiClient from "@effect/platform/HttpApiClient"
import type * as HttpApiError from "@effect/platform/HttpApiError"
import * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as ParseResult from "effect/ParseResult"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type { RunStatus } from "../../RunStore.js"
import type * as Workflow from "../../Workflow.js"
import { RunCanceledError, RunSuspendedError, StepFailedError } from "../../WorkflowError.js"
import { WorkflowEvent } from "../../WorkflowEvent.js"
import {
  Api,
  Forbidden,
  InvalidRequest,
  PayloadTooLarge,
  RunConflict,
  type RunInfo,
  RunNotFound,
  StoreUnavailable,
  Unauthorized,
  UnsupportedMediaType,
  WorkflowNotFound
} from "./api.js"

/** A reader's stream broke for good: the server sent an error, or every reconnection failed. */
export class RemoteStreamError extends Data.TaggedError("RemoteStreamError")<{
  readonly url: string
  readonly reason: string
  /** The connection dropped (worth connecting again), as opposed to an error the server reported. */
  readonly dropped: boolean
}> {
  override get message(): string {
    return `Reading ${this.url} failed: ${this.reason}`
  }
}

/** Why a remote call failed. */
export type ClientError =
  | WorkflowNotFound
  | RunNotFound
  | InvalidRequest
  | PayloadTooLarge
  | RunConflict
  | StoreUnavailable
  | UnsupportedMediaType
  | Unauthorized
  | Forbidden
  | HttpApiError.HttpApiDecodeError
  | HttpClientError.HttpClientError
  | ParseResult.ParseError
  | RemoteStreamError

/** A run on a remote server. */
export interface RemoteRun<O> {
  readonly runId: string
  /** The run as the server has it now. */
  readonly info: Effect.Effect<RunInfo, ClientError>
  readonly status: Effect.Effect<RunStatus, ClientError>
  /**
   * Waits for the run to settle: its output (decoded with the workflow's `outputSchema` when the run was started or
   * found with its workflow), or why it has none. It follows the run's events, and reads the run once a second
   * while it waits (a status can change without an event of its own).
   */
  readonly result: Effect.Effect<O, ClientError | StepFailedError<unknown> | RunCanceledError | RunSuspendedError>
  /** The run's events from `startIndex` (negative: the last N), ending after `workflow-finish`. */
  readonly events: (options?: { readonly startIndex?: number }) => Stream.Stream<WorkflowEvent, ClientError>
  /** One of the run's streams (`namespace` omitted: the default one), ending when it is closed or the run ends. */
  readonly readable: <A = unknown>(
    options?: { readonly namespace?: string; readonly startIndex?: number }
  ) => Stream.Stream<A, ClientError>
  readonly cancel: Effect.Effect<void, ClientError>
  readonly resume: (options: { readonly step: string; readonly resumeData: unknown }) => Effect.Effect<void, ClientError>
}

/** The client. */
export interface RunsClient {
  /** Starts a run of `workflow` (its `inputSchema` encodes `input`) or of the workflow with this id (`input` as JSON). */
  readonly start: {
    <I, O, E, R>(
      workflow: Workflow.Workflow<string, I, O, E, R>,
      input: I,
      options?: { readonly runId?: string }
    ): Effect.Effect<RemoteRun<O>, ClientError>
    (workflowId: string, input: unknown, options?: { readonly runId?: string }): Effect.Effect<
      RemoteRun<unknown>,
      ClientError
    >
  }
  /** A run already on the server (its output decoded with `workflow`'s `outputSchema` when given). */
  readonly getRun: {
    <I, O, E, R>(runId: string, workflow: Workflow.Workflow<string, I, O, E, R>): Effect.Effect<RemoteRun<O>, ClientError>
    (runId: string): Effect.Effect<RemoteRun<unknown>, ClientError>
  }
}

const decodeEvent = Schema.decodeUnknown(WorkflowEvent)

const ServerError = Schema.Union(RunNotFound, InvalidRequest, Unauthorized, Forbidden, StoreUnavailable)

/** How a reader reconnects: quickly at first, then every 2 seconds, for up to a minute without progress. */
const defaultReconnect = Schedule.exponential("100 millis").pipe(
  Schedule.either(Schedule.spaced("2 seconds")),
  Schedule.upTo("1 minute")
)

/** Statuses worth trying again: the server (or a proxy before it) is busy, restarting or timed out. */
const transient = (status: number) => status >= 500 || status === 408 || status === 429

/** The largest SSE message the client reads (a chunk of a run's stream, as JSON). */
const maxEventSize = 64 * 1024 * 1024

interface Item {
  readonly index: number
  readonly data: unknown
}

/**
 * Makes a client of the server at `baseUrl`. `reconnect` says how a reader reconnects after a drop (default: at
 * once, then backing off to every 2 seconds, for up to a minute without progress); `idleTimeout` how long a reader
 * waits for a byte (the server pings every 15 seconds) before it takes the connection for dead (default 45 s).
 */
export const make = (
  baseUrl: string | URL,
  options?: {
    readonly reconnect?: Schedule.Schedule<unknown, unknown>
    readonly idleTimeout?: Duration.DurationInput
  }
): Effect.Effect<RunsClient, never, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const base = String(baseUrl).replace(/\/+$/, "")
    // A POST without a body (cancel) says JSON too: the server requires it of every POST.
    const http = (yield* HttpClient.HttpClient).pipe(HttpClient.mapRequest((request) =>
      request.method === "POST" && request.headers["content-type"] === undefined
        ? HttpClientRequest.setHeader(request, "content-type", "application/json")
        : request
    ))
    const api = yield* HttpApiClient.makeWith(Api, { httpClient: http, baseUrl: base })
    const reconnect = options?.reconnect ?? defaultReconnect
    const idleTimeout = options?.idleTimeout ?? "45 seconds"

    /** The error response of an SSE route: the API's error it encodes, or why it is worth trying again or not. */
    const failed = (
      url: string,
      response: HttpClientResponse.HttpClientResponse
    ): Effect.Effect<never, typeof ServerError.Type | RemoteStreamError> =>
      Effect.flatMap(
        Effect.either(Effect.flatMap(response.json, Schema.decodeUnknown(ServerError))),
        (decoded): Effect.Effect<never, typeof ServerError.Type | RemoteStreamError> =>
          decoded._tag === "Right" && !transient(response.status)
            ? Effect.fail(decoded.right)
            : Effect.fail(
              new RemoteStreamError({
                url,
                reason: transient(response.status)
                  ? `the server answered ${response.status}`
                  : `the server answered ${response.status} with a body that is not a stepwise error (is ${base} a stepwise server?)`,
                dropped: transient(response.status)
              })
            )
      )

    /**
     * Follows an SSE route: items with their index, reconnecting after a drop with `Last-Event-ID` = the last index
     * delivered, so that nothing is missed or repeated.
     */
    const follow = (path: string, startIndex: number | undefined): Stream.Stream<Item, ClientError> =>
      Stream.suspend(() => {
        const url = `${base}${path}`
        /** The index of the next item wanted, once the server has said where the stream starts. */
        let next: number | undefined
        let ended = false
        const connect: Stream.Stream<Item, ClientError> = Stream.unwrapScoped(Effect.gen(function*() {
          let request = HttpClientRequest.get(url).pipe(HttpClientRequest.setHeader("accept", "text/event-stream"))
          if (next !== undefined && next > 0) {
            request = HttpClientRequest.setHeader(request, "last-event-id", String(next - 1))
          } else if (next !== undefined || startIndex !== undefined) {
            request = HttpClientRequest.setUrlParam(request, "startIndex", String(next ?? startIndex))
          }
          const response = yield* Effect.mapError(
            http.execute(request),
            (e) => new RemoteStreamError({ url, reason: e.message, dropped: true })
          )
          // 204: resumed after the end, nothing more to read.
          if (response.status === 204) {
            ended = true
            return Stream.empty
          }
          if (response.status !== 200) return yield* failed(url, response)
          const start = Number(response.headers["x-stepwise-start-index"])
          if (Number.isInteger(start)) next = start
          const events: Array<Sse.Event> = []
          const parser = Sse.makeParser((event) => {
            if (event._tag === "Event") events.push(event)
          }, { maxEventSize })
          return response.stream.pipe(
            Stream.mapError((e) => new RemoteStreamError({ url, reason: e.message, dropped: true })),
            // A half-open connection (a NAT that forgot it) sends nothing, not even the server's pings.
            Stream.timeoutFail(
              () => new RemoteStreamError({ url, reason: `no byte for ${Duration.format(idleTimeout)}`, dropped: true }),
              idleTimeout
            ),
            Stream.decodeText(),
            Stream.mapConcatEffect((text) => {
              const error = parser.feed(text)
              return error === undefined
                ? Effect.succeed(events.splice(0, events.length))
                : Effect.fail(new RemoteStreamError({ url, reason: error.message, dropped: false }))
            }),
            Stream.takeWhile((event) => {
              if (event.event === "end") ended = true
              return !ended
            }),
            Stream.mapEffect((event): Effect.Effect<Item, RemoteStreamError> => {
              if (event.event === "stepwise-error") {
                const reason = Effect.runSync(Effect.orElseSucceed(
                  Schema.decodeUnknown(Schema.parseJson(Schema.Struct({ message: Schema.String })))(event.data),
                  () => ({ message: event.data })
                )).message
                return Effect.fail(new RemoteStreamError({ url, reason, dropped: false }))
              }
              const index = Number(event.id)
              return Effect.try({
                try: () => ({ index, data: JSON.parse(event.data) as unknown }),
                catch: () => new RemoteStreamError({ url, reason: `a message is not JSON: ${event.data}`, dropped: false })
              })
            }),
            Stream.tap((item) => Effect.sync(() => (next = item.index + 1)))
          )
        }))
        return connect.pipe(
          Stream.concat(Stream.suspend(() =>
            ended
              ? Stream.empty
              : Stream.fail(new RemoteStreamError({ url, reason: "the connection closed before the end", dropped: true }))
          )),
          Stream.retry(Schedule.whileInput(reconnect, (e: ClientError) => e._tag === "RemoteStreamError" && e.dropped))
        )
      })

    const remoteRun = <O>(runId: string, decodeOutput: (output: unknown) => Effect.Effect<O, ParseResult.ParseError>) => {
      const path = `/runs/${encodeURIComponent(runId)}`
      const info = api.runs.get({ path: { runId } })
      const events = (options?: { readonly startIndex?: number }) =>
        Stream.mapEffect(follow(`${path}/events`, options?.startIndex), (item) => decodeEvent(item.data))
      const settled = (info: RunInfo): Effect.Effect<
        O,
        ParseResult.ParseError | StepFailedError<unknown> | RunCanceledError | RunSuspendedError
      > | undefined => {
        switch (info.status) {
          case "success":
            return decodeOutput(info.output)
          case "failed":
            return Effect.fail(
              new StepFailedError({ runId, stepId: info.failedStep ?? info.workflowId, cause: Cause.fail(info.error) })
            )
          case "canceled":
            return Effect.fail(new RunCanceledError({ runId }))
          case "suspended":
            return Effect.fail(new RunSuspendedError({ runId, suspended: info.suspended }))
          default:
            return undefined
        }
      }
      /**
       * Reads the run, and again at each finish or suspension event and every second while it goes on: a run's
       * status changes just after its event is appended, and a run whose last running branch ends becomes suspended
       * without an event of its own, so events alone cannot say when it settled.
       */
      const awaitResult: Effect.Effect<
        O,
        ClientError | StepFailedError<unknown> | RunCanceledError | RunSuspendedError
      > = Effect.flatMap(info, (current) => {
        const outcome = settled(current)
        if (outcome !== undefined) return outcome
        return follow(`${path}/events`, -1).pipe(
          Stream.filter((item) => {
            const type = (item.data as WorkflowEvent).type
            return type === "workflow-finish" || type === "workflow-step-suspended"
          }),
          Stream.merge(Stream.tick("1 second")),
          Stream.mapEffect(() => Effect.map(info, settled)),
          Stream.filter((outcome) => outcome !== undefined),
          Stream.runHead,
          // The events ended (the run finished) before its status said so: read it once more.
          Effect.flatMap((outcome) => outcome._tag === "Some" ? outcome.value! : awaitResult)
        )
      })
      const run: RemoteRun<O> = {
        runId,
        info,
        status: Effect.map(info, (current) => current.status),
        result: awaitResult,
        events,
        readable: <A>(options?: { readonly namespace?: string; readonly startIndex?: number }) =>
          Stream.map(
            follow(
              options?.namespace === undefined || options.namespace === ""
                ? `${path}/streams`
                : `${path}/streams/${encodeURIComponent(options.namespace)}`,
              options?.startIndex
            ),
            (item) => item.data as A
          ),
        cancel: api.runs.cancel({ path: { runId } }),
        resume: ({ resumeData, step }) => api.runs.resume({ path: { runId }, payload: { step, resumeData } })
      }
      return run
    }

    const identity = (output: unknown) => Effect.succeed(output)
    const outputOf = (workflow: Workflow.Any | undefined) =>
      workflow === undefined
        ? identity
        : Schema.decodeUnknown(workflow.outputSchema as Schema.Schema<unknown, unknown>)

    const start = (
      workflow: string | Workflow.Any,
      input: unknown,
      options?: { readonly runId?: string }
    ): Effect.Effect<RemoteRun<unknown>, ClientError> =>
      Effect.gen(function*() {
        const payload = typeof workflow === "string"
          ? input
          : yield* Schema.encodeUnknown(workflow.inputSchema as Schema.Schema<unknown, unknown>)(input)
        const workflowId = typeof workflow === "string" ? workflow : workflow.id
        const { runId } = yield* api.runs.start({
          path: { workflowId },
          urlParams: options?.runId === undefined ? {} : { runId: options.runId },
          payload
        })
        return remoteRun(runId, outputOf(typeof workflow === "string" ? undefined : workflow))
      })

    const getRun = (runId: string, workflow?: Workflow.Any): Effect.Effect<RemoteRun<unknown>, ClientError> =>
      Effect.as(api.runs.get({ path: { runId } }), remoteRun(runId, outputOf(workflow)))

    return { start, getRun } as RunsClient
  })
