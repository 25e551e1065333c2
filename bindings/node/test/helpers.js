'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const REPO = process.env.B3IQ_REPO || path.resolve(__dirname, '..', '..', '..')
const VECTORS = path.join(REPO, 'testdata', 'vectors')

function loadVectors(name) {
  const file = path.join(VECTORS, `${name}.json`)
  if (!fs.existsSync(file)) {
    throw new Error(`golden vector file ${file} is missing; run from a full B3IQ checkout or set B3IQ_REPO`)
  }
  return parseLossless(fs.readFileSync(file, 'utf8'))
}

/**
 * JSON.parse, except that integers beyond Number.MAX_SAFE_INTEGER become BigInts (the binding
 * returns u64 values that large as BigInts, losslessly).
 */
function parseLossless(text) {
  const marked = text.replace(/("(?:[^"\\]|\\.)*")|(-?\d{16,})(?=\s*[,\]}])/g, (m, str, big) =>
    str !== undefined ? str : `"__bigint:${big}"`,
  )
  return JSON.parse(marked, (_key, value) => {
    if (typeof value === 'string' && value.startsWith('__bigint:')) {
      const n = BigInt(value.slice(9))
      return n > BigInt(Number.MAX_SAFE_INTEGER) || n < -BigInt(Number.MAX_SAFE_INTEGER) ? n : Number(n)
    }
    return value
  })
}

/** The default model: $B3IQ_TEST_MODEL, else scripts/fetch-model. Missing is a failure. */
function modelPath() {
  const env = process.env.B3IQ_TEST_MODEL
  if (env) {
    if (!fs.existsSync(env)) throw new Error(`B3IQ_TEST_MODEL=${env} does not exist; run scripts/fetch-model`)
    return env
  }
  return execFileSync(path.join(REPO, 'scripts', 'fetch-model'), { encoding: 'utf8' }).trim()
}

const hex = (buf) => Buffer.from(buf).toString('hex')
const unhex = (s) => Buffer.from(s, 'hex')

module.exports = { REPO, loadVectors, modelPath, hex, unhex }
