// Pipelines of calls on the embedded local pool.
import '../helpers.ts'
import { pool } from 'farpipe'
import { pipeSuites } from './pipe.ts'

pipeSuites({ name: 'local', open: (options) => pool(options) })
