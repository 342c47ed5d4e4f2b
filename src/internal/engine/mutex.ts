/**
 * A mutual-exclusion lock for the engine's hot paths: the evented engine's per-run lock (taken for every step's
 * end) and the group commit of writers' events (taken for every batch, and for every write of an idle writer).
 *
 * Effect's `Semaphore.withPermits(1)` runs 32 fiber operations when the lock is free; this lock about half as many.
 * Waiters get the lock in the order they came, and a waiter can be interrupted while it waits.
 */
import * as Effect from "effect/Effect"

export interface Mutex {
  /**
   * Runs `effect` holding the lock: after every earlier holder and waiter is done with it. `onRelease` is called as
   * the call is over: as the lock is let go, however `effect` ended, or as the wait for the lock is interrupted.
   */
  readonly withLock: <A, E, R>(effect: Effect.Effect<A, E, R>, onRelease?: () => void) => Effect.Effect<A, E, R>
  /** Someone holds the lock. */
  readonly held: () => boolean
}

export const make = (): Mutex => {
  let held = false
  const waiters: Array<() => void> = []

  // Hands the lock to the next waiter (it stays held), or frees it.
  const releaseNow = () => {
    const next = waiters.shift()
    if (next === undefined) held = false
    else next()
  }

  const wait = (
    restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>,
    onRelease: (() => void) | undefined
  ) =>
    Effect.suspend(() => {
      let granted = false
      let waiter: (() => void) | undefined
      return restore(Effect.async<void>((resume) => {
        // Checked again here, where nothing can come between the check and joining the line: the fiber may have
        // yielded since `withLock` found the lock held, and the holder released it meanwhile, to nobody.
        if (!held) {
          held = true
          granted = true
          return resume(Effect.void)
        }
        waiter = () => {
          granted = true
          resume(Effect.void)
        }
        waiters.push(waiter)
      })).pipe(
        // Interrupted while waiting: leave the line. Interrupted just after the lock was handed over (before this
        // fiber could take it): pass it on.
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            onRelease?.()
            if (granted) return releaseNow()
            const at = waiter === undefined ? -1 : waiters.indexOf(waiter)
            if (at >= 0) waiters.splice(at, 1)
          })
        )
      )
    })

  return {
    withLock: (effect, onRelease) =>
      Effect.uninterruptibleMask((restore) => {
        // The release in the continuation of `effect` itself, rather than through `Effect.ensuring`: the same
        // guarantee (the region is uninterruptible, and the continuation runs however `effect` ends) in about half
        // the fiber operations, on the path of every step's end in the evented engine.
        const body = Effect.matchCauseEffect(restore(effect), {
          onFailure: (cause) => {
            onRelease?.()
            releaseNow()
            return Effect.failCause(cause)
          },
          onSuccess: (value) => {
            onRelease?.()
            releaseNow()
            return Effect.succeed(value)
          }
        })
        if (held) return Effect.zipRight(wait(restore, onRelease), body)
        held = true
        return body
      }),
    held: () => held
  }
}
