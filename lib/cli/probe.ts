/**
 * The remote function `farpipe hosts` runs on each host. It lives in a
 * module of its own because the module is bundled and shipped to the
 * workers: it imports only `remote()`, not the command or the pool.
 *
 * @module
 */
import { availableParallelism } from 'node:os'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { remote } from '../remote.ts'

/** What a host says about itself. */
export interface HostInfo {
  node: string
  platform: string
  arch: string
  cores: number
  /** Where the worker cached this bundle: the host's farpipe cache. */
  cacheDir: string
}

/** Reports the worker's node, platform, cores and cache dir (the bundle is loaded from the cache, so its own directory is it). */
export const hostInfo = remote(
  (): HostInfo => ({
    node: process.version,
    platform: process.platform,
    arch: process.arch,
    cores: availableParallelism(),
    cacheDir: path.dirname(fileURLToPath(import.meta.url)),
  }),
)
