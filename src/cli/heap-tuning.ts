/**
 * Garbage collector settings for a process that streams pieces.
 *
 * V8 starts a major GC once the old generation has less room left below its limit than the
 * young generation can hold. A process moving pieces has a heap of 25-30 MB and allocates
 * mostly short-lived buffers, yet it reaches that point every 50 ms or so. On loopback, a
 * supernode ran 72 mark-compacts while sending a 256 MiB file twice. With the thresholds below,
 * V8 starts marking only when half of the room to the limit is used (at once at 90 %), and the
 * supernode's CPU time for one 256 MiB transfer fell from 1.7-1.8 s to 0.8 s. The young
 * generation's size is set on the command line (see bin/dfnode), since V8 fixes it at start-up.
 */
import { setFlagsFromString } from 'node:v8'

let applied = false

/** Sets the marking thresholds once per process. Later calls do nothing. */
export function tuneGarbageCollector (): void {
  if (applied) return
  applied = true
  setFlagsFromString('--incremental-marking-soft-trigger=50')
  setFlagsFromString('--incremental-marking-hard-trigger=90')
}
