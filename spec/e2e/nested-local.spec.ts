// Streams nested in values on the embedded local pool.
import '../helpers.ts'
import { pool } from 'farpipe'
import { nestedSuites } from './nested.ts'

nestedSuites({ name: 'local', open: (options) => pool(options) })
