/**
 * What `import ... from 'farpipe'` gives a bundle: the bundle's `farpipe` is
 * a shim that reads this object from a global (see bundle.ts), so a bundle
 * runs against whatever farpipe loads it. Workers publish it before they
 * load a bundle, and so does the command line, which loads the same bundle
 * to find the function it is asked to call.
 *
 * @module
 */
import { RUNTIME_GLOBAL } from './bundle.ts'
import { context } from './context.ts'
import * as errors from './errors.ts'
import { FarpipeError } from './errors.ts'
import { input } from './input.ts'
import { remote } from './remote.ts'

/**
 * What `import ... from 'farpipe'` gives a bundle. `pool()` is refused
 * there: a module of remote functions that opens a pool at its
 * top level would open one on every worker.
 */
export const runtimeExports = {
  ...errors,
  remote,
  context,
  input,
  pool(): never {
    throw new FarpipeError(
      'pool() was called while a worker (or the farpipe command) was loading the module of a remote function. That module is bundled and ' +
        'evaluated on every worker, so it must not open a pool at its top level: keep the remote functions in a module ' +
        'of their own (for example tasks.ts) and open the pool in the module that imports them (for example main.ts).',
    )
  },
}

/** Publishes the runtime for bundles to import (see bundle.ts). */
export function publishRuntime(): void {
  ;(globalThis as Record<symbol, unknown>)[Symbol.for(RUNTIME_GLOBAL)] = runtimeExports
}
