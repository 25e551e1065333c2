'use strict'
// Every export declared in native.d.ts exists in the loaded addon (and nothing undeclared).
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const native = require('../native.js')

test('native.d.ts matches the addon exports', () => {
  const dts = fs.readFileSync(path.join(__dirname, '..', 'native.d.ts'), 'utf8')
  const declared = new Set([...dts.matchAll(/^export declare (?:function|class) (\w+)/gm)].map((m) => m[1]))
  const actual = new Set(Object.keys(native))
  const hostOnly = new Set(['LocalNode', 'Runtime', 'TokenStream', 'startLocalNode', 'createRuntime'])
  const hostBuilt = actual.has('LocalNode')
  for (const name of declared) {
    if (!hostBuilt && hostOnly.has(name)) continue
    assert.ok(actual.has(name), `declared but not exported: ${name}`)
  }
  for (const name of actual) assert.ok(declared.has(name), `exported but not declared in native.d.ts: ${name}`)
  // every declared method of each class exists on the prototype or the class
  for (const m of dts.matchAll(/^export declare class (\w+) \{\n([\s\S]*?)^\}/gm)) {
    const Class = native[m[1]]
    if (!Class) continue
    for (const line of m[2].split('\n')) {
      const mm = line.match(/^\s+(static )?(?:get )?(\w+)\(/)
      if (!mm || mm[2] === 'constructor') continue
      const where = mm[1] ? Class : Class.prototype
      assert.ok(mm[2] in where, `${m[1]}.${mm[2]} is declared but missing`)
    }
  }
})
