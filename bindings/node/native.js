'use strict'
// Loads the native addon built by scripts/build.js for this platform:
// b3iq.<platform>-<arch>[-gnu|-musl|-msvc].node next to this file.
const fs = require('node:fs')
const path = require('node:path')

function suffix() {
  const { platform, arch } = process
  if (platform === 'linux') {
    const glibc = process.report && process.report.getReport().header.glibcVersionRuntime
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

const file = path.join(__dirname, `b3iq.${suffix()}.node`)
if (!fs.existsSync(file)) {
  throw new Error(
    `b3iq: no native addon for ${process.platform}-${process.arch} at ${file}; ` +
      'build it with `npm run build` in bindings/node (needs a Rust toolchain); npm 11 skips ' +
      'install scripts until approved (`npm install-scripts ls`)',
  )
}
module.exports = require(file)
