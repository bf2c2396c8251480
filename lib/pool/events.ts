/**
 * The events a pool dispatches (`hostup`, `hostdown`, `workerexit`), typed
 * for its listeners: the pool is an EventTarget whose `addEventListener`
 * knows the `detail` of each.
 *
 * @module
 */
import type { HostEventDetail, PoolEventMap, WorkerExitDetail } from './stats.ts'

type AnyListener = Parameters<EventTarget['addEventListener']>[1]
type AddOptions = Parameters<EventTarget['addEventListener']>[2]
type RemoveOptions = Parameters<EventTarget['removeEventListener']>[2]

/** An EventTarget with the pool's events typed. */
export class PoolEvents extends EventTarget {
  /** Listens to `hostup`, `hostdown` and `workerexit` (typed), or any other event. */
  override addEventListener<K extends keyof PoolEventMap>(type: K, listener: (event: PoolEventMap[K]) => void, options?: AddOptions): void
  override addEventListener(type: string, listener: AnyListener, options?: AddOptions): void
  override addEventListener(type: string, listener: AnyListener | ((event: never) => void), options?: AddOptions): void {
    super.addEventListener(type, listener as AnyListener, options)
  }

  /** Stops listening (see {@link addEventListener}). */
  override removeEventListener<K extends keyof PoolEventMap>(type: K, listener: (event: PoolEventMap[K]) => void, options?: RemoveOptions): void
  override removeEventListener(type: string, listener: AnyListener, options?: RemoveOptions): void
  override removeEventListener(type: string, listener: AnyListener | ((event: never) => void), options?: RemoveOptions): void {
    super.removeEventListener(type, listener as AnyListener, options)
  }

  /** Says `hostup` or `hostdown`. @internal */
  protected emitHost(up: boolean, detail: HostEventDetail): void {
    this.dispatchEvent(new CustomEvent<HostEventDetail>(up ? 'hostup' : 'hostdown', { detail }))
  }

  /** Says `workerexit`. @internal */
  protected emitWorkerExit(detail: WorkerExitDetail): void {
    this.dispatchEvent(new CustomEvent<WorkerExitDetail>('workerexit', { detail }))
  }
}
