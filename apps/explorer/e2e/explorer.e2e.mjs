// End-to-end check of the explorer against a real settled network, driven by the Rust test
// apps/b3iqd/tests/explorer.rs (real hardhat node, control plane + gateway + settler, real
// `b3iqd` nodes, paid requests, one epoch posted). This script gets the control plane's URL
// and what the test knows, then:
//   1. fetches every public API response and fails if any holds one of the test's private
//      values (gateway key, prompts, org name and id, node homes, local URLs, key material);
//   2. opens every explorer page in Chromium (playwright-core), saves a screenshot and runs
//      axe-core on it (no violations of any impact allowed);
//   3. checks a real receipt id (verdict: included, verified in the browser) and a forged one
//      (verdict: no), and a real proof with one sibling changed on the way (verdict: no: the
//      browser's own check refuses it).
// Env: EXPLORER_URL, NODE_EXTRA_CA_CERTS (the control plane's self-signed CA), RECEIPT_ID,
// PENDING_RECEIPT_ID (a receipt stored after the epoch closed),
// NODE_IDS (comma-separated), EPOCH_ID, MODEL, PRIVATE_VALUES (JSON array of strings),
// SHOTS (screenshot directory), CHROMIUM (default /usr/bin/chromium).
// Prints one JSON summary line; exits non-zero on the first failure.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env('EXPLORER_URL').replace(/\/$/, '');
const RECEIPT = env('RECEIPT_ID');
const PENDING = env('PENDING_RECEIPT_ID');
const NODES = env('NODE_IDS').split(',');
const EPOCH = env('EPOCH_ID');
const MODEL = env('MODEL');
const PRIVATE = JSON.parse(env('PRIVATE_VALUES'));
const SHOTS = env('SHOTS');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const AXE = readFileSync(join(here, '..', 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
const FORGED = RECEIPT.replace(/^./, (c) => (c === '0' ? '1' : '0'));

assert.ok(PRIVATE.length >= 5 && PRIVATE.every((p) => typeof p === 'string' && p.length >= 4), 'the private values to look for');
mkdirSync(SHOTS, { recursive: true });

// ---- 1. every public response, scanned for the private values --------------------------------

const responses = [];
async function fetchPublic(path, wantStatus = 200) {
  const r = await fetch(BASE + path);
  const text = await r.text();
  assert.equal(r.status, wantStatus, `${path}: HTTP ${r.status}: ${text}`);
  responses.push([path, text]);
  return JSON.parse(text);
}

// Presence and readiness follow 1 s heartbeats: on a loaded machine one can be late, so these
// are polled (up to 20 s) until they hold; the last answer is the one scanned.
async function fetchUntil(path, ok, what) {
  const end = Date.now() + 20_000;
  for (;;) {
    const r = await fetch(BASE + path);
    const text = await r.text();
    assert.equal(r.status, 200, `${path}: HTTP ${r.status}: ${text}`);
    const v = JSON.parse(text);
    if (ok(v) || Date.now() > end) {
      responses.push([path, text]);
      assert.ok(ok(v), `${path}: ${what}: ${text}`);
      return v;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

const status = await fetchUntil(
  '/v1/public/status',
  (s) => s.nodes.online === NODES.length && s.models.some((m) => m.model === MODEL && m.nodes_ready === NODES.length),
  `every node online and ${MODEL} ready on every node`,
);
assert.equal(status.nodes.total, NODES.length, 'every node counted');
assert.equal(status.epochs.posted, 1);
assert.equal(status.epochs.receipt_count > 0, true);
const nodes = await fetchPublic('/v1/public/nodes');
assert.deepEqual(nodes.nodes.map((n) => n.node_id).sort(), [...NODES].sort());
let receipts = 0;
for (const id of NODES) {
  const n = await fetchUntil(`/v1/public/nodes/${id}`, (n) => n.presence === 'online', 'online');
  assert.deepEqual(n.models, [MODEL]);
  receipts += n.receipt_count;
}
assert.ok(receipts > status.epochs.receipt_count, 'the nodes hold every settled receipt and the pending one');
assert.ok(nodes.nodes[0].benchmark !== null || nodes.nodes[1]?.benchmark !== null, 'a benchmark summary');
const epochs = await fetchPublic('/v1/public/epochs');
assert.equal(epochs.epochs.length, 1);
const epoch = await fetchPublic(`/v1/public/epochs/${EPOCH}`);
assert.equal(epoch.status, 'posted');
assert.match(epoch.tx_hash, /^0x[0-9a-f]{64}$/);
assert.match(epoch.receipt_root, /^[0-9a-f]{64}$/);
const inclusion = await fetchPublic(`/v1/public/receipts/${RECEIPT}`);
assert.equal(inclusion.status, 'included');
assert.equal(inclusion.proof.receipt_root, epoch.receipt_root);
const pending = await fetchPublic(`/v1/public/receipts/${PENDING}`);
assert.deepEqual([pending.status, pending.epoch_id, pending.proof], ['pending', null, null]);
await fetchPublic(`/v1/public/receipts/${FORGED}`, 404);
await fetchPublic('/v1/public/receipts/not-hex', 400);
await fetchPublic('/v1/public/nodes/b3n_nope', 400);
await fetchPublic('/v1/public/epochs/99', 404);
await fetchPublic('/v1/public/epochs/x', 400);

const leaks = [];
for (const [path, text] of responses) {
  for (const p of PRIVATE) {
    if (text.toLowerCase().includes(p.toLowerCase())) leaks.push(`${path} holds private value ${JSON.stringify(p.slice(0, 12))}…`);
  }
}
assert.deepEqual(leaks, [], 'no public response holds a private value');

// ---- 2 and 3. every page in Chromium ----------------------------------------------------------

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
const problems = [];
const a11y = [];
const shots = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: 'light', ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on('console', (m) => {
    // The forged receipt's lookup is a 404 the page expects; the browser logs it.
    if (m.type() === 'error' && !/404/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e}`));

  async function shot(name) {
    const file = join(SHOTS, `${String(shots.length + 1).padStart(2, '0')}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    shots.push(file);
    // Evaluated through the DevTools protocol, so the page's CSP stays strict for the app.
    await page.evaluate(AXE);
    const v = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
      .map((x) => `${x.id} (${x.impact}): ${x.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`));
    for (const x of v) a11y.push(`${name}: ${x}`);
  }
  async function open(path, text) {
    await page.goto(BASE + path);
    await page.getByText(text, { exact: false }).first().waitFor({ timeout: 20_000 });
  }

  await open('/explorer/', 'Epochs posted');
  assert.equal(await page.locator('h1').innerText(), 'Network status');
  assert.match(await page.locator('main').innerText(), /1 of 1/);
  await shot('status');

  await open('/explorer/models', MODEL);
  await shot('models');

  await open('/explorer/nodes', NODES[0]);
  for (const id of NODES) assert.ok(await page.getByText(id).count() > 0, `node ${id} listed`);
  await shot('nodes');

  // Click through to a node page (client-side navigation).
  await page.getByRole('link', { name: NODES[0] }).click();
  await page.getByText('Reputation').first().waitFor();
  assert.match(page.url(), new RegExp(`/explorer/nodes/${NODES[0]}$`));
  const nodeText = await page.locator('main').innerText();
  assert.match(nodeText, new RegExp(MODEL));
  assert.match(nodeText, /Generation\s+\d+\.\d tokens\/s/, 'the benchmark summary shown');
  await shot('node');

  await open('/explorer/epochs', `#${EPOCH}`);
  assert.match(await page.locator('main').innerText(), /posted/);
  await shot('epochs');

  await open(`/explorer/epochs/${EPOCH}`, 'Receipt root');
  const epochText = await page.locator('main').innerText();
  assert.ok(epochText.includes(epoch.receipt_root), 'the receipt root shown');
  assert.ok(epochText.includes(epoch.tx_hash), 'the transaction hash shown');
  await shot('epoch');

  // Empty and error states: an unknown epoch and an unknown page.
  await open('/explorer/epochs/99', 'Not found');
  assert.ok(await page.getByRole('alert').count() > 0, 'an unknown epoch shows an error');
  await shot('epoch-unknown');

  // The inclusion check: a real receipt, verified in the browser.
  await open('/explorer/receipt', 'Receipt inclusion check');
  await page.getByLabel('Receipt id').fill(RECEIPT);
  await page.getByRole('button', { name: 'Check' }).click();
  await page.getByText('Yes: included.').waitFor({ timeout: 20_000 });
  assert.ok((await page.getByTestId('verdict').innerText()).includes(epoch.receipt_root));
  await shot('receipt-included');

  // A forged id: no.
  await page.getByLabel('Receipt id').fill(FORGED);
  await page.getByRole('button', { name: 'Check' }).click();
  await page.getByText('No: not verified.').waitFor({ timeout: 20_000 });
  assert.match(await page.getByTestId('verdict').innerText(), /No receipt with this id/);
  await shot('receipt-forged');

  // A receipt in no epoch yet: no, with the reason.
  await page.getByLabel('Receipt id').fill(PENDING);
  await page.getByRole('button', { name: 'Check' }).click();
  await page.getByText('not in an epoch yet').waitFor({ timeout: 20_000 });
  await shot('receipt-pending');

  // A real proof with one sibling changed in transit: the browser's own check says no.
  await page.route(`**/v1/public/receipts/${RECEIPT}`, async (route) => {
    const r = await route.fetch();
    const body = await r.json();
    const s = body.proof.siblings;
    assert.ok(s.length > 0, 'the proof has siblings (more than one receipt in the epoch)');
    s[0] = (s[0][0] === '0' ? '1' : '0') + s[0].slice(1);
    await route.fulfill({ response: r, json: body });
  });
  await page.getByLabel('Receipt id').fill(RECEIPT);
  await page.getByRole('button', { name: 'Check' }).click();
  await page.getByText('No: not verified.').waitFor({ timeout: 20_000 });
  assert.match(await page.getByTestId('verdict').innerText(), /does not verify/);
  await shot('receipt-tampered');
  await page.unroute(`**/v1/public/receipts/${RECEIPT}`);

  // Deep link with the id in the address: checked on load.
  await open(`/explorer/receipt?id=${RECEIPT}`, 'Yes: included.');

  // Dark mode: the same checks of contrast and structure.
  await page.emulateMedia({ colorScheme: 'dark' });
  await shot('receipt-included-dark');
  await open(`/explorer/epochs/${EPOCH}`, 'Receipt root');
  await shot('epoch-dark');
  await open('/explorer/nodes', NODES[0]);
  await shot('nodes-dark');
} finally {
  await browser.close();
}
assert.deepEqual(problems, [], 'no console errors or page errors');
assert.deepEqual(a11y, [], 'no accessibility violations (axe-core) on any page');
console.log(JSON.stringify({ ok: true, responses_scanned: responses.length, private_values: PRIVATE.length, screenshots: shots.length, shots_dir: SHOTS }));
