/**
 * Readers of a run: its event log and its streams, as Effect Streams. History comes from the store; the bus only
 * wakes the reader up. The reader always reads by index from the store, and once it has caught up it subscribes and
 * reads again before it waits, so whenever it starts it sees every item exactly once, in order, with no gap and no
 * duplicate.
 */
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as EventBus from "../../EventBus.js"
import * as RunStore from "../../RunStore.js"
import { RunStreamError } from "../../WorkflowError.js"
import type { WorkflowEvent } from "../../WorkflowEvent.js"
import { wallSleep } from "../wallClock.js"

const pageSize = 4096
const minPollMillis = 100
const maxPollMillis = 1000

interface Page<A> {
  readonly items: ReadonlyArray<A>
  readonly size: number
  /** Nothing more will ever come after these items. */
  readonly ended: boolean
}

const resolveStart = (runId: string, startIndex: number | undefined, size: Effect.Effect<number, RunStreamError>) =>
  Effect.suspend(() => {
    if (startIndex === undefined || startIndex === 0) return Effect.succeed(0)
    if (!Number.isInteger(startIndex)) {
      return Effect.fail(
        new RunStreamError({ runId, reason: `startIndex must be a whole number (negative: the last N), got ${startIndex}` })
      )
    }
    return startIndex > 0 ? Effect.succeed(startIndex) : Effect.map(size, (n) => Math.max(0, n + startIndex))
  })

const follow = <A>(
  bus: EventBus.EventBus["Type"],
  runId: string,
  channel: string,
  startIndex: number | undefined,
  read: (from: number) => Effect.Effect<Page<A>, RunStreamError>
): Stream.Stream<A, RunStreamError> =>
  Stream.unwrapScoped(Effect.gen(function*() {
    const scope = yield* Effect.scope
    /**
     * Listens, and answers how to wait for the next wake-up (and what to tell it after each read). The bus wakes
     * readers: in this process always, and in others too when it is a broker (Redis, Postgres). A run executed by
     * another process over a bus that does not reach this one (each process its own memory bus, one SQL store) is
     * followed by polling, one wall-clock ticker per reader (a timer per wait would cost every wake-up a race). The
     * poll starts every 100 ms and backs off to once a second while its reads find nothing the bus had not announced,
     * so readers of idle runs, and every reader over a broker, cost the store little; a poll that finds something
     * new brings it back to 100 ms. At most one wake-up is pending: whatever arrived meanwhile, the reader reads the
     * store once. On the memory bus the wake-up is offered inside the writer's publish, so the reader is one fiber
     * hop from the write (a subscription consumed in a fiber of its own put a second hop, and a Stream pull, in
     * between: a third of a chunk's write-to-read latency).
     */
    const listen = Effect.gen(function*() {
      // At most one wake-up pending, and at most one waiter (the reader): a resume callback, not a queue.
      let pending = false
      let waiter: ((wake: Effect.Effect<void>) => void) | undefined
      const wakeUp = () => {
        if (waiter === undefined) {
          pending = true
          return
        }
        const resume = waiter
        waiter = undefined
        resume(Effect.void)
      }
      // Whether the bus announced something since the reader last woke: then a read that finds items owes nothing
      // to the poll.
      let announced = false
      let pollMillis = minPollMillis
      let busFailure: RunStreamError | undefined
      yield* EventBus.listen(bus, channel, {
        events: () => {
          announced = true
          wakeUp()
        },
        failure: (error) => {
          busFailure = storeOrBus(runId)(error)
          wakeUp()
        }
      }).pipe(Effect.mapError(storeOrBus(runId)))
      yield* Effect.forever(
        Effect.zipRight(Effect.suspend(() => wallSleep(Duration.millis(pollMillis))), Effect.sync(wakeUp))
      ).pipe(Effect.forkScoped)
      const woken = Effect.suspend(() => busFailure === undefined ? Effect.void : Effect.fail(busFailure))
      const sleep = Effect.async<void>((resume) => {
        waiter = resume
        return Effect.sync(() => {
          waiter = undefined
        })
      })
      const wait = Effect.suspend(() => {
        if (!pending) return Effect.zipRight(sleep, woken)
        pending = false
        return woken
      })
      /** After a read that followed a wake-up: did it find items? */
      const read = (found: boolean) => {
        if (found && !announced) pollMillis = minPollMillis
        else if (!found) pollMillis = Math.min(maxPollMillis, pollMillis * 2)
        announced = false
      }
      return { wait, read }
    }).pipe(Scope.extend(scope))
    let cursor = yield* resolveStart(runId, startIndex, Effect.map(read(0), (p) => p.size))
    let ended = false
    let next: Effect.Effect.Success<typeof listen> | undefined
    // The last read brought the reader to the end of what the store held: the next item needs a wake-up first
    // (pending already, if it came meanwhile), so a listening reader waits for one instead of reading at once and
    // finding nothing (with 100 readers of one run, that second read and its run check were half their cost).
    let caughtUp = false
    const pull: Effect.Effect<Chunk.Chunk<A>, Option.Option<RunStreamError>> = Effect.gen(function*() {
      while (!ended) {
        if (caughtUp && next !== undefined) yield* next.wait
        caughtUp = false
        const page = yield* read(cursor)
        cursor += page.items.length
        ended = page.ended
        next?.read(page.items.length > 0)
        if (page.items.length > 0) {
          caughtUp = !ended && cursor >= page.size
          return Chunk.unsafeFromArray(page.items as Array<A>)
        }
        if (ended) break
        if (next === undefined) {
          // Caught up with a run that goes on: listen only now (a reader of a finished run never does), then read
          // again, since whatever was appended before the listening sent no wake-up to this reader.
          next = yield* listen
          continue
        }
        yield* next.wait
      }
      return yield* Effect.fail(Option.none())
    }).pipe(Effect.mapError((e) => Option.isOption(e) ? e : Option.some(e)))
    return Stream.repeatEffectChunkOption(pull)
  }))

/** A run the store no longer has (handles exist only for runs it had): the memory store's retention dropped it. */
const notInStore = (runId: string): RunStreamError =>
  new RunStreamError({
    runId,
    reason: "the run is not in the run store any more (the memory store drops finished runs past its retention bound)"
  })

/** Wraps a store or bus failure met while reading a run. */
export const streamError = (runId: string, error: { readonly message: string }): RunStreamError =>
  new RunStreamError({ runId, reason: error.message })

const storeOrBus = (runId: string) => (error: { readonly message: string }) => streamError(runId, error)

/** The run's event log, from `startIndex`, ending after `workflow-finish`. */
export const events = (
  store: RunStore.RunStore["Type"],
  bus: EventBus.EventBus["Type"],
  runId: string,
  startIndex?: number
): Stream.Stream<WorkflowEvent, RunStreamError> =>
  Stream.suspend(() => {
    const isFinish = (e: WorkflowEvent) => e.type === "workflow-finish" && e.from === "WORKFLOW"
    let first = true
    return follow(bus, runId, EventBus.runChannel(runId), startIndex, (from) =>
      Effect.flatMap(Effect.mapError(store.readEvents(runId, from, pageSize), storeOrBus(runId)), (page) => {
        const firstRead = first
        first = false
        // A run's log is empty only between its creation and its `workflow-start`, or once the run is gone.
        if (page.size === 0) {
          return Effect.flatMap(Effect.mapError(store.getRun(runId), storeOrBus(runId)), (run) =>
            run === undefined ? Effect.fail(notInStore(runId)) : Effect.succeed({ items: [], size: 0, ended: false }))
        }
        // A reader that starts right after `workflow-finish` (resuming after the last event) has nothing to wait for.
        if (firstRead && page.events.length === 0 && from > 0 && from === page.size) {
          return Effect.map(
            Effect.mapError(store.readEvents(runId, from - 1, 1), storeOrBus(runId)),
            (previous) => ({ items: [], size: page.size, ended: previous.events.some(isFinish) })
          )
        }
        const finish = page.events.findIndex(isFinish)
        return Effect.succeed(
          finish === -1
            ? { items: page.events, size: page.size, ended: false }
            : { items: page.events.slice(0, finish + 1), size: page.size, ended: true }
        )
      }))
  })

/** One of the run's streams, from `startIndex`, ending when it is closed or the run has ended. */
export const chunks = <A>(
  store: RunStore.RunStore["Type"],
  bus: EventBus.EventBus["Type"],
  runId: string,
  namespace: string,
  startIndex?: number
): Stream.Stream<A, RunStreamError> => {
  const readPage = (from: number) =>
    Effect.mapError(store.readChunks(runId, namespace, from, pageSize), storeOrBus(runId))
  return follow(bus, runId, EventBus.streamChannel(runId), startIndex, (from) =>
    Effect.gen(function*() {
      const page = yield* readPage(from)
      if (page.chunks.length > 0 || page.closed) {
        return { items: page.chunks as ReadonlyArray<A>, size: page.size, ended: page.closed && page.chunks.length === 0 }
      }
      const run = yield* Effect.mapError(store.getRun(runId), storeOrBus(runId))
      if (run === undefined) return yield* Effect.fail(notInStore(runId))
      if (!RunStore.isTerminal(run.status)) return { items: [], size: page.size, ended: false }
      // The run has ended: everything it wrote is in the store now, so one more read drains the stream.
      const last = yield* readPage(from)
      return { items: last.chunks as ReadonlyArray<A>, size: last.size, ended: last.chunks.length === 0 }
    }))
}
