'use strict'
// The Runtime (llama.cpp, the real default model) and LocalNode lifecycle through Node.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const b3iq = require('..')
const { modelPath } = require('./helpers.js')

let rt
test.before(async () => {
  rt = await b3iq.Runtime.load(modelPath(), { threads: 2 })
})

test('streams with an async iterator, deterministic when greedy', async () => {
  const [info] = await rt.models()
  assert.equal(info.sha256, 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53')
  const prompt = [{ role: 'user', content: 'Name three colors.' }]
  const stream = await rt.stream(prompt, { maxTokens: 12, temperature: 0 })
  const pieces = []
  for await (const piece of stream) pieces.push(piece)
  assert.ok(pieces.length >= 2)
  const result = await stream.result()
  assert.equal(result.event, 'done')
  assert.ok(result.usage.completion_tokens <= 12 && result.usage.completion_tokens > 0)
  const again = await (await rt.stream(prompt, { maxTokens: 12, temperature: 0 })).text()
  assert.equal(again, pieces.join(''))
})

test('breaking out of the loop cancels the generation', async () => {
  const stream = await rt.stream('Count from one to one hundred:', { maxTokens: 200, temperature: 0 })
  for await (const piece of stream) {
    assert.ok(piece.length > 0)
    break
  }
  assert.equal(await stream.next(), null)
  assert.equal(await stream.result(), null)
})

test('an unknown model rejects with B3iqValueError', async () => {
  await assert.rejects(rt.stream('hi', { model: 'no-such-model' }), b3iq.B3iqValueError)
})

test('LocalNode lifecycle and errors', async (t) => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'b3iq-node-test-'))
  t.after(() => fs.rmSync(home, { recursive: true, force: true }))
  const node = await b3iq.LocalNode.start({ home })
  assert.ok(node.port > 0)
  assert.match(node.nodeId, /^b3n_/)
  assert.match(node.setupUrl, /#token=/)
  await assert.rejects(node.claim('owner', 'short'), (err) => err instanceof b3iq.B3iqValueError && err.code === 'weak_password')
  await node.claim('owner', 'correct horse battery staple')
  const { secret } = await node.createKey('app')
  assert.equal(b3iq.Credential.parse(secret, 'local').kind, 'local')
  assert.deepEqual(await node.receipts(), [])
  await node.shutdown()
  assert.equal(node.running, false)
  await assert.rejects(node.createKey('late'), b3iq.B3iqStateError)
  const again = await b3iq.LocalNode.start({ home })
  assert.ok(again.setupUrl == null)
  await again.shutdown()
  fs.rmSync(home, { recursive: true, force: true })
})
