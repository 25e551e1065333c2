'use strict'
// Runs examples/openai-local.js as written: a LocalNode with the default model, a key, and a
// streamed chat completion through the official `openai` npm client.
const test = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const { modelPath } = require('./helpers.js')

test('the openai example runs against an embedded host', () => {
  const out = execFileSync(process.execPath, [path.join(__dirname, '..', 'examples', 'openai-local.js')], {
    env: { ...process.env, B3IQ_TEST_MODEL: modelPath() },
    encoding: 'utf8',
    timeout: 300_000,
  })
  const lines = out.trim().split('\n')
  assert.ok(lines.length >= 2, out)
  assert.ok(lines.slice(0, -1).join('\n').trim().length > 0, 'the model answered with nothing')
  assert.match(lines[lines.length - 1], /^1 receipt\(s\), node b3n_[a-z2-7]{52}$/)
})
