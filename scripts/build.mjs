#!/usr/bin/env node
// Builds dist/: the library with tsc (JavaScript and declarations), the
// declarations made to stand on their own (scripts/declarations.mjs: `.js`
// import names, only what dist/index.d.ts reaches), then the worker's
// single-file bundle (dist/worker.mjs, what gets started on every host) with
// the library's own esbuild settings, so the two cannot drift.
import { execFileSync } from 'node:child_process'
import { rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import * as path from 'node:path'
import { publishDeclarations } from './declarations.mjs'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const require = createRequire(import.meta.url)
rmSync(path.join(root, 'dist'), { recursive: true, force: true })
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit', cwd: root })
publishDeclarations(path.join(root, 'dist'), path.join(root, 'dist/index.d.ts'), 'farpipe')
const { buildFile } = await import(path.join(root, 'dist/bundle.js'))
writeFileSync(path.join(root, 'dist/worker.mjs'), await buildFile(path.join(root, 'lib/worker/main.ts'), { shimFarpipe: false }))
