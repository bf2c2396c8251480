/**
 * Finds the worker's own bundle: `dist/worker.mjs`, built by `npm run build`.
 * When farpipe runs from its TypeScript sources without a build (specs under
 * tsx), the bundle is built here once, with the same esbuild settings.
 *
 * @module
 */
import { createHash } from 'node:crypto'
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildFile } from '../bundle.ts'

/** The worker bundle: where it is on this machine, its bytes and their SHA-256. */
export interface WorkerBundle {
  file: string
  code: Uint8Array
  hash: string
}

let found: Promise<WorkerBundle> | undefined

/** The package root: the nearest folder above this module with farpipe's package.json. */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const pkg = path.join(dir, 'package.json')
    if (fs.existsSync(pkg)) {
      try {
        if (JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'farpipe') return dir
      } catch {
        // not ours; keep looking
      }
    }
    const up = path.dirname(dir)
    if (up === dir) throw new Error(`farpipe: cannot find its package.json above ${fileURLToPath(import.meta.url)}`)
    dir = up
  }
}

/** The worker bundle, found or built once per process. */
export function workerBundle(): Promise<WorkerBundle> {
  return (found ??= locate())
}

async function locate(): Promise<WorkerBundle> {
  const root = packageRoot()
  const built = path.join(root, 'dist', 'worker.mjs')
  const source = path.join(root, 'lib', 'worker', 'main.ts')
  const fromSource = fileURLToPath(import.meta.url).endsWith('.ts')
  let file = built
  let code: Uint8Array
  if (!fromSource && fs.existsSync(built)) {
    code = fs.readFileSync(built)
  } else {
    code = await buildFile(source, { shimFarpipe: false })
    const hash = createHash('sha256').update(code).digest('hex')
    file = path.join(root, 'node_modules', '.cache', 'farpipe', `worker-${hash.slice(0, 16)}.mjs`)
    fs.mkdirSync(path.dirname(file), { recursive: true })
    if (!fs.existsSync(file)) fs.writeFileSync(file, code)
  }
  return { file, code, hash: createHash('sha256').update(code).digest('hex') }
}
