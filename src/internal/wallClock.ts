/**
 * Real time, for what watches other processes (leases, polling the store): a test clock must not fake it, and a
 * jump of the app's clock must not fire it thousands of times.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

export const wallClock: Clock.Clock = Clock.make()

export const wallNow = (): number => wallClock.unsafeCurrentTimeMillis()

export const wallSleep = (duration: Duration.DurationInput): Effect.Effect<void> =>
  Effect.withClock(Effect.sleep(duration), wallClock)
