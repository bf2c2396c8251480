#!/usr/bin/env node
// Builds dist/: the library with tsc (JavaScript and declarations), and the
// worker's single-file bundle with esbuild (dist/worker.mjs), which is what
// gets started on every host.
import { execFileSync } from 'node:child_process'
import { rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import * as path from 'node:path'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const require = createRequire(import.meta.url)
rmSync(path.join(root, 'dist'), { recursive: true, force: true })
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit', cwd: root })
const esbuild = await import('esbuild')
const result = await esbuild.build({
  entryPoints: [path.join(root, 'lib/worker/main.ts')],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  write: false,
  logLevel: 'warning',
  banner: { js: "import { createRequire as __farpipeCreateRequire } from 'node:module'; const require = __farpipeCreateRequire(import.meta.url);" },
})
writeFileSync(path.join(root, 'dist/worker.mjs'), result.outputFiles[0].contents)
