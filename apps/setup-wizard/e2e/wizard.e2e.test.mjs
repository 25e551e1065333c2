// End-to-end test of the setup wizard: the real `b3iqd` with the default model, Debian's Chromium
// driven by playwright-core, and the official `openai` npm client using the key the wizard showed.
//
// Env: B3IQD_BIN (the built daemon; default $CARGO_TARGET_DIR/debug/b3iqd), B3IQ_TEST_MODEL (the
// default GGUF; else `$B3IQ_REPO/scripts/fetch-model` is run), B3IQ_REPO (repo root), CHROMIUM
// (default /usr/bin/chromium). Screenshots go to $B3IQ_REPO/test-artifacts/wizard/.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import OpenAI from 'openai';

const here = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(process.env.B3IQ_REPO || join(here, '..', '..', '..'));
const TARGET = process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'b3iq', 'target');
const BIN = process.env.B3IQD_BIN || join(TARGET, 'debug', 'b3iqd');
const CONTROL_BIN = process.env.B3IQ_CONTROL_BIN || join(dirname(BIN), 'b3iq-control');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = join(REPO, 'test-artifacts', 'wizard');
const AXE = readFileSync(join(here, '..', 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
const PASSWORD = 'Quiet-Harbor-Lantern-42';
const USERNAME = 'owner';

function modelPath() {
  if (process.env.B3IQ_TEST_MODEL) return process.env.B3IQ_TEST_MODEL;
  const out = execFileSync(join(REPO, 'scripts', 'fetch-model'), { encoding: 'utf8' }).trim().split('\n').pop();
  if (!out || !existsSync(out)) throw new Error(`the default model is missing: set B3IQ_TEST_MODEL or make scripts/fetch-model work (got ${out})`);
  return out;
}

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, fn, timeoutMs = 60_000, everyMs = 200) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

let daemon;
let control;
let ctlHome;
let daemonLog = '';
let home;
let base;
let model;
let browser;
let context;
let page;
const secrets = new Set([PASSWORD]);
const consoleProblems = [];
let shotNo = 0;
let broken = false;

/** One step of the flow; after a failed step the later ones fail at once instead of cascading. */
function step(t, name, fn) {
  return t.test(name, async () => {
    if (broken) throw new Error('not run: an earlier step failed');
    try {
      await fn();
    } catch (e) {
      broken = true;
      await shot(`FAILED-${name.slice(0, 40).replace(/[^a-z0-9]+/gi, '-')}`).catch(() => {});
      throw e;
    }
  });
}

function b3iqd(args, extraEnv = {}) {
  return execFileSync(BIN, args, { env: { ...process.env, B3IQ_HOME: home, ...extraEnv }, encoding: 'utf8' });
}

const a11yProblems = [];

/** Saves a full-page screenshot and runs axe-core on the same state (WCAG A/AA rules). */
async function shot(name, p = page) {
  shotNo += 1;
  const file = join(SHOTS, `${String(shotNo).padStart(2, '0')}-${name}.png`);
  await p.evaluate(() => window.scrollTo(0, 0)); // a sticky header would otherwise land mid-image
  await p.waitForTimeout(250); // let the fade-in finish
  await p.screenshot({ path: file, fullPage: true });
  // Evaluated through the DevTools protocol, so the page's CSP stays strict for the app itself.
  await p.evaluate(AXE);
  const violations = await p.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] })).violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`));
  for (const v of violations) a11yProblems.push(`${name}: ${v}`);
  return file;
}

/** Fails if localStorage or sessionStorage hold anything that looks like, or is, a secret. */
async function assertNoStoredSecrets(where, p = page) {
  const dump = await p.evaluate(() => {
    const all = {};
    for (const s of [window.localStorage, window.sessionStorage]) {
      for (let i = 0; i < s.length; i++) {
        const k = s.key(i);
        all[k] = s.getItem(k);
      }
    }
    return JSON.stringify(all);
  });
  assert.doesNotMatch(dump, /b3iq_(local|setup|support|gateway)_/, `storage holds a credential at ${where}`);
  for (const s of secrets) assert.ok(!dump.includes(s), `storage holds a secret at ${where}`);
  const url = p.url();
  for (const s of secrets) assert.ok(!url.includes(s), `the URL holds a secret at ${where}`);
}

before(async () => {
  assert.ok(existsSync(BIN), `b3iqd is not built at ${BIN}; run \`cargo build -p b3iqd\` (ci.sh does)`);
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}; install the Debian package \`chromium\``);
  model = modelPath();
  rmSync(SHOTS, { recursive: true, force: true });
  mkdirSync(SHOTS, { recursive: true });
  home = mkdtempSync(join(tmpdir(), 'b3iq-wizard-e2e-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  daemon = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--model', model], {
    // B3IQ_MODEL_CACHE: a profile install copies the verified default model from here (no network).
    env: { ...process.env, B3IQ_HOME: home, B3IQ_MODEL_CACHE: dirname(model), B3IQ_LOG: process.env.B3IQ_LOG || 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  daemon.stdout.on('data', (d) => { daemonLog += d; });
  daemon.stderr.on('data', (d) => { daemonLog += d; });
  daemon.on('exit', (code, sig) => { daemonLog += `\n[b3iqd exited: ${code ?? sig}]\n`; });
  await waitFor('b3iqd /healthz', async () => {
    if (daemon.exitCode !== null) throw new Error(`b3iqd exited early:\n${daemonLog}`);
    return (await fetch(`${base}/healthz`)).ok;
  }, 120_000);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: 'light', deviceScaleFactor: 1 });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') consoleProblems.push(m.text()); });
  page.on('pageerror', (e) => consoleProblems.push(String(e)));
});

after(async () => {
  await browser?.close().catch(() => {});
  if (daemon && daemon.exitCode === null) {
    daemon.kill('SIGTERM');
    await Promise.race([new Promise((r) => daemon.once('exit', r)), sleep(5000)]);
    if (daemon.exitCode === null) daemon.kill('SIGKILL');
  }
  if (control && control.exitCode === null) control.kill('SIGKILL');
  if (ctlHome) rmSync(ctlHome, { recursive: true, force: true });
  if (home) rmSync(home, { recursive: true, force: true });
  // The daemon's own log (it never prints secrets except the setup URL, shown once by design).
  writeFileSync(join(SHOTS, 'b3iqd.log'), daemonLog);
  if (broken) console.error(`--- b3iqd log (last 6000 chars) ---\n${daemonLog.slice(-6000)}`);
});

function tokenFromUrl(text) {
  return text.match(/\/setup\/#token=([A-Za-z0-9_\-]+)/)?.[1];
}

function setupUrlFromDaemon() {
  const m = tokenFromUrl(daemonLog);
  if (m) return m;
  const f = join(home, 'setup-token');
  if (existsSync(f)) {
    const t = readFileSync(f, 'utf8').trim();
    const inUrl = t.match(/#token=([A-Za-z0-9_\-]+)/);
    return inUrl ? inUrl[1] : t;
  }
  return undefined;
}

test('the setup wizard, as a new owner would use it', async (t) => {
  // The wizard is served with a strict CSP.
  const res = await fetch(`${base}/setup/`);
  assert.equal(res.status, 200);
  const csp = res.headers.get('content-security-policy') || '';
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);

  const firstToken = await waitFor('the setup URL on stdout or in $B3IQ_HOME/setup-token', async () => setupUrlFromDaemon(), 30_000);
  secrets.add(firstToken);

  await step(t, 'without a token the page says how to get one', async () => {
    await page.goto(`${base}/setup/`);
    await page.getByText('This page needs a setup link').waitFor();
    assert.ok(await page.getByText('b3iqd setup --reset').first().isVisible());
    await assertNoStoredSecrets('no token');
    await shot('no-token');
  });

  let token;
  await step(t, 'an expired setup link says to run `b3iqd setup --reset`, and the new link recovers', async () => {
    // A real expiry: a token that lives one second (it also replaces the first one).
    const port = new URL(base).port;
    const short = tokenFromUrl(b3iqd(['setup', '--reset', '--ttl-s', '1', '--port', port]));
    assert.ok(short && short !== firstToken, 'setup --reset prints a new setup URL');
    secrets.add(short);
    await sleep(2100);

    await page.goto(`${base}/setup/#token=${short}`);
    await page.getByRole('heading', { name: 'Let’s set up your B3IQ node' }).waitFor();
    assert.ok(!page.url().includes(short), 'the token must leave the address bar');
    assert.ok(/^[A-Z0-9]{4}-[A-Z0-9]{4}$|^B3IQ-/.test(await page.getByLabel('Node code').innerText()), 'a short node code is shown');
    await assertNoStoredSecrets('node found');
    await shot('node-found');
    await page.getByRole('button', { name: 'Claim this node' }).click();
    await page.getByLabel('Owner username').fill(USERNAME);
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await page.getByLabel('Confirm password').fill(PASSWORD);
    await shot('claim');
    await page.getByRole('button', { name: 'Claim node' }).click();
    await page.getByText('This setup link has expired or was already used').waitFor();
    assert.match(await page.getByRole('alert').first().innerText(), /expired/i, 'the node says the token expired');
    assert.ok(await page.getByText('b3iqd setup --reset').first().isVisible());
    await assertNoStoredSecrets('token expired');
    await shot('claim-token-expired');

    // The owner runs `b3iqd setup --reset` and pastes the new link.
    token = tokenFromUrl(b3iqd(['setup', '--reset', '--port', port]));
    assert.ok(token && token !== short);
    secrets.add(token);
    await page.getByLabel('Or paste the new setup link').fill(`${base}/setup/#token=${token}`);
    await page.getByRole('button', { name: 'Use this link' }).click();
  });

  await step(t, 'claim with the new token starts the owner session', async () => {
    await page.getByRole('button', { name: 'Claim node' }).click();
    await page.getByRole('heading', { name: 'Your hardware' }).waitFor({ timeout: 30_000 });
    const cookies = await context.cookies(base);
    const session = cookies.find((c) => c.name === 'b3iq_session');
    assert.ok(session, 'claim sets the session cookie');
    assert.equal(session.httpOnly, true, 'the session cookie is HttpOnly');
    assert.equal(session.sameSite, 'Strict');
    secrets.add(session.value);
    await assertNoStoredSecrets('after claim');
    // The token is single use: a second claim is refused by the node.
    const again = await fetch(`${base}/api/setup/claim`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ setup_token: token, username: 'x', password: PASSWORD }) });
    assert.ok(again.status === 401 || again.status === 409, `a used token is refused (got ${again.status})`);
  });

  await step(t, 'hardware review shows the SKU band and what fits', async () => {
    await page.getByTestId('sku-band').waitFor();
    await page.getByText('Model profiles that fit').waitFor();
    assert.ok(await page.getByText('Fits', { exact: true }).first().isVisible());
    await shot('hardware');
    await page.getByRole('button', { name: 'Continue' }).click();
  });

  await step(t, 'model: select the default profile, install if needed, answer a test prompt', async () => {
    await page.getByRole('heading', { name: 'Choose a model' }).waitFor();
    await page.locator('input[name=profile]').first().waitFor();
    const install = page.getByRole('button', { name: /^Install \(/ });
    if (await install.isVisible().catch(() => false)) {
      // Install the default profile through the signed-job path (copied from the local model
      // cache and hash-checked: no network), with the live progress bar.
      await install.click();
      await page.getByRole('progressbar', { name: 'Install progress' }).first().waitFor();
      await shot('model-installing');
      await page.getByText(/is installed and verified|is loaded and answering/).first().waitFor({ timeout: 180_000 });
    }
    await page.getByText('Ready', { exact: true }).first().waitFor({ timeout: 60_000 });
    await page.getByRole('button', { name: 'Send test prompt' }).click();
    await waitFor('the test answer', async () => {
      const txt = await page.getByTestId('test-answer').innerText();
      return /tokens/.test(txt) && !/appears here/.test(txt);
    }, 120_000);
    await assertNoStoredSecrets('model');
    await shot('model-tested');
  });

  await step(t, 'model: load a second installed model without a restart, and the test prompt is answered by it', async () => {
    // A Q8_0 requantization of the default model (llama.cpp's quantizer), imported into the
    // running node's store by the CLI.
    const imported = JSON.parse(b3iqd(['model', 'import', model, '--quantize', 'q8_0']));
    const q8 = imported.id;
    const apiGet = (path) => page.evaluate(async (p) => {
      const r = await fetch(p, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      return { status: r.status, body: await r.json() };
    }, path);
    assert.equal(q8, 'smollm2-135m-instruct.q8_0');
    assert.ok(imported.file_name.endsWith('.Q8_0.gguf'), imported.file_name);
    await page.reload();
    const row = page.locator(`tr[data-model="${q8}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /Not loaded/);
    await page.getByRole('button', { name: `Load ${q8}` }).click();
    await row.getByText('Loaded', { exact: true }).waitFor({ timeout: 120_000 });
    await row.getByText('Test prompt', { exact: true }).waitFor();
    const served = (await apiGet('/api/models')).body.served.map((m) => m.id);
    assert.ok(served.includes(q8), `served: ${served}`);
    await shot('model-switched');
    await page.getByRole('button', { name: 'Send test prompt' }).click();
    await waitFor('the answer from the loaded copy', async () => {
      const txt = await page.getByTestId('test-answer').innerText();
      return txt.includes(`${q8} ·`) && /tokens/.test(txt);
    }, 120_000);
    // Unload it again: it stays installed, and the later steps see the node as before.
    await page.getByRole('button', { name: `Unload ${q8}` }).click();
    await row.getByText('Not loaded', { exact: true }).waitFor({ timeout: 60_000 });
    assert.ok(!(await apiGet('/api/models')).body.served.some((m) => m.id === q8));
    await page.getByRole('button', { name: 'Continue' }).click();
  });

  let secret;
  let client;
  let modelId;
  await step(t, 'keys: create one, read it once, use it from a real OpenAI client', async () => {
    await page.getByRole('heading', { name: 'API keys' }).waitFor();
    await shot('keys-empty');
    await page.getByLabel('Name').fill('e2e-laptop');
    await page.getByRole('button', { name: 'Create key' }).click();
    secret = (await page.getByTestId('new-key-secret').innerText()).trim();
    assert.match(secret, /^b3iq_local_/);
    secrets.add(secret);
    await page.getByRole('button', { name: 'Copy key' }).click();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret, 'the copy button copies the key');
    await assertNoStoredSecrets('key shown');
    await shot('key-created');

    client = new OpenAI({ baseURL: `${base}/v1`, apiKey: secret, maxRetries: 0, timeout: 120_000 });
    const models = await client.models.list();
    modelId = models.data[0]?.id;
    assert.ok(modelId, '/v1/models lists the loaded model');
    const reply = await client.chat.completions.create({ model: modelId, messages: [{ role: 'user', content: 'Say hello in three words.' }], max_tokens: 16 });
    assert.equal(typeof reply.choices[0].message.content, 'string');
    assert.ok(reply.usage.completion_tokens > 0, 'tokens were generated');

    await page.getByRole('button', { name: 'I’ve stored it' }).click();
    assert.equal(await page.getByTestId('new-key-secret').count(), 0);
  });

  await step(t, 'after a reload the key is listed but never shown again', async () => {
    await page.reload();
    await page.getByRole('heading', { name: 'API keys' }).waitFor();
    await page.getByTestId('keys-table').getByText('e2e-laptop').waitFor();
    const html = await page.content();
    assert.ok(!html.includes(secret), 'the secret is not in the page after reload');
    await assertNoStoredSecrets('reload');
    await shot('keys-after-reload');
  });

  await step(t, 'endpoint and mode screens', async () => {
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.getByRole('heading', { name: 'Connect your apps' }).waitFor();
    assert.equal(await page.getByTestId('base-url').innerText(), `${base}/v1`);
    await shot('endpoint-python');

    // The examples on this screen are run as shown, with the key in ~/.config/b3iq/api-key (0600).
    const snippetHome = mkdtempSync(join(tmpdir(), 'b3iq-snippet-home-'));
    try {
      mkdirSync(join(snippetHome, '.config', 'b3iq'), { recursive: true, mode: 0o700 });
      writeFileSync(join(snippetHome, '.config', 'b3iq', 'api-key'), `${secret}\n`, { mode: 0o600 });
      const env = { ...process.env, HOME: snippetHome };
      delete env.B3IQ_API_KEY;
      const run = (cmd, args) => execFileSync(cmd, args, { env, encoding: 'utf8', timeout: 180_000, stdio: ['ignore', 'pipe', 'pipe'] });
      const snippet = async () => (await page.locator('[role=tabpanel] pre').innerText()).trim();

      const py = await snippet();
      assert.match(py, /from openai import OpenAI/);
      writeFileSync(join(snippetHome, 'example.py'), py);
      let out;
      try {
        out = run('python3', [join(snippetHome, 'example.py')]);
      } catch (e) {
        throw new Error(`the Python example failed (python3 needs the \`openai\` package from .ci/pip-requirements.txt):\n${e.stderr || e.message}`);
      }
      assert.ok(out.trim().length > 0, 'the Python example prints an answer');

      await page.getByRole('tab', { name: 'Node.js' }).click();
      await shot('endpoint-node');
      const js = await snippet();
      assert.match(js, /import OpenAI from 'openai'/);
      // Placed under node_modules/ so `import 'openai'` resolves to this package's copy.
      const jsFile = join(here, '..', 'node_modules', '.b3iq-e2e-example.mjs');
      writeFileSync(jsFile, js);
      try {
        out = run(process.execPath, [jsFile]);
      } finally {
        rmSync(jsFile, { force: true });
      }
      assert.ok(out.trim().length > 0, 'the Node example prints an answer');

      await page.getByRole('tab', { name: 'curl' }).click();
      await shot('endpoint-curl');
      const sh = await snippet();
      assert.doesNotMatch(sh, /b3iq_local_/);
      writeFileSync(join(snippetHome, 'example.sh'), sh);
      out = run('bash', [join(snippetHome, 'example.sh')]);
      assert.equal(JSON.parse(out).object, 'chat.completion', `the curl example gets a completion: ${out.slice(0, 300)}`);
    } finally {
      rmSync(snippetHome, { recursive: true, force: true });
    }
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.getByRole('heading', { name: 'How this node works' }).waitFor();
    assert.ok(await page.locator('input[name=mode][value=local]').isChecked());
    await shot('mode');
    await page.getByRole('button', { name: 'Finish setup' }).click();
  });

  await step(t, 'dashboard: health, usage chart, receipts, audit', async () => {
    await page.getByRole('heading', { name: 'Your node' }).waitFor();
    await page.getByTestId('receipts-table').waitFor({ timeout: 20_000 });
    // config.json's backend is "auto": with no AMD, Intel or Apple GPU here it chose llama.cpp.
    assert.equal(await page.getByTestId('backend-tile').locator('.tile-value').textContent(), 'llama.cpp');
    const bars = await page.locator('[data-testid=usage-chart] rect.chart-bar').evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-requests'))));
    assert.equal(bars.length, 24);
    assert.ok(bars.reduce((a, b) => a + b, 0) >= 2, `the chart counts the playground and the API request (got ${bars})`);
    await page.getByTestId('audit-log').locator('li').first().waitFor();
    await page.getByRole('button', { name: 'Details' }).first().click();
    // The receipt downloads in the export format and verifies offline with the CLI.
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByText('Download receipt JSON').click()]);
    const file = join(home, 'receipt-export.json');
    await download.saveAs(file);
    const exported = JSON.parse(readFileSync(file, 'utf8'));
    assert.equal(exported.format, 'b3iq-receipts/v1');
    assert.equal(exported.receipts.length, 1);
    const report = JSON.parse(b3iqd(['receipts', 'verify', file, '--node', exported.node_id]));
    assert.deepEqual({ checked: report.checked, valid: report.valid, invalid: report.invalid }, { checked: 1, valid: 1, invalid: [] },
      'b3iqd receipts verify accepts the receipt the wizard downloaded');
    await assertNoStoredSecrets('dashboard');
    await shot('dashboard');
  });

  await step(t, 'revoking the key makes the client fail with 401', async () => {
    await page.getByRole('link', { name: 'Keys', exact: true }).click();
    await page.getByRole('button', { name: 'Revoke e2e-laptop' }).click();
    await shot('key-revoke-confirm');
    await page.getByRole('button', { name: 'Confirm revoke' }).click();
    await page.getByText('No keys yet.').waitFor();
    const err = await client.chat.completions.create({ model: modelId, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 }).then(() => null, (e) => e);
    assert.ok(err, 'a revoked key must be refused');
    assert.equal(err.status, 401);
    await shot('key-revoked');
  });

  await step(t, 'wrong password, then sign in again', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to your node' }).waitFor();
    await page.getByLabel('Username').fill(USERNAME);
    await page.getByLabel('Password').fill('not-the-password-1');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText(/Wrong username or password/).waitFor();
    await shot('login-wrong-password');
    // Sign in again with the keyboard only: Tab to the password, type it, Enter.
    await page.getByLabel('Username').focus();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'login-password', 'Tab moves from username to password');
    await page.keyboard.type(PASSWORD);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Your node' }).waitFor();
    await assertNoStoredSecrets('signed in again');
  });

  await step(t, 'dark mode and a narrow phone viewport', async () => {
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.getByTestId('receipts-table').waitFor();
    await shot('dashboard-dark');
    await page.getByRole('link', { name: 'Model', exact: true }).click();
    await page.getByText('Ready', { exact: true }).first().waitFor();
    await shot('model-dark');
    await page.emulateMedia({ colorScheme: 'light' });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole('link', { name: 'Overview', exact: true }).click();
    await page.getByTestId('receipts-table').waitFor();
    await shot('dashboard-narrow');
    await page.getByRole('link', { name: 'Keys', exact: true }).click();
    await page.getByRole('heading', { name: 'API keys' }).waitFor();
    await shot('keys-narrow');
    await page.setViewportSize({ width: 1280, height: 860 });
  });

  await step(t, 'managed mode: enroll in a real control plane, approve a remote job in the Mode step', async () => {
    assert.ok(existsSync(CONTROL_BIN), `b3iq-control is not built at ${CONTROL_BIN} (ci.sh's cargo test --no-run builds it)`);
    ctlHome = mkdtempSync(join(tmpdir(), 'b3iq-control-e2e-'));
    writeFileSync(join(ctlHome, 'control.json'), JSON.stringify({ heartbeat_interval_s: 1 }));
    const ctl = (args, input) => execFileSync(CONTROL_BIN, ['--home', ctlHome, ...args], { encoding: 'utf8', input });
    ctl(['admin', 'create-org', 'acme']);
    ctl(['admin', 'create-operator', '--org', 'acme', '--username', 'alice'], 'a long operator password\n');
    const tokenFile = join(ctlHome, 'token.txt');
    ctl(['admin', 'enrollment-token', '--org', 'acme', '--out', tokenFile]);
    const port = await freePort();
    control = spawn(CONTROL_BIN, ['--home', ctlHome, 'serve', '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let ctlLog = '';
    control.stderr.on('data', (d) => { ctlLog += d; });
    await waitFor('the control plane to serve', () => ctlLog.includes('serving https://'), 30_000);
    b3iqd(['enroll', '--control', `https://127.0.0.1:${port}`, '--token-file', tokenFile, '--ca-file', join(ctlHome, 'tls', 'self-signed.crt.pem')]);
    const nodeId = JSON.parse(b3iqd(['status'])).node_id;
    const queued = JSON.parse(ctl(['admin', 'queue-job', '--org', 'acme', '--by', 'alice', nodeId, 'build_support_bundle']));
    await page.getByRole('link', { name: 'Mode', exact: true }).click();
    await page.getByRole('heading', { name: 'How this node works' }).waitFor();
    // The job reaches the node by its long-poll; the list reloads with the screen.
    await waitFor('the remote job to wait for approval', async () => {
      await page.getByRole('link', { name: 'Overview', exact: true }).click();
      await page.getByRole('link', { name: 'Mode', exact: true }).click();
      return (await page.getByTestId('pending-job').count()) === 1;
    }, 60_000, 1_000);
    await page.getByTestId('managed-panel').getByText(/Managed by cp-/).waitFor();
    assert.ok(await page.locator('input[name=mode][value=managed]').isChecked(), 'the Mode step shows managed');
    await shot('mode-managed-pending-job');
    await page.getByRole('button', { name: 'Approve' }).click();
    await page.getByText('Nothing waits for your approval.').waitFor();
    const done = await waitFor('the signed result at the control plane', () => {
      const jobs = JSON.parse(ctl(['admin', 'jobs', '--org', 'acme', nodeId])).jobs;
      const j = jobs.find((x) => x.job_id === queued.job_id);
      return j && j.finished_at_ms ? j : null;
    }, 60_000, 500);
    assert.equal(done.state, 'succeeded');
    assert.equal(done.result.type, 'support_bundle');
    assert.ok(done.result.bundle.startsWith('1f8b'), 'a gzip archive');
    await page.getByTestId('remote-trail').getByText('build_support_bundle').waitFor();
    await shot('mode-managed-approved');
  });

  await step(t, 'update available: a signed release in the control plane\'s repository shows on the dashboard with its notes', async () => {
    // A real TUF repository made with the real release tool into the running control plane's
    // releases/ (served at /releases/ over its self-signed TLS). The node trusts this test root
    // (in production, the root pinned in the binary) and checks with --ca-file.
    const tool = (args) => execFileSync(join(dirname(BIN), 'b3iq-release'), args, { encoding: 'utf8' });
    const keys = join(ctlHome, 'release-keys');
    const k = (n) => join(keys, `${n}.key`);
    tool(['keys', '--dir', keys]);
    const root = join(ctlHome, 'release-root.json');
    tool(['root', '--root-key', k('root-1'), '--root-key', k('root-2'), '--root-key', k('root-3'), '--targets-key', k('targets'),
      '--snapshot-key', k('snapshot'), '--timestamp-key', k('timestamp'), '--sign', k('root-1'), '--sign', k('root-2'), '--out', root]);
    const arch = { x64: 'x86_64', arm64: 'aarch64' }[process.arch] || process.arch;
    const os = { darwin: 'macos', win32: 'windows' }[process.platform] || process.platform;
    const artifact = join(ctlHome, 'b3iqd-next');
    writeFileSync(artifact, '#!/bin/sh\necho never run by this test\n');
    const notes = 'Faster prefill on small GPUs; fixes a receipt export bug';
    tool(['publish', '--root', root, '--version', '99.0.0', '--notes', notes, '--file', `b3iqd-${os}-${arch}=${artifact}`,
      '--key', k('targets'), '--key', k('snapshot'), '--key', k('timestamp'), '--out', join(ctlHome, 'releases')]);
    mkdirSync(join(home, 'update', 'datastore'), { recursive: true });
    writeFileSync(join(home, 'update', 'datastore', 'root.json'), readFileSync(root));
    const controlUrl = JSON.parse(b3iqd(['status'])).managed.control_url;
    const checked = JSON.parse(b3iqd(['update', 'check', '--repo', `${controlUrl}/releases`, '--ca-file', join(ctlHome, 'tls', 'self-signed.crt.pem')]));
    assert.equal(checked.available, true);
    // The route the card reads, then the card itself (never clicked here: it would replace the
    // shared test build of b3iqd).
    const api = await page.evaluate(async () => {
      const r = await fetch('/api/update', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      return { status: r.status, body: await r.json() };
    });
    assert.equal(api.status, 200);
    assert.deepEqual({ available: api.body.available, latest: api.body.latest, notes: api.body.notes }, { available: true, latest: '99.0.0', notes });
    await page.getByRole('link', { name: 'Overview', exact: true }).click();
    const card = page.getByTestId('update-card');
    await card.getByRole('heading', { name: 'Update available: B3IQ 99.0.0' }).waitFor({ timeout: 30_000 });
    assert.equal(await card.getByTestId('update-notes').innerText(), notes);
    assert.ok(await card.getByRole('button', { name: 'Install 99.0.0' }).isVisible());
    await shot('dashboard-update-available');
    // Back where the managed step left the owner, for the network step.
    await page.getByRole('link', { name: 'Mode', exact: true }).click();
    await page.getByRole('heading', { name: 'How this node works' }).waitFor();
  });

  await step(t, 'network mode: set the policy in the Mode step, save it, choose Network, the tunnel to the gateway connects', async () => {
    const apiGet = (path) => page.evaluate(async (p) => {
      const r = await fetch(p, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      return { status: r.status, body: await r.json() };
    }, path);
    const panel = page.getByTestId('network-panel');
    await panel.waitFor();
    assert.ok(await page.locator('input[name=mode][value=network]').isEnabled(), 'network mode is selectable once enrolled');
    await panel.getByTestId('tunnel-state').getByText('Off').waitFor();
    const servedModel = (await apiGet('/api/node')).body.models[0].id;

    // One window, Monday to Saturday, the whole UTC day (so nothing is refused while the test runs).
    await panel.getByRole('button', { name: 'Add a time window' }).click();
    await panel.getByRole('checkbox', { name: 'Saturday' }).check();
    await panel.getByLabel('From (UTC)').selectOption('0');
    await panel.getByLabel('Until (UTC)').selectOption('24');
    await panel.getByLabel('Max tokens per day').fill('100000');
    await panel.getByLabel('Max concurrent network requests').fill('2');
    await panel.getByRole('checkbox', { name: servedModel }).check();
    await panel.getByLabel('Prompt, per 1,000 tokens').fill('0.001');
    await panel.getByLabel('Completion, per 1,000 tokens').fill('0.002');
    await panel.getByLabel('Per request').fill('0.000001');
    // The form refuses a price the node could not store as whole micro-credits, before sending.
    await panel.getByLabel('Prompt, per 1,000 tokens').fill('0.0000000001');
    await panel.getByRole('button', { name: 'Save network policy' }).click();
    await panel.getByText(/at most 9 decimals/).waitFor();
    await panel.getByLabel('Prompt, per 1,000 tokens').fill('0.001');
    await panel.getByRole('button', { name: 'Save network policy' }).click();
    await panel.getByText('Network policy saved').waitFor();
    await shot('mode-network-policy-saved');

    const saved = await apiGet('/api/network');
    assert.equal(saved.status, 200);
    assert.deepEqual(saved.body.policy, {
      schedule: [{ days: [0, 1, 2, 3, 4, 5], start_hour: 0, end_hour: 24 }],
      max_tokens_per_day: 100000,
      max_concurrent: 2,
      models: [servedModel],
      price_floor: { prompt_per_1m_tokens: 1_000_000, completion_per_1m_tokens: 2_000_000, per_request: 1 },
    }, 'GET /api/network returns the policy as the wizard saved it');
    assert.equal(saved.body.offered_concurrency, 2);
    assert.equal(await panel.getByTestId('offered-concurrency').innerText(), '2');

    // After a reload of the screen the form shows what the node stored.
    await page.getByRole('link', { name: 'Overview', exact: true }).click();
    await page.getByRole('link', { name: 'Mode', exact: true }).click();
    await panel.waitFor();
    assert.equal(await panel.getByLabel('Completion, per 1,000 tokens').inputValue(), '0.002');
    assert.equal(await panel.getByLabel('Per request').inputValue(), '0.000001');

    // A controlled radio: it shows checked once the node has answered POST /api/mode.
    await page.locator('input[name=mode][value=network]').click();
    await waitFor('the Mode step to show network mode on', () => page.locator('input[name=mode][value=network]').isChecked(), 15_000);
    assert.equal((await apiGet('/api/mode')).body.mode, 'network');
    // The control plane runs the gateway: the node dials it and the panel (refreshed every 3 s) says so.
    await panel.getByTestId('tunnel-state').getByText('Connected').waitFor({ timeout: 60_000 });
    const line = await panel.getByTestId('tunnel-state').innerText();
    const tunnel = (await apiGet('/api/network')).body.tunnel;
    assert.equal(tunnel.state, 'connected');
    assert.ok(line.includes(`to gateway ${tunnel.gateway_id} since`), `the panel names the gateway: ${line}`);
    assert.match(await panel.getByTestId('network-today').innerText(), /^0 requests · 0 tokens · 0\.000000 credits earned$/);
    await shot('mode-network-connected');
  });

  assert.deepEqual(consoleProblems.filter((m) => !/status of 401/.test(m)), [], 'no console errors or CSP violations');
  assert.deepEqual(a11yProblems, [], 'no serious or critical accessibility violations (axe-core) on any screen');
});
