/**
 * Runs over HTTP: an `HttpApi` (from `@effect/platform`) that starts, reads, cancels and resumes the runs of the
 * workflows you serve, streams their events and streams as Server-Sent Events that a browser's `EventSource` resumes
 * by itself (`Last-Event-ID`), serves them as AI SDK UI message streams, and a typed client derived from the same API.
 *
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Layer } from "effect"
 * import * as Http from "stepwise/http"
 * import * as Sqlite from "stepwise/sqlite"
 *
 * Http.layerServer({ port: 3000, workflows: [chat] }).pipe(
 *   Layer.provide(Sqlite.layerEngine),
 *   Layer.launch,
 *   NodeRuntime.runMain
 * )
 * ```
 *
 * | route | what it does |
 * |---|---|
 * | `POST /workflows/{workflowId}/runs` | starts a run; the body is its input (JSON); 201 `{ runId }` |
 * | `GET /runs/{runId}` | the run: status, input, output or error, suspended steps |
 * | `GET /runs/{runId}/events` | its events, as SSE |
 * | `GET /runs/{runId}/streams`, `GET /runs/{runId}/streams/{namespace}` | its default or a named stream, as SSE |
 * | `GET /runs/{runId}/ui` | its events as an AI SDK UI message stream (SSE) |
 * | `POST /runs/{runId}/cancel` | cancels it (202) |
 * | `POST /runs/{runId}/resume` | resumes a suspended step: `{ step, resumeData }` (202) |
 * | `GET /openapi.json` | the API's OpenAPI document |
 *
 * Each SSE message carries `id: <index>` (the event's or chunk's index in the run); a reader resumes with the
 * `Last-Event-ID` header (what `EventSource` sends when it reconnects) or `?startIndex=` (negative: the last N).
 * A stream ends with `event: end` when the run has ended (or the stream was closed); `: ping` comments keep idle
 * connections open through proxies.
 *
 * @since 0.1.0
 */
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import type * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import type * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Layer from "effect/Layer"
import { createServer } from "node:http"
import { Api, type Options } from "./internal/http/api.js"
import * as Client from "./internal/http/client.js"
import * as Server from "./internal/http/server.js"
import type * as RunStore from "./RunStore.js"
import type * as Step from "./Step.js"
import type * as Workflow from "./Workflow.js"
import type * as WorkflowEngine from "./WorkflowEngine.js"

export {
  /**
   * @since 0.1.0
   * @category models
   */
  type Action,
  /**
   * @since 0.1.0
   * @category api
   */
  Api,
  /**
   * @since 0.1.0
   * @category tags
   */
  Authorization,
  /**
   * @since 0.1.0
   * @category errors
   */
  Forbidden,
  /**
   * @since 0.1.0
   * @category errors
   */
  InvalidRequest,
  /**
   * @since 0.1.0
   * @category layers
   */
  layerAuthorization,
  /**
   * @since 0.1.0
   * @category models
   */
  type Options,
  /**
   * @since 0.1.0
   * @category errors
   */
  PayloadTooLarge,
  /**
   * @since 0.1.0
   * @category schemas
   */
  ResumeRequest,
  /**
   * @since 0.1.0
   * @category errors
   */
  RunConflict,
  /**
   * @since 0.1.0
   * @category schemas
   */
  RunInfo,
  /**
   * @since 0.1.0
   * @category errors
   */
  RunNotFound,
  /**
   * @since 0.1.0
   * @category errors
   */
  StoreUnavailable,
  /**
   * @since 0.1.0
   * @category errors
   */
  UnsupportedMediaType,
  /**
   * @since 0.1.0
   * @category api
   */
  RunsGroup,
  /**
   * @since 0.1.0
   * @category errors
   */
  Unauthorized,
  /**
   * @since 0.1.0
   * @category errors
   */
  WorkflowNotFound
} from "./internal/http/api.js"

/**
 * Implements the `runs` group, for apps that serve it as part of their own `HttpApi`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerGroup = <const W extends ReadonlyArray<Workflow.Any>>(
  options: Options<W>
): Layer.Layer<
  HttpApiGroup.ApiGroup<"stepwise", "runs">,
  never,
  WorkflowEngine.WorkflowEngine | RunStore.RunStore | Step.Context<W[number]>
> =>
  Server.layerGroup(options) as Layer.Layer<
    HttpApiGroup.ApiGroup<"stepwise", "runs">,
    never,
    WorkflowEngine.WorkflowEngine | RunStore.RunStore | Step.Context<W[number]>
  >

const corsOptions = (cors: NonNullable<Options<ReadonlyArray<Workflow.Any>>["cors"]>) => {
  const given = cors === true ? {} : cors
  return {
    ...given,
    allowedHeaders: [...new Set(["content-type", "authorization", "last-event-id", ...(given.allowedHeaders ?? [])])],
    exposedHeaders: [...new Set(["x-stepwise-start-index", ...(given.exposedHeaders ?? [])])]
  }
}

/**
 * Serves the API on the app's `HttpServer` (for example `NodeHttpServer.layer(createServer, { port })`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <const W extends ReadonlyArray<Workflow.Any>>(
  options: Options<W>
): Layer.Layer<
  never,
  never,
  | HttpServer.HttpServer
  | HttpRouter.HttpRouter.DefaultServices
  | WorkflowEngine.WorkflowEngine
  | RunStore.RunStore
  | Step.Context<W[number]>
> =>
  HttpApiBuilder.serve().pipe(
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
    Layer.provide(options.cors === undefined ? Layer.empty : HttpApiBuilder.middlewareCors(corsOptions(options.cors))),
    Layer.provide(HttpApiBuilder.api(Api)),
    Layer.provide(layerGroup(options))
  )

/**
 * A stand-alone Node server for the API on `port` (0: any free port; `HttpServer.HttpServer`'s `address` says which),
 * on `host` (default all interfaces). Also provides the `HttpServer`, so tests and apps can read its address. When
 * the layer ends, open SSE responses end (without `event: end`, so their readers reconnect, to another server) and
 * the server closes.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerServer = <const W extends ReadonlyArray<Workflow.Any>>(
  options: Options<W> & { readonly port: number; readonly host?: string }
): Layer.Layer<
  HttpServer.HttpServer,
  never,
  WorkflowEngine.WorkflowEngine | RunStore.RunStore | Step.Context<W[number]>
> =>
  layer(options).pipe(
    HttpServer.withLogAddress,
    Layer.provideMerge(
      Layer.orDie(NodeHttpServer.layer(createServer, {
        port: options.port,
        ...(options.host === undefined ? {} : { host: options.host })
      }))
    )
  ) as Layer.Layer<
    HttpServer.HttpServer,
    never,
    WorkflowEngine.WorkflowEngine | RunStore.RunStore | Step.Context<W[number]>
  >

/**
 * A remote run, as `Http.client` sees it: the members of a `Run` that make sense over the network.
 *
 * @since 0.1.0
 * @category models
 */
export type RemoteRun<O> = Client.RemoteRun<O>

/**
 * The client of a stepwise server.
 *
 * @since 0.1.0
 * @category models
 */
export type RunsClient = Client.RunsClient

/**
 * Why a remote call failed: an error the server answered (`RunNotFound`, `InvalidRequest` ...), the transport
 * (`HttpClientError`), a response that does not decode, or a `RemoteStreamError`.
 *
 * @since 0.1.0
 * @category models
 */
export type ClientError = Client.ClientError

/**
 * A remote reader's stream broke for good: the server reported an error while streaming, a message could not be
 * read, or reconnecting failed for longer than the client's `reconnect` schedule allows.
 *
 * @since 0.1.0
 * @category errors
 */
export const RemoteStreamError = Client.RemoteStreamError

/**
 * @since 0.1.0
 * @category errors
 */
export type RemoteStreamError = Client.RemoteStreamError

/**
 * A client of the server at `baseUrl`, derived from the same `HttpApi`: `start` a run (by workflow, whose schemas
 * then encode the input and decode the output, or by id) and follow it, or `getRun` any run. A remote run's `events`
 * and `readable` are Effect `Stream`s that reconnect by themselves after a dropped connection, resuming after the
 * last item they delivered (`Last-Event-ID`): no gap, no duplicate. Requires an `HttpClient`
 * (`FetchHttpClient.layer` or `NodeHttpClient.layerUndici`).
 *
 * ```ts
 * const client = yield* Http.client("http://localhost:3000")
 * const run = yield* client.start(chat, [{ role: "user", content: "hi" }])
 * yield* Stream.runForEach(run.readable<UIMessageChunk>(), Console.log)
 * const messages = yield* run.result
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const client = Client.make
