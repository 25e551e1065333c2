// Cross-check: every payout tree in ../payout.json must equal OpenZeppelin StandardMerkleTree
// (roots, node arrays, leaves, proofs). Run: npm install && npm run check
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');
const v = require('../payout.json');
let ok = 0, bad = 0;
for (const t of v.trees) {
  const values = t.entries.map(e => [e.index.toString(), e.account, e.amount]);
  const tree = StandardMerkleTree.of(values, ['uint256', 'address', 'uint256']);
  if (tree.root !== '0x' + t.root) { bad++; console.log('root mismatch n=', t.entry_count, tree.root, t.root); continue; }
  const dump = tree.dump();
  const nodes = dump.tree.map(x => x.slice(2));
  if (JSON.stringify(nodes) !== JSON.stringify(t.tree_nodes)) { bad++; console.log('node layout mismatch n=', t.entry_count); }
  t.entries.forEach((e, i) => {
    const p = tree.getProof(i).map(x => x.slice(2));
    if (JSON.stringify(p) !== JSON.stringify(e.proof)) { bad++; console.log('proof mismatch', t.entry_count, i); }
    if (tree.leafHash(values[i]) !== '0x' + e.leaf) { bad++; console.log('leaf mismatch'); }
    if (!StandardMerkleTree.verify(tree.root, ['uint256','address','uint256'], values[i], tree.getProof(i))) bad++;
  });
  ok++;
}
console.log(`trees ok=${ok} mismatches=${bad}`);
process.exit(bad ? 1 : 0);
