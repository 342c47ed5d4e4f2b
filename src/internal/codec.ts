/**
 * Schema encoding and decoding on the per-step path. Most schemas are synchronous: they run without Effect (a
 * parser per schema, built once). A value that fails, or a schema with asynchronous parts, goes through Effect's
 * parser, which gives the same answer and the same error as before.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

type Any = Schema.Schema.AnyNoContext
type Sync = (value: unknown) => Either.Either<unknown, ParseResult.ParseError>

const encoders = new WeakMap<Any, Sync>()
const decoders = new WeakMap<Any, Sync>()

const fast = (
  cache: WeakMap<Any, Sync>,
  make: (schema: Any) => Sync,
  slow: (schema: Any) => (value: unknown) => Effect.Effect<unknown, ParseResult.ParseError>
) =>
(schema: Any, value: unknown): Effect.Effect<unknown, ParseResult.ParseError> => {
  let sync = cache.get(schema)
  if (sync === undefined) {
    sync = make(schema)
    cache.set(schema, sync)
  }
  const result = sync(value)
  return Either.isRight(result) ? Effect.succeed(result.right) : slow(schema)(value)
}

/** `Schema.encodeUnknown(schema)(value)`, without Effect when it can. */
export const encode: (schema: Any, value: unknown) => Effect.Effect<unknown, ParseResult.ParseError> = fast(
  encoders,
  (schema) => Schema.encodeUnknownEither(schema),
  (schema) => Schema.encodeUnknown(schema)
)

/** `Schema.decodeUnknown(schema)(value)`, without Effect when it can. */
export const decode: (schema: Any, value: unknown) => Effect.Effect<unknown, ParseResult.ParseError> = fast(
  decoders,
  (schema) => Schema.decodeUnknownEither(schema),
  (schema) => Schema.decodeUnknown(schema)
)
