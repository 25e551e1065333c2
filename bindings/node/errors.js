'use strict'
// The b3iq error classes. The native addon throws plain Errors whose `code` is
// "B3IQ:<category>:<code>" (see src/error.rs); `translate` turns them into the class that
// BY_CATEGORY names for the category (the same table as the Python and Swift bindings, see
// docs/bindings.md), with `err.code` the stable snake_case code (e.g. "invalid_signature") and
// the native error kept as `err.cause`.

class B3iqError extends Error {
  constructor(message, options) {
    super(message, options && options.cause ? { cause: options.cause } : undefined)
    this.name = this.constructor.name
    this.code = (options && options.code) || null
  }
}
/** Malformed or out-of-range input. */
class B3iqValueError extends B3iqError {}
/** A signature, key, password or audience check failed. */
class B3iqAuthError extends B3iqError {}
/** Expired or not yet valid. */
class B3iqExpiredError extends B3iqAuthError {}
/** A replayed job or reused token. */
class B3iqReplayError extends B3iqAuthError {}
/** Refused by policy. */
class B3iqPolicyError extends B3iqError {}
/** A file or network operation failed. */
class B3iqIOError extends B3iqError {}
/** The model runtime failed. */
class B3iqRuntimeError extends B3iqError {}
/** The host is in the wrong state. */
class B3iqStateError extends B3iqError {}

/** The class an error of each category (b3iq-core's `ErrorCategory`) becomes. */
const BY_CATEGORY = {
  invalid_input: B3iqValueError,
  unauthenticated: B3iqAuthError,
  expired: B3iqExpiredError,
  replayed: B3iqReplayError,
  policy_denied: B3iqPolicyError,
  state: B3iqStateError,
  io: B3iqIOError,
  runtime: B3iqRuntimeError,
  internal: B3iqError,
}

const TAG = /^B3IQ:([a-z_]+):([a-z0-9_]+)$/
// Rejected Promises carry the tag as a "[B3IQ:<category>:<code>] " message prefix (src/error.rs).
const PREFIX = /^\[(B3IQ:[a-z_]+:[a-z0-9_]+)\] /

/** The b3iq error for a native error (other errors are returned unchanged). */
function translate(err) {
  if (!err || typeof err.code !== 'string') return err
  let tag = err.code
  let message = err.message
  const prefixed = typeof message === 'string' && PREFIX.exec(message)
  if (prefixed) {
    tag = prefixed[1]
    message = message.slice(prefixed[0].length)
  }
  const parts = TAG.exec(tag)
  if (!parts) return err
  // A category a newer addon knows but this table does not yet: the base class.
  const Class = Object.hasOwn(BY_CATEGORY, parts[1]) ? BY_CATEGORY[parts[1]] : B3iqError
  return new Class(message, { code: parts[2], cause: err })
}

module.exports = {
  B3iqError,
  B3iqValueError,
  B3iqAuthError,
  B3iqExpiredError,
  B3iqReplayError,
  B3iqPolicyError,
  B3iqIOError,
  B3iqRuntimeError,
  B3iqStateError,
  translate,
}
