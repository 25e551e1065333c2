// Embed a B3IQ host in a Node program and call it with the official `openai` client.
//
//   B3IQ_TEST_MODEL=/path/to/model.gguf node examples/openai-local.js
//
// (test/example.test.js runs this file as written.)
'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const OpenAI = require('openai')
const { LocalNode } = require('..')

async function main() {
  const model = process.env.B3IQ_TEST_MODEL // a GGUF file, e.g. the path scripts/fetch-model prints
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'b3iq-example-'))
  const node = await LocalNode.start({ home, model })
  try {
    await node.claim('owner', 'correct horse battery staple')
    const { secret } = await node.createKey('example')

    const client = new OpenAI({ baseURL: node.openaiBaseUrl, apiKey: secret })
    const models = await client.models.list()
    const stream = await client.chat.completions.create({
      model: models.data[0].id,
      messages: [{ role: 'user', content: 'What is the capital of France?' }],
      max_tokens: 24,
      stream: true,
    })
    let answer = ''
    for await (const chunk of stream) answer += chunk.choices[0]?.delta?.content || ''
    console.log(answer.trim())

    // Every request leaves a signed usage receipt behind.
    const receipts = await node.receipts()
    console.log(`${receipts.length} receipt(s), node ${node.nodeId}`)
  } finally {
    await node.shutdown()
    fs.rmSync(home, { recursive: true, force: true })
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
