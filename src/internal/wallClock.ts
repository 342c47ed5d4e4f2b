/**
 * Real time, for what watches other processes (leases, polling the store): a test clock must not fake it, and a
 * jump of the app's clock must not fire it thousands of times.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"

export const wallClock: Clock.Clock = Clock.make()

export const wallNow = (): number => wallClock.unsafeCurrentTimeMillis()

export const wallSleep = (duration: Duration.DurationInput): Effect.Effect<void> =>
  Effect.withClock(Effect.sleep(duration), wallClock)

/** Waits for `effect` at most `duration` of real time. Only the timer uses the wall clock; `effect` keeps the app's. */
export const wallTimeout = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  duration: Duration.DurationInput
): Effect.Effect<Option.Option<A>, E, R> =>
  Effect.raceFirst(Effect.asSome(effect), Effect.as(wallSleep(duration), Option.none<A>()))
