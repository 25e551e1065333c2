#!/usr/bin/env node
// Offline, reproducible compile of contracts/src/*.sol with the pinned solcjs (package.json).
// Writes one Hardhat-format artifact per contract to artifacts/<Name>.json (abi, bytecode,
// deployedBytecode) plus artifacts/build-info.json (compiler version and settings).
//   node compile.js          compile and (re)write artifacts/
//   node compile.js --check  compile and fail (exit 1) if artifacts/ differs from the fresh output
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const ROOT = __dirname;
const SRC = path.join(ROOT, 'src');
const OUT = path.join(ROOT, 'artifacts');
const CONTRACTS = ['B3TestToken', 'NodeRegistry', 'StakeVault', 'Settlement', 'Disputes', 'ModelRegistry'];
const SETTINGS = {
  optimizer: { enabled: true, runs: 20000 },
  evmVersion: 'cancun',
  viaIR: true,
  // No metadata hash in the bytecode: artifacts depend on the code, not on comments or paths.
  metadata: { bytecodeHash: 'none' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function findImport(importPath) {
  const candidates = [path.join(ROOT, 'node_modules', importPath), path.join(ROOT, importPath)];
  for (const c of candidates) {
    if (fs.existsSync(c)) return { contents: fs.readFileSync(c, 'utf8') };
  }
  return { error: `import not found: ${importPath} (run \`npm ci\` in contracts/)` };
}

function compile() {
  const sources = {};
  for (const f of fs.readdirSync(SRC).filter((f) => f.endsWith('.sol')).sort()) {
    sources[`src/${f}`] = { content: fs.readFileSync(path.join(SRC, f), 'utf8') };
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) console.error(e.formattedMessage);
  if (errors.length) throw new Error(`solc reported ${errors.length} error(s)`);
  const files = {};
  for (const name of CONTRACTS) {
    const sourceName = `src/${name}.sol`;
    const c = output.contracts[sourceName] && output.contracts[sourceName][name];
    if (!c) throw new Error(`contract ${name} missing from compiler output`);
    files[`${name}.json`] = JSON.stringify(
      {
        _format: 'hh-sol-artifact-1',
        contractName: name,
        sourceName,
        abi: c.abi,
        bytecode: '0x' + c.evm.bytecode.object,
        deployedBytecode: '0x' + c.evm.deployedBytecode.object,
        linkReferences: {},
        deployedLinkReferences: {},
      },
      null,
      2,
    ) + '\n';
  }
  files['build-info.json'] = JSON.stringify({ solcVersion: solc.version(), settings: SETTINGS, contracts: CONTRACTS }, null, 2) + '\n';
  return files;
}

function main() {
  const check = process.argv.includes('--check');
  const files = compile();
  if (!check) {
    fs.mkdirSync(OUT, { recursive: true });
    for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(OUT, name), text);
    console.log(`compiled ${CONTRACTS.length} contracts with solc ${solc.version()} -> artifacts/`);
    return;
  }
  const stale = [];
  for (const [name, text] of Object.entries(files)) {
    const p = path.join(OUT, name);
    if (!fs.existsSync(p) || fs.readFileSync(p, 'utf8') !== text) stale.push(name);
  }
  const extra = fs.existsSync(OUT) ? fs.readdirSync(OUT).filter((f) => !(f in files)) : [];
  if (stale.length || extra.length) {
    console.error(`artifacts out of date: ${[...stale, ...extra].join(', ')}`);
    console.error('run `node compile.js` in contracts/ and commit contracts/artifacts/');
    process.exit(1);
  }
  console.log(`artifacts up to date: ${Object.keys(files).length} files match solc ${solc.version()} output`);
}

main();
