/**
 * How the engines ride out an outage of their store or their broker: exponential backoff from 20 ms, at most 5 s
 * apart, for up to 2 minutes.
 */
import * as Schedule from "effect/Schedule"

export const outage = Schedule.exponential("20 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds")),
  Schedule.upTo("2 minutes")
)
