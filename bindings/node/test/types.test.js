'use strict'
// The TypeScript declarations compile against the documented usage (test/types.ts).
const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

test('index.d.ts type-checks the documented usage', () => {
  const tsc = require.resolve('typescript/bin/tsc', { paths: [path.join(__dirname, '..')] })
  const r = spawnSync(process.execPath, [tsc, '--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022,esnext.disposable', '--module', 'commonjs', '--types', 'node', path.join(__dirname, 'types.ts')], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stdout + r.stderr)
})
