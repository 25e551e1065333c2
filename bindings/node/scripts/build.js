#!/usr/bin/env node
// Builds the native addon (b3iq.<platform>.node) from the Rust crate in this folder.
//
//   node scripts/build.js              dev profile (what CI uses; reuses CARGO_TARGET_DIR)
//   node scripts/build.js --release    release profile
//   node scripts/build.js --if-missing release build only when no addon is present (npm install)
//
// It runs cargo directly (host target, no `--target`, so CI reuses the CARGO_TARGET_DIR that
// `cargo test` filled) and copies the library into place under the name native.js loads.
// `--napi-cli` runs `napi build --platform` from a locally installed @napi-rs/cli instead (cross
// builds, release packaging; `npm run build:napi` fetches the CLI); it builds under
// target/<triple>/ and writes napi's own loader and typings into napi-out/.
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const here = path.resolve(__dirname, '..')
const args = process.argv.slice(2)
const release = args.includes('--release') || args.includes('--if-missing')
// `--no-default-features`: a verify-only addon without LocalNode/Runtime (no llama.cpp build).
const features = args.includes('--no-default-features') ? ['--no-default-features'] : []

if (args.includes('--if-missing') && fs.readdirSync(here).some((f) => f.endsWith('.node'))) {
  process.exit(0)
}

function run(cmd, cmdArgs) {
  const r = spawnSync(cmd, cmdArgs, { cwd: here, stdio: ['inherit', 'pipe', 'inherit'], encoding: 'utf8' })
  if (r.error) {
    console.error(`b3iq: could not run ${cmd}: ${r.error.message}. Install a Rust toolchain (rustup) to build b3iq from source.`)
    process.exit(1)
  }
  if (r.status !== 0) {
    process.stdout.write(r.stdout || '')
    console.error(`b3iq: ${cmd} ${cmdArgs.join(' ')} failed with status ${r.status}`)
    process.exit(r.status || 1)
  }
  return r.stdout
}

function platformSuffix() {
  const { platform, arch } = process
  if (platform === 'linux') {
    const glibc = process.report && process.report.getReport().header.glibcVersionRuntime
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

const cliPath = path.join(here, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js')
const cli = args.includes('--napi-cli') ? cliPath : null

if (cli) {
  const out = run(process.execPath, [
    cli, 'build', '--platform', '--manifest-path', 'Cargo.toml', '--output-dir', 'napi-out',
    '--js', 'native.js', '--dts', 'native.d.ts', ...(release ? ['--release'] : []), ...features,
  ])
  process.stdout.write(out)
} else {
  const out = run('cargo', [
    'build', '--manifest-path', path.join(here, 'Cargo.toml'), '-p', 'b3iq-node',
    '--message-format=json-render-diagnostics', ...(release ? ['--release'] : []), ...features,
  ])
  let lib = null
  for (const line of out.split('\n')) {
    if (!line.startsWith('{')) continue
    const msg = JSON.parse(line)
    if (msg.reason === 'compiler-artifact' && msg.target && msg.target.name === 'b3iq_node') {
      lib = msg.filenames.find((f) => /\.(so|dylib|dll)$/.test(f))
    }
  }
  if (!lib) {
    console.error('b3iq: cargo finished but reported no b3iq_node library')
    process.exit(1)
  }
  const dest = path.join(here, `b3iq.${platformSuffix()}.node`)
  fs.copyFileSync(lib, dest)
  console.log(`b3iq: built ${dest}`)
}
