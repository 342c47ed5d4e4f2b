/**
 * The HTTP API of runs (`stepwise/http`): its errors, schemas, routes and the authorization hook, shared by the
 * server's handlers and the client. `Http.ts` re-exports it.
 */
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import type * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import type * as Workflow from "../../Workflow.js"
import { SerializedError } from "../../WorkflowEvent.js"

/**
 * The workflow named in the path is not one this server serves.
 *
 * @since 0.1.0
 * @category errors
 */
export class WorkflowNotFound extends Schema.TaggedError<WorkflowNotFound>()("WorkflowNotFound", {
  workflowId: Schema.String,
  message: Schema.String
}, HttpApiSchema.annotations({ status: 404 })) {}

/**
 * No run with this id is in the store.
 *
 * @since 0.1.0
 * @category errors
 */
export class RunNotFound extends Schema.TaggedError<RunNotFound>()("RunNotFound", {
  runId: Schema.String,
  message: Schema.String
}, HttpApiSchema.annotations({ status: 404 })) {}

/**
 * The request is malformed: a body that is not JSON, an input or resume data its schema rejects, a `Last-Event-ID`
 * or `startIndex` that is not an index of the run. Nothing was changed.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidRequest extends Schema.TaggedError<InvalidRequest>()("InvalidRequest", {
  message: Schema.String
}, HttpApiSchema.annotations({ status: 400 })) {}

/**
 * The request's body is larger than the server's `maxBodySize`. Nothing was read past the limit, nothing changed.
 *
 * @since 0.1.0
 * @category errors
 */
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()("PayloadTooLarge", {
  limit: Schema.Number,
  message: Schema.String
}, HttpApiSchema.annotations({ status: 413 })) {}

/**
 * A request with a body (or a `POST`) that does not say `content-type: application/json`. Requiring it makes a
 * browser ask the server first (a CORS preflight), so a page of another site cannot start, cancel or resume runs with
 * its visitor's cookies.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnsupportedMediaType extends Schema.TaggedError<UnsupportedMediaType>()("UnsupportedMediaType", {
  message: Schema.String
}, HttpApiSchema.annotations({ status: 415 })) {}

/**
 * The run store failed (unreachable, or an error of its own): nothing was changed; try again.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreUnavailable extends Schema.TaggedError<StoreUnavailable>()("StoreUnavailable", {
  message: Schema.String
}, HttpApiSchema.annotations({ status: 503 })) {}

/**
 * The request does not fit the run's state: resuming a run that is not suspended (or that this server is still
 * executing), or starting with a `runId` that belongs to a run of another workflow.
 *
 * @since 0.1.0
 * @category errors
 */
export class RunConflict extends Schema.TaggedError<RunConflict>()("RunConflict", {
  runId: Schema.String,
  message: Schema.String
}, HttpApiSchema.annotations({ status: 409 })) {}

/**
 * The `Authorization` hook found no acceptable credentials on the request.
 *
 * @since 0.1.0
 * @category errors
 */
export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", {
  message: Schema.String
}, HttpApiSchema.annotations({ status: 401 })) {}

/**
 * The `Authorization` hook refused the request.
 *
 * @since 0.1.0
 * @category errors
 */
export class Forbidden extends Schema.TaggedError<Forbidden>()("Forbidden", {
  message: Schema.String
}, HttpApiSchema.annotations({ status: 403 })) {}

/**
 * A run as `GET /runs/{runId}` answers it. `input` and `output` are as stored: encoded with the workflow's schemas.
 *
 * @since 0.1.0
 * @category schemas
 */
export const RunInfo = Schema.Struct({
  runId: Schema.String,
  workflowId: Schema.String,
  status: Schema.Literal("pending", "running", "waiting", "suspended", "success", "failed", "canceled"),
  input: Schema.Unknown,
  output: Schema.optional(Schema.Unknown),
  error: Schema.optional(SerializedError),
  failedStep: Schema.optional(Schema.String),
  suspended: Schema.Array(Schema.Struct({ step: Schema.String, path: Schema.String, payload: Schema.Unknown })),
  createdAt: Schema.Number,
  updatedAt: Schema.Number
})

/**
 * A run as `GET /runs/{runId}` answers it.
 *
 * @since 0.1.0
 * @category models
 */
export type RunInfo = typeof RunInfo.Type

/**
 * The body of `POST /runs/{runId}/resume`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ResumeRequest = Schema.Struct({ step: Schema.String, resumeData: Schema.optional(Schema.Unknown) })

const RunPath = Schema.Struct({ runId: Schema.String })
const ReadQuery = Schema.Struct({ startIndex: Schema.optional(Schema.String) })
const ReadHeaders = Schema.Struct({ "last-event-id": Schema.optional(Schema.String) })
const EventStream = HttpApiSchema.Text({ contentType: "text/event-stream" })

const sse = <const Name extends string, const Path extends HttpApiEndpoint.PathSegment>(name: Name, path: Path) =>
  HttpApiEndpoint.get(name, path)
    .setUrlParams(ReadQuery)
    .setHeaders(ReadHeaders)
    .addSuccess(EventStream)
    .addError(InvalidRequest)

/**
 * The routes, as an `HttpApiGroup` named `runs`. To serve routes of your own beside them, extend `Http.Api` with your
 * groups (`class AppApi extends Http.Api.add(PageGroup) {}`), and serve it with `HttpApiBuilder.serve()`,
 * `HttpApiBuilder.api(AppApi)`, `Http.layerGroup(options)` and your groups' layers (see `examples/chat.ts`).
 *
 * @since 0.1.0
 * @category api
 */
export class RunsGroup extends HttpApiGroup.make("runs")
  .add(
    HttpApiEndpoint.post("start", "/workflows/:workflowId/runs")
      .setPath(Schema.Struct({ workflowId: Schema.String }))
      .setUrlParams(Schema.Struct({ runId: Schema.optional(Schema.String) }))
      .setPayload(Schema.Unknown)
      .addSuccess(Schema.Struct({ runId: Schema.String }), { status: 201 })
      .addError(WorkflowNotFound)
      .addError(InvalidRequest)
      .addError(PayloadTooLarge)
      .addError(UnsupportedMediaType)
      .addError(RunConflict)
  )
  .add(HttpApiEndpoint.get("get", "/runs/:runId").setPath(RunPath).addSuccess(RunInfo))
  .add(sse("events", "/runs/:runId/events").setPath(RunPath))
  .add(sse("stream", "/runs/:runId/streams").setPath(RunPath))
  .add(
    sse("namespacedStream", "/runs/:runId/streams/:namespace")
      .setPath(Schema.Struct({ runId: Schema.String, namespace: Schema.String }))
  )
  .add(sse("ui", "/runs/:runId/ui").setPath(RunPath))
  .add(
    HttpApiEndpoint.post("cancel", "/runs/:runId/cancel")
      .setPath(RunPath)
      .addSuccess(HttpApiSchema.Accepted)
      .addError(UnsupportedMediaType)
  )
  .add(
    HttpApiEndpoint.post("resume", "/runs/:runId/resume")
      .setPath(RunPath)
      .setPayload(ResumeRequest)
      .addSuccess(HttpApiSchema.Accepted)
      .addError(InvalidRequest)
      .addError(PayloadTooLarge)
      .addError(UnsupportedMediaType)
      .addError(RunConflict)
  )
  .addError(RunNotFound)
  .addError(StoreUnavailable)
  .addError(Unauthorized)
  .addError(Forbidden)
{}

/**
 * The whole API: the `runs` group.
 *
 * @since 0.1.0
 * @category api
 */
export class Api extends HttpApi.make("stepwise").add(RunsGroup) {}

/**
 * What a request asks to do, as the `Authorization` hook sees it.
 *
 * @since 0.1.0
 * @category models
 */
export type Action =
  | { readonly _tag: "start"; readonly workflowId: string }
  | { readonly _tag: "read"; readonly runId: string }
  | { readonly _tag: "cancel"; readonly runId: string }
  | { readonly _tag: "resume"; readonly runId: string }

/**
 * An optional hook the app provides: it sees every request (its headers, cookies, remote address) and what it asks
 * before any run is read, started or changed, and refuses it by failing with `Unauthorized` or `Forbidden`.
 * Without it, every request is allowed.
 *
 * @since 0.1.0
 * @category tags
 */
export class Authorization extends Context.Tag("stepwise/Http/Authorization")<Authorization, {
  readonly authorize: (
    request: HttpServerRequest.HttpServerRequest,
    action: Action
  ) => Effect.Effect<void, Unauthorized | Forbidden>
}>() {}

/**
 * Provides the `Authorization` hook.
 *
 * ```ts
 * Http.layerAuthorization((request) =>
 *   request.headers.authorization === `Bearer ${token}`
 *     ? Effect.void
 *     : Effect.fail(new Http.Unauthorized({ message: "send Authorization: Bearer <token>" })))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerAuthorization = (
  authorize: Authorization["Type"]["authorize"]
): Layer.Layer<Authorization> => Layer.succeed(Authorization, { authorize })

/**
 * Options of the HTTP layers: the workflows served (only these can be started; runs of any workflow in the store
 * can be read), `maxBodySize` (bytes; larger bodies get 413; default 1 MiB), `heartbeat` (how often an idle SSE
 * response sends a `: ping` comment; default 15 seconds), `retry` (the reconnection delay SSE responses ask
 * `EventSource` for; default 1 second) and `cors` (answer browsers of other origins: `true` for any origin, or
 * `HttpMiddleware.cors` options such as `allowedOrigins`; default off). With `cors`, the `Last-Event-ID` header is
 * allowed and `x-stepwise-start-index` exposed.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<W extends ReadonlyArray<Workflow.Any>> {
  readonly workflows: W
  readonly maxBodySize?: number
  readonly heartbeat?: Duration.DurationInput
  readonly retry?: Duration.DurationInput
  readonly cors?: true | NonNullable<Parameters<typeof HttpMiddleware.cors>[0]>
}
