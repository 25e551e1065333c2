// The official `openai` npm package against a real b3iqd (node:test).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";

const PASSWORD = "correct horse battery staple";
let proc, home, base, key, metricsKey, model, client;

async function post(url, body, headers = {}) {
  const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  return r;
}

before(async () => {
  const bin = process.env.B3IQD_BIN, m = process.env.B3IQ_TEST_MODEL;
  assert.ok(bin && existsSync(bin), "B3IQD_BIN must point at the built b3iqd");
  assert.ok(m && existsSync(m), "B3IQ_TEST_MODEL must point at the default model");
  home = mkdtempSync(join(tmpdir(), "b3iqd-node-"));
  proc = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--model", m], { env: { ...process.env, B3IQ_HOME: home }, stdio: ["ignore", "pipe", "ignore"] });
  let token;
  await new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error("b3iqd did not start")), 180000);
    proc.stdout.on("data", (d) => {
      buf += d.toString();
      // stdout is a pipe, not a terminal: the daemon names the token file instead of printing it.
      const b = buf.match(/listening on (http:\/\/\S+)/);
      if (b && buf.includes("not claimed yet")) {
        base = b[1];
        token = readFileSync(join(home, "setup-token"), "utf8").trim();
        clearTimeout(timer);
        resolve();
      }
    });
    proc.on("exit", (c) => reject(new Error(`b3iqd exited ${c}`)));
  });
  const r = await post(`${base}/api/setup/claim`, { setup_token: token, username: "owner", password: PASSWORD });
  assert.equal(r.status, 201);
  const cookie = r.headers.get("set-cookie").split(";")[0];
  key = (await (await post(`${base}/api/keys`, { name: "node", scopes: ["inference"] }, { cookie })).json()).secret;
  metricsKey = (await (await post(`${base}/api/keys`, { name: "node-m", scopes: ["metrics"] }, { cookie })).json()).secret;
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });
  model = (await client.models.list()).data[0].id;
});

after(() => {
  proc?.kill("SIGTERM");
  if (home) rmSync(home, { recursive: true, force: true });
});

test("models.list", async () => {
  const list = await client.models.list();
  assert.ok(list.data.length >= 1);
  assert.equal(list.data[0].object, "model");
});

test("chat non-streaming", async () => {
  const r = await client.chat.completions.create({ model, messages: [{ role: "user", content: "Say hello" }], max_tokens: 8, temperature: 0 });
  assert.equal(r.object, "chat.completion");
  assert.ok(r.choices[0].message.content.length > 0);
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 8);
});

test("chat streaming with usage", async () => {
  const stream = await client.chat.completions.create({ model, messages: [{ role: "user", content: "Count to three" }], max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = "", usage = null, finish = null;
  for await (const chunk of stream) {
    if (chunk.choices.length) { text += chunk.choices[0].delta.content ?? ""; finish = chunk.choices[0].finish_reason ?? finish; }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.ok(text.length > 0);
  assert.ok(["stop", "length"].includes(finish));
  assert.ok(usage && usage.completion_tokens >= 1);
});

test("completions", async () => {
  const r = await client.completions.create({ model, prompt: "The sky is", max_tokens: 5 });
  assert.equal(r.object, "text_completion");
  assert.equal(typeof r.choices[0].text, "string");
  let text = "";
  for await (const c of await client.completions.create({ model, prompt: "One two", max_tokens: 4, temperature: 0, stream: true })) text += c.choices[0]?.text ?? "";
  assert.ok(text.length > 0);
});

test("errors", async () => {
  const bad = new OpenAI({ baseURL: `${base}/v1`, apiKey: "b3iq_local_wrong", maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  const m = new OpenAI({ baseURL: `${base}/v1`, apiKey: metricsKey, maxRetries: 0 });
  await assert.rejects(m.models.list(), (e) => e instanceof OpenAI.PermissionDeniedError);
  await assert.rejects(client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found");
  await assert.rejects(client.chat.completions.create({ model, messages: [], max_tokens: 2 }), (e) => e instanceof OpenAI.BadRequestError);
});
