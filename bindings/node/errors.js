'use strict'
// The b3iq error classes. The native addon throws plain Errors whose `code` is
// "<CLASS>:<core code>" (see src/error.rs); `translate` turns them into these classes, with
// `err.code` the core's stable snake_case code (e.g. "invalid_signature") and the native error
// kept as `err.cause`.

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

const CLASSES = {
  B3IQ_VALUE: B3iqValueError,
  B3IQ_AUTH: B3iqAuthError,
  B3IQ_EXPIRED: B3iqExpiredError,
  B3IQ_REPLAY: B3iqReplayError,
  B3IQ_POLICY: B3iqPolicyError,
  B3IQ_IO: B3iqIOError,
  B3IQ_RUNTIME: B3iqRuntimeError,
  B3IQ_STATE: B3iqStateError,
  B3IQ_ERROR: B3iqError,
}

/** The b3iq error for a native error (other errors are returned unchanged). */
function translate(err) {
  if (!err || typeof err.code !== 'string') return err
  let full = err.code
  let message = err.message
  // Rejected Promises carry the class code as a "[B3IQ_...] " message prefix (src/error.rs).
  const prefixed = typeof message === 'string' && /^\[(B3IQ_[A-Z]+(?::[a-z0-9_]+)?)\] /.exec(message)
  if (prefixed) {
    full = prefixed[1]
    message = message.slice(prefixed[0].length)
  }
  if (!full.startsWith('B3IQ_')) return err
  const [cls, code] = full.split(':')
  const Class = CLASSES[cls] || B3iqError
  return new Class(message, { code: code || null, cause: err })
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
