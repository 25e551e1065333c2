// Compiled (not run) by test/types.test.js with `tsc --noEmit`: the declarations must cover the
// documented usage.
import * as b3iq from '..'

async function demo(): Promise<void> {
  const key: b3iq.NodeKey = b3iq.NodeKey.generate()
  const sig: Buffer = key.sign(Buffer.from('hi'))
  const ok: boolean = key.publicKey.verify(Buffer.from('hi'), sig)
  const id: string = key.nodeId.toString()
  const node = await b3iq.LocalNode.start({ home: '/tmp/x', model: undefined })
  await node.claim('owner', 'correct horse battery staple')
  const base: string = node.openaiBaseUrl
  const rt = await b3iq.Runtime.load('/m.gguf', { threads: 2 })
  const stream = await rt.stream([{ role: 'user', content: 'hi' }], { maxTokens: 8 })
  for await (const piece of stream) {
    const s: string = piece
    void s
  }
  const parts = b3iq.split(10n, true)
  const total: bigint = parts.host + parts.publisher + parts.protocol + parts.verifier
  try {
    b3iq.NodeId.parse('x')
  } catch (err) {
    if (err instanceof b3iq.B3iqValueError) {
      const code: string | null = err.code
      void code
    }
  }
  void ok
  void id
  void base
  void total
  await node.shutdown()
}
void demo
