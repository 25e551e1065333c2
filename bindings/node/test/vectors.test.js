'use strict'
// The Node binding against the shared golden vectors (testdata/vectors/*.json): every value is
// compared with the JSON, so this binding, the Python one and the uniffi one agree with the core.
const test = require('node:test')
const assert = require('node:assert/strict')
const b3iq = require('..')
const { loadVectors, hex, unhex } = require('./helpers.js')

const keys = {}
for (const k of loadVectors('keys').keys) {
  keys[k.name] = { ...k, key: b3iq.NodeKey.fromSeed(unhex(k.secret_seed_hex)) }
}

const SIGNED = {
  receipt: [b3iq.Receipt, b3iq.SignedReceipt],
  receipt_v2: [b3iq.Receipt, b3iq.SignedReceipt],
  job: [b3iq.Job, b3iq.SignedJob],
  manifest: [b3iq.ModelManifest, b3iq.SignedManifest],
}

function throwsCode(fn, Class, code, label) {
  assert.throws(fn, (err) => {
    assert.ok(err instanceof Class, `${label}: expected ${Class.name}, got ${err && err.name}: ${err && err.message}`)
    assert.ok(err instanceof b3iq.B3iqError)
    assert.equal(err.code, code, label)
    return true
  })
}

test('keys match the vectors', () => {
  assert.ok(Object.keys(keys).length >= 3)
  for (const v of Object.values(keys)) {
    const { key } = v
    assert.equal(key.publicKey.hex(), v.public_key_hex)
    assert.equal(key.nodeId.toString(), v.node_id)
    assert.equal(hex(key.nodeId.toBytes()), v.node_id_hex)
    assert.equal(key.nodeId.shortCode(), v.short_code)
    assert.ok(b3iq.NodeId.parse(v.node_id).equals(key.nodeId))
    assert.ok(key.publicKey.nodeId.equals(key.nodeId))
    const message = unhex(v.raw_message_hex)
    const signature = key.sign(message)
    assert.equal(hex(signature), v.raw_signature_hex)
    assert.equal(key.publicKey.verify(message, signature), true)
    assert.equal(key.publicKey.verify(Buffer.concat([message, Buffer.from('x')]), signature), false)
    assert.equal(key.toKeyFile().toString('utf8'), v.key_file)
    assert.ok(b3iq.NodeKey.fromKeyFile(Buffer.from(v.key_file)).publicKey.equals(key.publicKey))
    assert.ok(b3iq.NodePublicKey.fromHex(v.public_key_hex).equals(key.publicKey))
    assert.ok(!String(key).includes(v.secret_seed_hex))
  }
})

test('invalid node ids are refused with their code', () => {
  const cases = loadVectors('keys').invalid_node_ids
  assert.ok(cases.length > 0)
  for (const c of cases) throwsCode(() => b3iq.NodeId.parse(c.text), b3iq.B3iqValueError, c.error, c.name)
})

for (const [name, [BodyClass, SignedClass]] of Object.entries(SIGNED)) {
  test(`signed ${name}s match the vectors`, () => {
    const vectors = loadVectors(name)
    assert.ok(vectors.cases.length > 0)
    for (const c of vectors.cases) {
      const encoded = unhex(c.encoded_hex)
      const signed = SignedClass.decode(encoded)
      assert.equal(hex(signed.encode()), c.encoded_hex)
      assert.equal(hex(signed.bodyBytes), c.body_hex)
      assert.equal(hex(signed.signingMessage()), c.signing_message_hex)
      assert.equal(hex(signed.objectHash), c.object_hash_hex)
      assert.equal(hex(signed.signature), c.signature_hex)
      assert.equal(signed.signer.hex(), c.signer_public_key_hex)
      assert.deepEqual(signed.toJSON(), c.signed_json)
      assert.equal(hex(SignedClass.fromJson(c.signed_json).encode()), c.encoded_hex)
      const signer = keys[c.signer].key
      assert.equal(c.verifies, true)
      signed.verify(signer.publicKey)
      const body = BodyClass.fromJson(c.body)
      assert.deepEqual(body.toJSON(), c.body)
      assert.equal(hex(body.sign(signer).encode()), c.encoded_hex)
    }
  })

  test(`signed ${name} negative cases fail with their code`, () => {
    const vectors = loadVectors(name)
    const signer = keys[vectors.cases[0].signer].key.publicKey
    assert.ok(vectors.negative_cases_of_first.length > 0)
    for (const c of vectors.negative_cases_of_first) {
      const data = unhex(c.encoded_hex)
      if (c.decodes) {
        const signed = SignedClass.decode(data)
        throwsCode(() => signed.verify(signer), b3iq.B3iqAuthError, c.error, c.name)
      } else {
        throwsCode(() => SignedClass.decode(data), b3iq.B3iqValueError, c.error, c.name)
      }
    }
  })
}

test('receipt ids, summaries and commitments', () => {
  const cases = loadVectors('receipt').cases
  assert.ok(cases.some((c) => c.commitment_opening))
  for (const c of cases) {
    const signed = b3iq.SignedReceipt.decode(unhex(c.encoded_hex))
    assert.equal(hex(signed.receiptId), c.object_hash_hex)
    assert.ok(signed.verifySelfCertified().equals(keys[c.signer].key.nodeId))
    const summary = signed.summary()
    assert.equal(summary.receipt_id, c.object_hash_hex)
    assert.equal(summary.prompt_commitment, undefined)
    assert.equal(summary.request_id, undefined)
    assert.equal(signed.receipt.totalTokens, c.body.prompt_tokens + c.body.completion_tokens)
    const o = c.commitment_opening
    if (!o) continue
    const salt = unhex(o.salt_hex)
    assert.equal(hex(b3iq.commitPrompt(salt, Buffer.from(o.prompt_utf8))), c.body.prompt_commitment)
    assert.equal(hex(b3iq.commitOutput(salt, Buffer.from(o.output_utf8))), c.body.output_commitment)
    assert.notEqual(hex(b3iq.commitOutput(salt, Buffer.from(o.prompt_utf8))), c.body.prompt_commitment)
  }
})

test('v1 receipts still verify and v2 receipts say their version', () => {
  for (const [name, version] of [['receipt', 1], ['receipt_v2', 2]]) {
    const vectors = loadVectors(name)
    assert.equal(vectors.version, version)
    for (const c of vectors.cases) {
      const signed = b3iq.SignedReceipt.decode(unhex(c.encoded_hex))
      assert.equal(signed.version, version)
      assert.equal(signed.receipt.version, version)
      assert.equal(signed.toJSON().version, version)
      signed.verify(keys[c.signer].key.publicKey)
      assert.equal(hex(signed.receiptId), c.object_hash_hex)
    }
  }
})

test('receipt v2 prices, salts and openings', () => {
  const cases = loadVectors('receipt_v2').cases
  assert.deepEqual(new Set(cases.map((c) => c.commitment_opening.commitment_basis)), new Set(['token_ids', 'utf8_text']))
  const salts = []
  for (const c of cases) {
    const { body, price, commitment_opening: o } = c
    const schedule = b3iq.PriceSchedule.fromJson(price.schedule)
    assert.deepEqual(schedule.toJSON(), price.schedule)
    assert.equal(schedule.price(body.prompt_tokens, body.completion_tokens), body.price_micro_credits)
    assert.equal(body.price_micro_credits, price.price_micro_credits)
    const salt = b3iq.receiptSalt(unhex(o.node_salt_hex), unhex(body.request_id))
    assert.equal(hex(salt), o.receipt_salt_hex)
    const receipt = b3iq.SignedReceipt.decode(unhex(c.encoded_hex)).receipt
    if (o.commitment_basis === 'token_ids') {
      const [p, q] = [o.prompt_token_ids, o.completion_token_ids]
      assert.equal(hex(b3iq.commitPromptTokenIds(salt, p)), body.prompt_commitment)
      assert.equal(hex(b3iq.commitCompletionTokenIds(salt, q)), body.output_commitment)
      assert.equal(receipt.opensTokenIds(salt, p, q), true)
      assert.equal(receipt.opensTokenIds(salt, q, p), false)
      assert.equal(receipt.opensText(salt, '', ''), false)
    } else {
      const [p, q] = [o.prompt_utf8, o.completion_utf8]
      assert.equal(hex(b3iq.commitPromptText(salt, p)), body.prompt_commitment)
      assert.equal(hex(b3iq.commitCompletionText(salt, q)), body.output_commitment)
      assert.equal(receipt.opensText(salt, p, q), true)
      assert.equal(receipt.opensTokenIds(salt, [], []), false)
    }
    salts.push([salt, receipt, o])
  }
  // one receipt's revealed salt opens no other receipt
  salts.forEach(([salt], i) => {
    salts.forEach(([, other, o], j) => {
      if (i === j) return
      const opened =
        o.commitment_basis === 'token_ids'
          ? other.opensTokenIds(salt, o.prompt_token_ids, o.completion_token_ids)
          : other.opensText(salt, o.prompt_utf8, o.completion_utf8)
      assert.equal(opened, false, `salt of case ${i} opens case ${j}`)
    })
  })
  assert.throws(() => b3iq.receiptSalt(Buffer.from('short'), Buffer.alloc(16)), b3iq.B3iqValueError)
})

test('merkle trees match the vectors', () => {
  const vectors = loadVectors('merkle')
  assert.equal(hex(new b3iq.MerkleTree([]).root), vectors.empty_root)
  assert.ok(vectors.trees.length > 0)
  for (const t of vectors.trees) {
    const leaves = t.leaves_hex.map(unhex)
    const tree = new b3iq.MerkleTree(leaves)
    assert.equal(tree.length, t.leaf_count)
    assert.equal(hex(tree.root), t.root)
    assert.equal(hex(b3iq.merkleRoot(leaves)), t.root)
    assert.deepEqual(leaves.map((l) => hex(b3iq.merkleLeafHash(l))), t.leaf_hashes)
    assert.equal(hex(b3iq.MerkleTree.fromLeafHashes(t.leaf_hashes.map(unhex)).root), t.root)
    const root = unhex(t.root)
    for (const p of t.proofs) {
      const proof = tree.prove(p.index)
      assert.deepEqual(proof, { leaf_count: t.leaf_count, siblings: p.siblings })
      assert.equal(b3iq.verifyInclusion(root, leaves[p.index], p.index, proof), true)
      assert.equal(b3iq.verifyInclusion(root, Buffer.concat([leaves[p.index], Buffer.from([0])]), p.index, proof), false)
      if (t.leaf_count > 1) {
        assert.equal(b3iq.verifyInclusion(root, leaves[p.index], (p.index + 1) % t.leaf_count, proof), false)
      }
    }
    throwsCode(() => tree.prove(t.leaf_count), b3iq.B3iqValueError, 'index_out_of_range', 'prove past the end')
  }
})

test('payout trees match the vectors', () => {
  const vectors = loadVectors('payout')
  assert.ok(vectors.trees.length > 0)
  for (const t of vectors.trees) {
    const entries = t.entries.map((e) => ({ index: e.index, account: e.account, amount: e.amount }))
    const tree = new b3iq.PayoutTree(entries)
    assert.equal(hex(tree.root), t.root)
    const root = unhex(t.root)
    t.entries.forEach((e, i) => {
      assert.equal(hex(b3iq.payoutLeaf(entries[i])), e.leaf)
      const proof = tree.proof(e.index)
      assert.deepEqual(proof.map(hex), e.proof)
      assert.equal(b3iq.verifyPayout(root, entries[i], proof), true)
      const cheat = { ...entries[i], amount: (BigInt(entries[i].amount) + 1n).toString() }
      assert.equal(b3iq.verifyPayout(root, cheat, proof), false)
    })
  }
})

test('splits match the vectors', () => {
  const vectors = loadVectors('split')
  const policies = {}
  for (const p of vectors.policies) {
    const q = p.policy
    policies[p.name] = new b3iq.SplitPolicy(q.host_bps, q.publisher_bps, q.protocol_bps, q.verifier_bps, q.no_publisher_to)
  }
  assert.ok(vectors.cases.length > 0)
  for (const c of vectors.cases) {
    const total = BigInt(c.total)
    const want = { host: BigInt(c.host), publisher: BigInt(c.publisher), protocol: BigInt(c.protocol), verifier: BigInt(c.verifier) }
    const got = policies[c.policy].split(total, c.has_publisher)
    assert.deepEqual({ ...got }, want)
    assert.equal(got.host + got.publisher + got.protocol + got.verifier, total)
    if (c.policy === 'default') assert.deepEqual({ ...b3iq.split(total, c.has_publisher) }, want)
  }
})

test('credentials match the vectors', () => {
  const vectors = loadVectors('credentials')
  assert.ok(vectors.valid.length > 0 && vectors.invalid.length > 0)
  for (const c of vectors.valid) {
    const cred = b3iq.Credential.parse(c.token)
    assert.equal(cred.kind, c.kind)
    assert.equal(cred.hint, c.hint)
    assert.equal(hex(cred.hashForStorage()), c.storage_hash_sha256)
    assert.ok(!String(cred).includes(c.token))
    b3iq.Credential.parse(c.token, c.kind)
  }
  for (const c of vectors.invalid) {
    throwsCode(() => b3iq.Credential.parse(c.token), b3iq.B3iqValueError, c.error, c.name)
  }
})
