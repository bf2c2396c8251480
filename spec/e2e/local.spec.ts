// The core end to end on the embedded local pool: real worker processes.
import '../helpers.ts'
import { pool } from 'farpipe'
import { coreSuites } from './core.ts'

coreSuites({ name: 'local', host: 'local', local: true, open: (options) => pool(options) })
