/**
 * Schema encoding and decoding on the per-step path. Most schemas are synchronous: they run without Effect (a
 * parser per schema, built once). A value that fails, or a schema with asynchronous parts, goes through Effect's
 * parser, which gives the same answer and the same error as before.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import type * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

type Any = Schema.Schema.AnyNoContext
type Sync = (value: unknown) => Either.Either<unknown, ParseResult.ParseError>

const encoders = new WeakMap<Any, Sync>()
const decoders = new WeakMap<Any, Sync>()

const parser = (cache: WeakMap<Any, Sync>, make: (schema: Any) => Sync) => (schema: Any): Sync => {
  let sync = cache.get(schema)
  if (sync === undefined) {
    sync = make(schema)
    cache.set(schema, sync)
  }
  return sync
}

const syncEncoder = parser(encoders, (schema) => Schema.encodeUnknownEither(schema))
const syncDecoder = parser(decoders, (schema) => Schema.decodeUnknownEither(schema))

const fast = (
  sync: (schema: Any) => Sync,
  slow: (schema: Any) => (value: unknown) => Effect.Effect<unknown, ParseResult.ParseError>
) =>
(schema: Any, value: unknown): Effect.Effect<unknown, ParseResult.ParseError> => {
  const result = sync(schema)(value)
  return Either.isRight(result) ? Effect.succeed(result.right) : slow(schema)(value)
}

/**
 * The encoded value, when the synchronous parser accepts it; `undefined` when it does not (or cannot: the schema has
 * asynchronous parts), and the caller goes through `encode` for the answer and the error.
 */
export const encodeNow = (schema: Any, value: unknown): Exit.Exit<unknown> | undefined => {
  const result = syncEncoder(schema)(value)
  return Either.isRight(result) ? Exit.succeed(result.right) : undefined
}

/** `Schema.encodeUnknown(schema)(value)`, without Effect when it can. */
export const encode: (schema: Any, value: unknown) => Effect.Effect<unknown, ParseResult.ParseError> = fast(
  syncEncoder,
  (schema) => Schema.encodeUnknown(schema)
)

/** `Schema.decodeUnknown(schema)(value)`, without Effect when it can. */
export const decode: (schema: Any, value: unknown) => Effect.Effect<unknown, ParseResult.ParseError> = fast(
  syncDecoder,
  (schema) => Schema.decodeUnknown(schema)
)

/**
 * Why a value cannot be stored as JSON (a BigInt, a cycle), or `undefined` when it can. Stores write step outputs and
 * run inputs as JSON text; checked where they are produced, a value that cannot be stored fails its step (or its
 * `start`) with this reason, on every store alike, instead of failing the store's write.
 */
export const unstorable = (value: unknown): string | undefined => {
  const seen = new Set<object>()
  const visit = (v: unknown, at: string): string | undefined => {
    if (typeof v === "bigint") return `${at} is a BigInt (${v}n), which JSON cannot hold: encode it, e.g. with Schema.BigInt`
    if (typeof v !== "object" || v === null || ArrayBuffer.isView(v)) return undefined
    if (seen.has(v)) return `${at} refers back to itself (a circular structure), which JSON cannot hold`
    seen.add(v)
    if (typeof (v as { toJSON?: unknown }).toJSON !== "function") {
      for (const [key, item] of Array.isArray(v) ? v.entries() : Object.entries(v)) {
        const reason = visit(item, `${at}${Array.isArray(v) ? `[${key}]` : `.${String(key)}`}`)
        if (reason !== undefined) return reason
      }
    }
    seen.delete(v)
    return undefined
  }
  return visit(value, "the value")
}
