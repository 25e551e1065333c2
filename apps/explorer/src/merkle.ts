// Receipt inclusion proofs, checked in the browser with the hashing of b3iq-core's merkle.rs:
// a blake3 tree of RFC 6962 shape over the epoch's receipt ids (ascending), leaf hash
// blake3(0x00 || receipt_id), node hash blake3(0x01 || left || right); verification is
// RFC 9162 section 2.1.3.2. The epoch's receipt_root is what the control plane posts on chain.
import { blake3 } from '@noble/hashes/blake3';

export function fromHex(hex: string): Uint8Array {
  if (!/^(?:[0-9a-f]{2})*$/.test(hex)) throw new Error('not lowercase hex');
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export function leafHash(data: Uint8Array): Uint8Array {
  const buf = new Uint8Array(data.length + 1);
  buf[0] = 0x00;
  buf.set(data, 1);
  return blake3(buf);
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  const buf = new Uint8Array(65);
  buf[0] = 0x01;
  buf.set(left, 1);
  buf.set(right, 33);
  return blake3(buf);
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The root a proof leads to from `leaf` at `index`, or null when the proof's shape is wrong. */
export function rootFromProof(leaf: Uint8Array, index: number, leafCount: number, siblings: Uint8Array[]): Uint8Array | null {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(leafCount) || index < 0 || index >= leafCount) return null;
  // BigInt: indices beyond 2^31 must not wrap in the bit operations.
  let fn = BigInt(index);
  let sn = BigInt(leafCount - 1);
  let r = leafHash(leaf);
  for (const p of siblings) {
    if (sn === 0n) return null;
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r);
      if ((fn & 1n) === 0n) {
        while ((fn & 1n) === 0n && fn !== 0n) {
          fn >>= 1n;
          sn >>= 1n;
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  return sn === 0n ? r : null;
}

/** True when `receiptIdHex` is leaf `index` of the tree with root `rootHex`. */
export function verifyInclusion(receiptIdHex: string, index: number, leafCount: number, siblingsHex: string[], rootHex: string): boolean {
  try {
    const r = rootFromProof(fromHex(receiptIdHex), index, leafCount, siblingsHex.map(fromHex));
    return r !== null && equal(r, fromHex(rootHex));
  } catch {
    return false;
  }
}

/** Root of the tree over `leaves` (RFC 6962 shape), for tests and tooling. */
export function merkleRoot(leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return blake3(new Uint8Array(0));
  let level = leaves.map(leafHash);
  while (level.length > 1) {
    const next: Uint8Array[] = [];
    for (let i = 0; i + 1 < level.length; i += 2) next.push(nodeHash(level[i]!, level[i + 1]!));
    if (level.length % 2 === 1) next.push(level[level.length - 1]!);
    level = next;
  }
  return level[0]!;
}

/** Inclusion proof of leaf `index` (siblings from the leaf up, promoted levels skipped). */
export function prove(leaves: Uint8Array[], index: number): Uint8Array[] {
  let level = leaves.map(leafHash);
  let i = index;
  const out: Uint8Array[] = [];
  while (level.length > 1) {
    const sib = i ^ 1;
    if (sib < level.length) out.push(level[sib]!);
    const next: Uint8Array[] = [];
    for (let k = 0; k + 1 < level.length; k += 2) next.push(nodeHash(level[k]!, level[k + 1]!));
    if (level.length % 2 === 1) next.push(level[level.length - 1]!);
    level = next;
    i >>= 1;
  }
  return out;
}
