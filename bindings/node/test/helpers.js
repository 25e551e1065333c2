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
  return JSON.parse(fs.readFileSync(file, 'utf8'))
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
