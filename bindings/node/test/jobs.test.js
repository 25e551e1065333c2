'use strict'
// Job checks, error classes and key files through the Node binding.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const b3iq = require('..')
const { loadVectors, unhex } = require('./helpers.js')

const keys = {}
for (const k of loadVectors('keys').keys) keys[k.name] = { ...k, key: b3iq.NodeKey.fromSeed(unhex(k.secret_seed_hex)) }
const jobCase = loadVectors('job').cases.find((c) => c.name === 'install_model_profile')

function open(signed, nowMs, seen, issuer = 'control_plane', audience = 'node') {
  const roots = new b3iq.TrustRoots([keys[issuer].key.publicKey.hex()])
  return signed.open(roots, keys[audience].key.nodeId, nowMs, seen)
}

function throwsCode(fn, Class, code) {
  assert.throws(fn, (err) => err instanceof Class && err.code === code)
}

test('a job opens once, then is refused as a replay', () => {
  const signed = b3iq.SignedJob.decode(unhex(jobCase.encoded_hex))
  const seen = new b3iq.SeenSet()
  const now = jobCase.body.issued_at_ms + 1000
  const verified = open(signed, now, seen)
  assert.deepEqual(verified.job, jobCase.body)
  assert.equal(verified.job_hash, jobCase.object_hash_hex)
  throwsCode(() => open(signed, now, seen), b3iq.B3iqReplayError, 'replayed')
  assert.ok(new b3iq.B3iqReplayError('x') instanceof b3iq.B3iqAuthError)
})

test('a job is checked for trust, audience and time', () => {
  const signed = b3iq.SignedJob.decode(unhex(jobCase.encoded_hex))
  const b = jobCase.body
  throwsCode(() => open(signed, b.issued_at_ms, new b3iq.SeenSet(), 'ones'), b3iq.B3iqAuthError, 'untrusted_issuer')
  throwsCode(() => open(signed, b.issued_at_ms, new b3iq.SeenSet(), 'control_plane', 'ones'), b3iq.B3iqAuthError, 'wrong_audience')
  throwsCode(() => open(signed, b.expires_at_ms + 3600000, new b3iq.SeenSet()), b3iq.B3iqExpiredError, 'expired')
  throwsCode(() => open(signed, b.issued_at_ms - 3600000, new b3iq.SeenSet()), b3iq.B3iqExpiredError, 'not_yet_valid')
  const seen = new b3iq.SeenSet()
  assert.throws(() => open(signed, b.expires_at_ms + 3600000, seen), b3iq.B3iqExpiredError)
  open(signed, b.issued_at_ms, seen) // a refused job was not recorded
})

test('the job policy depends on the mode', () => {
  const kind = { type: 'restart_runtime' }
  assert.equal(b3iq.decideJob(kind, 'local').verdict, 'refuse')
  assert.equal(b3iq.decideJob(kind, 'managed').verdict, 'run')
  assert.equal(b3iq.decideJob(kind, 'managed', { auto_approve_up_to: null }).verdict, 'needs_owner_approval')
  const d = b3iq.decideJob({ type: 'change_mode', mode: 'network' }, 'managed', { auto_approve_up_to: 'medium' })
  assert.equal(d.verdict, 'needs_owner_approval')
  assert.equal(d.risk, 'high')
  assert.throws(() => b3iq.decideJob({ type: 'run_shell', command: 'rm -rf /' }, 'managed'), b3iq.B3iqValueError)
  assert.throws(() => b3iq.decideJob(kind, 'offline'), b3iq.B3iqValueError)
})

test('bad input throws B3iqValueError', () => {
  assert.throws(() => b3iq.NodePublicKey.fromBytes(Buffer.from('short')), b3iq.B3iqValueError)
  assert.throws(() => b3iq.NodeKey.fromSeed(Buffer.alloc(31)), b3iq.B3iqValueError)
  assert.throws(() => b3iq.Receipt.fromJson({ node_id: 'b3n_x' }), /receipt/)
  assert.throws(() => new b3iq.PayoutTree([{ index: 1, account: '0x00', amount: '1' }]), b3iq.B3iqValueError)
  assert.throws(() => new b3iq.MerkleTree([]).prove(-1), b3iq.B3iqValueError)
  assert.throws(() => b3iq.split(-1n), b3iq.B3iqValueError)
  assert.throws(() => b3iq.split(2n ** 64n), b3iq.B3iqValueError)
})

test('key files load; a missing file is a B3iqIOError naming the path', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'b3iq-node-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'identity.key')
  fs.writeFileSync(file, keys.node.key.toKeyFile())
  assert.ok(b3iq.NodeKey.load(file).nodeId.equals(keys.node.key.nodeId))
  const missing = path.join(dir, 'nope.key')
  assert.throws(() => b3iq.NodeKey.load(missing), (err) => err instanceof b3iq.B3iqIOError && err.message.includes(missing))
  fs.writeFileSync(file, 'garbage\n')
  throwsCode(() => b3iq.NodeKey.load(file), b3iq.B3iqValueError, 'invalid_key_file')
})

test('secrets stay out of strings; generated keys and credentials work', () => {
  const cred = b3iq.Credential.generate('local')
  assert.ok(!String(cred).includes(cred.exposeSecret()))
  assert.equal(b3iq.Credential.parse(cred.exposeSecret(), 'local').kind, 'local')
  throwsCode(() => b3iq.Credential.parse(cred.exposeSecret(), 'support'), b3iq.B3iqValueError, 'wrong_credential_kind')
  const a = b3iq.NodeKey.generate()
  const b = b3iq.NodeKey.generate()
  assert.ok(!a.nodeId.equals(b.nodeId))
  assert.equal(a.publicKey.verify(Buffer.from('m'), a.sign(Buffer.from('m'))), true)
  assert.equal(b.publicKey.verify(Buffer.from('m'), a.sign(Buffer.from('m'))), false)
})

// The one category -> class table (docs/bindings.md).
const CATEGORY_CLASSES = {
  invalid_input: b3iq.B3iqValueError,
  unauthenticated: b3iq.B3iqAuthError,
  expired: b3iq.B3iqExpiredError,
  replayed: b3iq.B3iqReplayError,
  policy_denied: b3iq.B3iqPolicyError,
  state: b3iq.B3iqStateError,
  io: b3iq.B3iqIOError,
  runtime: b3iq.B3iqRuntimeError,
  internal: b3iq.B3iqError,
}

test('every error category throws its class with its code and cause', () => {
  // Every category the core defines, in its order: a new one fails here until it is mapped.
  assert.deepEqual(b3iq.__testingErrorCategories(), Object.keys(CATEGORY_CLASSES))
  for (const [category, Class] of Object.entries(CATEGORY_CLASSES)) {
    assert.throws(
      () => b3iq.__testingErrorForCategory(category),
      (err) => {
        assert.equal(err.constructor, Class, category)
        assert.ok(err instanceof b3iq.B3iqError, category)
        assert.equal(err.name, Class.name)
        assert.equal(err.code, 'error_probe', category)
        assert.ok(err.message.includes(category), err.message)
        assert.ok(err.message.endsWith(": the probe's cause"), err.message)
        assert.equal(err.cause.code, `B3IQ:${category}:error_probe`)
        return true
      },
    )
  }
  assert.ok(new b3iq.B3iqExpiredError('x') instanceof b3iq.B3iqAuthError)
  assert.ok(new b3iq.B3iqReplayError('x') instanceof b3iq.B3iqAuthError)
  throwsCode(() => b3iq.__testingErrorForCategory('nope'), b3iq.B3iqValueError, 'invalid_input')
})
