import { Context, Effect, Layer } from "effect"
import { EventBus, RunStore, WorkflowEngine } from "stepwise"
import type { WorkflowEvent } from "stepwise"

/** One `publish` call seen by the recording bus. */
export interface Published {
  readonly channel: string
  readonly event: EventBus.BusEvent
}

/** What the recording bus saw, in publish order. */
export class Recorded extends Context.Tag("test/Recorded")<Recorded, Array<Published>>() {}

/**
 * A user-written EventBus layer, the way an app would write one for its tests: it delegates to the memory bus and
 * records every publish.
 */
export const recordingBus: Layer.Layer<EventBus.EventBus | EventBus.MemoryChannels | Recorded> = Layer.effectContext(
  Effect.gen(function*() {
    const { bus, channels } = yield* EventBus.makeMemory
    const published: Array<Published> = []
    const recording = EventBus.EventBus.of({
      publish: (channel, event) =>
        Effect.zipRight(Effect.sync(() => published.push({ channel, event })), bus.publish(channel, event)),
      subscribe: bus.subscribe
    })
    return Context.make(EventBus.EventBus, recording).pipe(
      Context.add(EventBus.MemoryChannels, channels),
      Context.add(Recorded, published)
    )
  })
)

/** The default engine over the recording bus and a memory store. */
export const recordingEngine = WorkflowEngine.layerDefault.pipe(
  Layer.provideMerge(Layer.merge(recordingBus, RunStore.layerMemory))
)

/** The evented engine over the recording bus and a memory store. */
export const recordingEventedEngine = WorkflowEngine.layerEvented.pipe(
  Layer.provideMerge(Layer.merge(recordingBus, RunStore.layerMemory))
)

/**
 * Replaces what differs between two executions of the same workflow (ids, times) by stable placeholders, so
 * event sequences can be compared with `toEqual`.
 */
export const normalize = (events: ReadonlyArray<WorkflowEvent.WorkflowEvent>): Array<unknown> => {
  const ids = new Map<string, string>()
  const id = (value: string) => {
    let named = ids.get(value)
    if (named === undefined) {
      named = `id${ids.size}`
      ids.set(value, named)
    }
    return named
  }
  const visit = (value: unknown, key?: string): unknown => {
    if (Array.isArray(value)) return value.map((v) => visit(v))
    if (typeof value === "object" && value !== null) {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, visit(v, k)]))
    }
    if (typeof value === "string" && (key === "runId" || key === "stepCallId" || key === "callId")) return id(value)
    if (typeof value === "number" && (key === "startedAt" || key === "endedAt" || key === "until")) return "<time>"
    return value
  }
  return events.map((e) => visit(e))
}
