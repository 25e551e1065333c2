import { describe, expect, test } from 'vitest';
import { fromHex, leafHash, merkleRoot, nodeHash, prove, toHex, verifyInclusion } from './merkle';

// RFC 6962 by its recursive definition (k = largest power of two below n).
function reference(leaves: Uint8Array[]): Uint8Array {
  if (leaves.length === 1) return leafHash(leaves[0]!);
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeHash(reference(leaves.slice(0, k)), reference(leaves.slice(k)));
}

const ids = (n: number) => Array.from({ length: n }, (_, i) => new Uint8Array(32).fill(i + 1));

describe('receipt tree', () => {
  test('blake3 of the empty input is the known vector (the hash is blake3)', () => {
    expect(toHex(merkleRoot([]))).toBe('af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262');
  });

  test('matches the RFC 6962 definition and every proof verifies, nothing else does', () => {
    for (let n = 1; n <= 33; n++) {
      const leaves = ids(n);
      const root = toHex(merkleRoot(leaves));
      expect(toHex(reference(leaves))).toBe(root);
      for (let i = 0; i < n; i++) {
        const p = prove(leaves, i).map(toHex);
        expect(verifyInclusion(toHex(leaves[i]!), i, n, p, root)).toBe(true);
        // Another leaf, another index, a changed sibling, a longer proof: refused.
        expect(verifyInclusion(toHex(new Uint8Array(32).fill(200)), i, n, p, root)).toBe(false);
        if (n > 1) expect(verifyInclusion(toHex(leaves[i]!), (i + 1) % n, n, p, root)).toBe(false);
        if (p.length > 0) {
          const bad = [...p];
          bad[0] = 'ff' + bad[0]!.slice(2);
          expect(verifyInclusion(toHex(leaves[i]!), i, n, bad, root)).toBe(false);
        }
        expect(verifyInclusion(toHex(leaves[i]!), i, n, [...p, root], root)).toBe(false);
      }
    }
  });

  test('agrees with b3iq-core (the vector pinned by b3iq-control public::tests)', () => {
    const leaves = Array.from({ length: 5 }, (_, i) => new Uint8Array(32).fill(i + 1));
    const root = '3eb572819de9fac6c5216ce8989fa2bd3cfb8965188aa3281ac7ad175a0e3e19';
    const siblings = [
      '7e14f3d3c9ad356fc347f27541758e9af6fa7b71480d1933065abd0b649f3f8d',
      'e1aab36881d426fc59ec5a0a32475c0560eee0b621aad00ef8706f56963d2d4b',
      'cd05c3b84386766b0c620fdfdae01cb82142211737f768434303dcace44fd6b9',
    ];
    expect(toHex(merkleRoot(leaves))).toBe(root);
    expect(prove(leaves, 3).map(toHex)).toEqual(siblings);
    expect(verifyInclusion(toHex(leaves[3]!), 3, 5, siblings, root)).toBe(true);
  });

  test('malformed input is a no, not an exception', () => {
    expect(verifyInclusion('zz', 0, 1, [], 'aa')).toBe(false);
    expect(verifyInclusion('00', 1, 1, [], '00')).toBe(false);
    expect(() => fromHex('abc')).toThrow();
  });
});
