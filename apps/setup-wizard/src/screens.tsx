// Owner screens: hardware review, model, keys, endpoint, mode, dashboard.
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { ApiError, jobFraction, modelActionError, modelRows, type Api, type ApiKey, type Job, type ChatResult, type ModelProfile, type Receipt, type SupportGrant, type ManagedInfo, type NetworkInfo, type NetworkPolicy, type TunnelStatus } from './api';
import { UsageChart } from './chart';
import { useLoad } from './hooks';
import { Badge, CodeBlock, CopyButton, ErrorNotice, Field, Notice, ProgressBar, Spinner } from './ui';
import { creditsPer1kToMicrosPer1m, creditsToMicros, formatCredits, formatBytes, formatScaled, formatTime, microsPer1mToCreditsPer1k } from './util';

/** Long hex ids (receipts are 64 hex chars) shortened for display; the full id stays in `title`. */
export function shortId(id: string): string {
  return id.length > 16 ? `${id.slice(0, 12)}…` : id;
}

export interface ScreenProps {
  api: Api;
  onNext?: () => void;
}

function NextButton({ onNext, label = 'Continue' }: { onNext?: () => void; label?: string }) {
  if (!onNext) return null;
  return (
    <div className="actions actions-end">
      <button type="button" className="btn btn-primary" onClick={onNext}>{label}</button>
    </div>
  );
}

function Loading({ what }: { what: string }) {
  return <div className="loading"><Spinner label={`Loading ${what}`} /> Loading {what}…</div>;
}

// ------------------------------------------------------------------ hardware

export function HardwareScreen({ api, onNext }: ScreenProps) {
  const hw = useLoad(() => api.hardware(), [api]);
  const models = useLoad(() => api.models(), [api]);
  const names = new Map((models.data?.profiles ?? []).map((p) => [p.id, p.name]));
  const h = hw.data?.hardware;
  const mem = h?.memory_total_bytes;
  const bestGpu = h?.gpus.reduce<number | undefined>((m, g) => Math.max(m ?? 0, g.memory_bytes ?? 0), undefined);
  return (
    <section className="screen" aria-labelledby="hw-h">
      <p className="eyebrow">Step 3 · Hardware</p>
      <h1 id="hw-h">Your hardware</h1>
      <p className="lead">What this node can run, measured on the machine itself.</p>
      <ErrorNotice error={hw.error} />
      {!hw.data && !hw.error && <Loading what="hardware" />}
      {h && hw.data && (
        <>
          <div className="band" data-testid="sku-band">
            <span className="band-label">Matches</span>
            <span className="band-value">{hw.data.sku_band.label}</span>
            <Badge tone="accent">{hw.data.sku_band.id}</Badge>
          </div>
          <div className="grid grid-2">
            <div className="card">
              <h2>Processor and memory</h2>
              <dl className="facts">
                <div><dt>CPU</dt><dd>{h.cpu_model ?? '—'}</dd></div>
                <div><dt>Cores</dt><dd>{h.cpu_cores ?? '—'}{h.cpu_threads ? ` (${h.cpu_threads} threads)` : ''}</dd></div>
                <div><dt>Memory</dt><dd>{formatBytes(mem)}</dd></div>
                {h.os && <div><dt>System</dt><dd>{h.os}{h.arch ? ` · ${h.arch}` : ''}</dd></div>}
              </dl>
            </div>
            <div className="card">
              <h2>Graphics</h2>
              {h.gpus.length === 0 ? (
                <p className="muted">No supported GPU found. Models run on the CPU.</p>
              ) : (
                <ul className="plain">
                  {h.gpus.map((g, i) => (
                    <li key={i}><b>{g.name}</b> · {formatBytes(g.memory_bytes)}{g.driver ? ` · driver ${g.driver}` : ''}{g.backend ? ` · ${g.backend}` : ''}</li>
                  ))}
                </ul>
              )}
              <dl className="facts">
                <div><dt>Driver stack</dt><dd>{h.driver_stack ?? (h.gpus.length ? 'Not reported' : 'CPU (llama.cpp)')}</dd></div>
              </dl>
            </div>
          </div>
          <div className="card">
            <h2>Model profiles that fit</h2>
            <table className="table">
              <thead><tr><th scope="col">Profile</th><th scope="col">Needs</th><th scope="col">Headroom</th><th scope="col">Fits</th></tr></thead>
              <tbody>
                {hw.data.fits.map((f) => {
                  const budget = bestGpu && bestGpu > 0 ? bestGpu : mem;
                  const headroom = budget !== undefined && f.required_memory_bytes !== undefined ? budget - f.required_memory_bytes : undefined;
                  return (
                    <tr key={f.profile}>
                      <td>{names.get(f.profile) ?? f.profile}</td>
                      <td>{formatBytes(f.required_memory_bytes)}{f.recommended_memory_bytes ? <span className="muted small"> ({formatBytes(f.recommended_memory_bytes)} recommended)</span> : null}</td>
                      <td>{headroom === undefined ? '—' : headroom >= 0 ? `${formatBytes(headroom)} free` : `${formatBytes(-headroom)} short`}</td>
                      <td>{f.fits ? <Badge tone="ok">Fits</Badge> : <Badge tone="bad">Too big</Badge>}{f.reason && <span className="muted small"> {f.reason}</span>}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        </>
      )}
      <NextButton onNext={onNext} />
    </section>
  );
}

// ------------------------------------------------------------------ model

export function ModelScreen({ api, onNext }: ScreenProps) {
  const models = useLoad(() => api.models(), [api]);
  const [selected, setSelected] = useState<string | undefined>(undefined);
  const [job, setJob] = useState<Job | null>(null);
  const [installError, setInstallError] = useState<unknown>(null);
  const [prompt, setPrompt] = useState('In one sentence, what can you help me with?');
  const [answer, setAnswer] = useState<ChatResult | null>(null);
  const [asking, setAsking] = useState(false);
  const [askError, setAskError] = useState<unknown>(null);
  const [switching, setSwitching] = useState<string | null>(null);
  const [switchError, setSwitchError] = useState<unknown>(null);
  // The model the owner loaded last here: the test prompt goes to it while it is served.
  const [chosen, setChosen] = useState<string | null>(null);
  const alive = useRef(true);
  useEffect(() => () => { alive.current = false; }, []);

  const profiles = models.data?.profiles ?? [];
  const rows = models.data ? modelRows(models.data) : [];
  const target = chosen !== null && rows.some((r) => r.id === chosen && r.loaded) ? chosen : undefined;
  const served = models.data?.loaded ?? null;
  const current = selected
    ?? profiles.find((p) => p.loaded)?.id
    ?? profiles.find((p) => p.id === served)?.id
    ?? profiles.find((p) => p.default && p.fits !== false)?.id
    ?? profiles.find((p) => p.fits !== false)?.id;
  const profile = profiles.find((p) => p.id === current);
  // A model file given on the command line that is not one of the catalog's profiles.
  const servedOutsideCatalog = served !== null && !profiles.some((p) => p.loaded || p.id === served);
  const installing = job !== null && (job.state === 'queued' || job.state === 'running');

  async function install(p: ModelProfile) {
    setInstallError(null);
    setAnswer(null);
    try {
      let j = await api.installModel(p.id);
      setJob(j);
      while (alive.current && (j.state === 'queued' || j.state === 'running')) {
        await new Promise((r) => setTimeout(r, 400));
        j = await api.job(j.id);
        if (alive.current) setJob(j);
      }
      if (j.state !== 'succeeded') {
        setInstallError(new Error(`Install ${j.state}: ${j.error ?? 'the node gave no reason'}. Check the disk space and the audit log, then retry.`));
      }
      await models.reload();
    } catch (e) {
      setInstallError(e);
    }
  }

  async function switchModel(id: string, action: 'load' | 'unload') {
    setSwitching(id);
    setSwitchError(null);
    try {
      if (action === 'load') await api.loadModel(id);
      else await api.unloadModel(id);
      if (alive.current) {
        setChosen(action === 'load' ? id : null);
        setAnswer(null);
      }
    } catch (err) {
      if (alive.current) setSwitchError(modelActionError(err, action, id));
    } finally {
      if (alive.current) setSwitching(null);
      await models.reload();
    }
  }

  async function ask(e: FormEvent) {
    e.preventDefault();
    setAsking(true);
    setAskError(null);
    try {
      const r = await api.playground(prompt, 64, target);
      setAnswer(r);
    } catch (err) {
      setAskError(err instanceof ApiError && err.code === 'model_not_loaded' ? new Error('No model is loaded yet. Install one above first.') : err);
    } finally {
      setAsking(false);
    }
  }

  const fraction = job ? jobFraction(job) : undefined;
  return (
    <section className="screen" aria-labelledby="model-h">
      <p className="eyebrow">Step 4 · Model</p>
      <h1 id="model-h">Choose a model</h1>
      <p className="lead">Only approved profiles with a pinned SHA-256 digest can be installed. Installs run as signed jobs and land in the audit log.</p>
      <ErrorNotice error={models.error} />
      {!models.data && !models.error && <Loading what="models" />}
      <fieldset className="choices" disabled={installing}>
        <legend className="sr-only">Model profile</legend>
        {profiles.map((p) => (
          <label key={p.id} className={`choice ${current === p.id ? 'choice-on' : ''}`}>
            <input type="radio" name="profile" value={p.id} checked={current === p.id} onChange={() => setSelected(p.id)} />
            <span className="choice-body">
              <span className="choice-title">{p.name}</span>
              <span className="choice-meta">
                {formatBytes(p.size_bytes)}
                {p.sha256 && <span className="mono" title={p.sha256}> · sha256 {p.sha256.slice(0, 12)}…</span>}
              </span>
              <span className="choice-badges">
                {p.loaded ? <Badge tone="ok">Loaded</Badge> : p.installed ? <Badge tone="muted">Installed</Badge> : null}
                {p.fits === false && <Badge tone="bad">Does not fit</Badge>}
              </span>
            </span>
          </label>
        ))}
      </fieldset>

      <div className="card install" aria-live="polite">
        {servedOutsideCatalog && (
          <p><Badge tone="ok">Ready</Badge> Serving <b className="mono">{served}</b>, a model file given to <code>b3iqd serve --model</code>.</p>
        )}
        {profile && !profile.loaded && !profile.installed && !installing && (
          <div className="row">
            <p>{profile.name} is not installed yet.</p>
            <button type="button" className="btn btn-primary" onClick={() => void install(profile)} disabled={profile.fits === false}>
              {`Install (${formatBytes(profile.size_bytes)})`}
            </button>
          </div>
        )}
        {profile && !profile.loaded && profile.installed && !installing && (
          <div>
            <p><Badge tone="muted">Installed</Badge> <b>{profile.name}</b> is installed and verified{job?.state === 'succeeded' ? ' (sha256 checked)' : ''}.</p>
            {job?.state === 'succeeded' && <ProgressBar value={1} label="Install progress" />}
            <p className="muted small">
              {served ? `The node is serving ${served} now. ` : 'No model is being served yet. '}
              To serve this one, press Load next to <b className="mono">{profile.id}</b> under Installed models: no restart needed.
            </p>
          </div>
        )}
        {installing && job && (
          <div>
            <p>{job.state === 'queued' ? 'Queued…' : 'Installing and verifying…'} {job.bytes_total ? `${formatBytes(job.bytes_done)} of ${formatBytes(job.bytes_total)}` : ''}</p>
            <ProgressBar value={fraction ?? 0} label="Install progress" />
          </div>
        )}
        {profile?.loaded && (
          <div className="row">
            <p><Badge tone="ok">Ready</Badge> <b>{profile.name}</b> is loaded and answering.</p>
            {job?.state === 'succeeded' && <ProgressBar value={1} label="Install progress" />}
          </div>
        )}
        {!profile && !servedOutsideCatalog && models.data && <p className="muted">No model profiles are available on this node.</p>}
        {installError ? <ErrorNotice error={installError} /> : null}
      </div>

      {rows.length > 0 && (
        <div className="card" aria-labelledby="installed-h">
          <h2 id="installed-h">Installed models</h2>
          <p className="muted small">
            Load switches models while the node runs. Up to {models.data?.max_loaded_models ?? 1} stay loaded at once; loading one more unloads the least recently used idle one. A model answering requests is never unloaded.
          </p>
          <table className="table" data-testid="installed-models">
            <thead><tr><th scope="col">Model</th><th scope="col">State</th><th scope="col" className="num">Requests now</th><th scope="col"><span className="sr-only">Action</span></th></tr></thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.id} data-model={r.id}>
                  <td>
                    <span className="mono">{r.id}</span>
                    {r.label !== r.id && <span className="muted small"> · {r.label}</span>}
                    {r.size_bytes !== undefined && <span className="muted small"> · {formatBytes(r.size_bytes)}</span>}
                  </td>
                  <td>
                    {r.loaded ? <Badge tone="ok">Loaded</Badge> : <Badge tone="muted">Not loaded</Badge>}
                    {r.loaded && r.id === (target ?? served) && <> <Badge tone="accent">Test prompt</Badge></>}
                  </td>
                  <td className="num">{r.in_flight}</td>
                  <td>
                    {r.loaded ? (
                      <button type="button" className="btn" disabled={switching !== null || r.in_flight > 0}
                        aria-label={`Unload ${r.id}`} onClick={() => void switchModel(r.id, 'unload')}>
                        {switching === r.id ? 'Unloading…' : 'Unload'}
                      </button>
                    ) : (
                      <button type="button" className="btn btn-primary" disabled={switching !== null}
                        aria-label={`Load ${r.id}`} onClick={() => void switchModel(r.id, 'load')}>
                        {switching === r.id ? 'Loading…' : 'Load'}
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {switchError ? <ErrorNotice error={switchError} /> : null}
        </div>
      )}

      <form className="card form" onSubmit={ask}>
        <h2>Try it</h2>
        <Field label="Test prompt" htmlFor="test-prompt">
          <input id="test-prompt" value={prompt} onChange={(e) => setPrompt(e.target.value)} maxLength={500} />
        </Field>
        <div className="actions">
          <button type="submit" className="btn" disabled={asking || !prompt.trim() || served === null}>{asking ? 'Thinking…' : 'Send test prompt'}</button>
        </div>
        <ErrorNotice error={askError} />
        <div className="answer" data-testid="test-answer" aria-live="polite">
          {answer ? (
            <>
              <p>{answer.content || <span className="muted">(empty answer)</span>}</p>
              <p className="muted small">
                {answer.model} · {answer.completion_tokens ?? '?'} tokens
                {answer.ttft_ms !== undefined && ` · first token ${answer.ttft_ms} ms`}
                {answer.tokens_per_second !== undefined && ` · ${answer.tokens_per_second.toFixed(1)} tokens/s`}
                {answer.receipt_id && <> · receipt <span className="mono" title={answer.receipt_id}>{shortId(answer.receipt_id)}</span></>}
              </p>
            </>
          ) : (
            <p className="muted">The answer appears here.</p>
          )}
        </div>
      </form>
      <NextButton onNext={onNext} />
    </section>
  );
}

// ------------------------------------------------------------------ keys

export const KEY_FILE = '~/.config/b3iq/api-key';

export function storeKeySnippet(): string {
  return [
    '# Save the key in a file only you can read (paste it, then press Ctrl-D):',
    'mkdir -p ~/.config/b3iq && chmod 700 ~/.config/b3iq',
    `(umask 077 && cat > ${KEY_FILE})`,
    `chmod 600 ${KEY_FILE}`,
  ].join('\n');
}

/** The new key, shown exactly once. Dropping it (Done, or leaving the page) forgets it for good. */
export function KeyReveal({ secret, name, onDone }: { secret: string; name: string; onDone: () => void }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => ref.current?.focus(), []);
  return (
    <div className="reveal" ref={ref} tabIndex={-1} role="region" aria-labelledby="reveal-h">
      <h2 id="reveal-h">Copy your key for “{name}” now</h2>
      <p>This is the only time it is shown. B3IQ keeps just a hash of it.</p>
      <div className="secret-row">
        <code className="secret" data-testid="new-key-secret">{secret}</code>
        <CopyButton text={secret} label="Copy key" className="btn-primary" />
      </div>
      <CodeBlock label="Store it safely" code={storeKeySnippet()} />
      <div className="actions actions-end">
        <button type="button" className="btn" onClick={onDone}>I’ve stored it</button>
      </div>
    </div>
  );
}

function RevokeButton({ label, onRevoke }: { label: string; onRevoke: () => Promise<void> }) {
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  if (!confirming) {
    return <button type="button" className="btn btn-small btn-danger-quiet" onClick={() => setConfirming(true)} aria-label={`Revoke ${label}`}>Revoke</button>;
  }
  return (
    <span className="confirm">
      <button type="button" className="btn btn-small btn-danger" disabled={busy} autoFocus
        onClick={async () => { setBusy(true); try { await onRevoke(); } finally { setBusy(false); setConfirming(false); } }}>
        {busy ? 'Revoking…' : 'Confirm revoke'}
      </button>
      <button type="button" className="btn btn-small" onClick={() => setConfirming(false)}>Cancel</button>
    </span>
  );
}

export function KeysScreen({ api, onNext }: ScreenProps) {
  const keys = useLoad(() => api.keys(), [api]);
  const [name, setName] = useState('my-laptop');
  const [inference, setInference] = useState(true);
  const [metrics, setMetrics] = useState(false);
  const [expiry, setExpiry] = useState('90');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [created, setCreated] = useState<{ secret: string; name: string } | null>(null);

  async function create(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const scopes = [inference && 'inference', metrics && 'metrics'].filter((s): s is string => !!s);
      const r = await api.createKey(name.trim(), scopes, expiry === 'never' ? null : Number(expiry));
      setCreated({ secret: r.secret, name: r.key.name || name.trim() });
      await keys.reload();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  async function revoke(k: ApiKey) {
    setError(null);
    try {
      await api.revokeKey(k.id);
    } catch (err) {
      setError(err);
    }
    await keys.reload();
  }

  return (
    <section className="screen" aria-labelledby="keys-h">
      <p className="eyebrow">Step 5 · Keys</p>
      <h1 id="keys-h">API keys</h1>
      <p className="lead">Apps use a key to call your node. Give each app its own key so you can revoke it alone.</p>
      {created ? (
        <KeyReveal secret={created.secret} name={created.name} onDone={() => setCreated(null)} />
      ) : (
        <form className="card form" onSubmit={create}>
          <h2>Create a key</h2>
          <div className="grid grid-3">
            <Field label="Name" htmlFor="key-name" hint="Where it will be used.">
              <input id="key-name" value={name} onChange={(e) => setName(e.target.value)} maxLength={64} required />
            </Field>
            <fieldset className="field">
              <legend>Scopes</legend>
              <label className="check"><input type="checkbox" checked={inference} onChange={(e) => setInference(e.target.checked)} /> Inference (<code>/v1</code>)</label>
              <label className="check"><input type="checkbox" checked={metrics} onChange={(e) => setMetrics(e.target.checked)} /> Metrics (<code>/metrics</code>)</label>
            </fieldset>
            <Field label="Expires" htmlFor="key-expiry">
              <select id="key-expiry" value={expiry} onChange={(e) => setExpiry(e.target.value)}>
                <option value="30">In 30 days</option>
                <option value="90">In 90 days</option>
                <option value="365">In a year</option>
                <option value="never">Never</option>
              </select>
            </Field>
          </div>
          <ErrorNotice error={error} />
          <div className="actions">
            <button type="submit" className="btn btn-primary" disabled={busy || !name.trim() || (!inference && !metrics)}>{busy ? 'Creating…' : 'Create key'}</button>
          </div>
        </form>
      )}
      <div className="card">
        <h2>Active keys</h2>
        <ErrorNotice error={keys.error} />
        {keys.data && keys.data.length === 0 && <p className="muted">No keys yet.</p>}
        {keys.data && keys.data.length > 0 && (
          <div className="table-wrap">
            <table className="table" data-testid="keys-table">
              <thead><tr><th scope="col">Name</th><th scope="col">Key</th><th scope="col">Scopes</th><th scope="col">Last used</th><th scope="col">Expires</th><th scope="col"><span className="sr-only">Actions</span></th></tr></thead>
              <tbody>
                {keys.data.map((k) => (
                  <tr key={k.id} data-key-id={k.id}>
                    <td>{k.name}</td>
                    <td className="mono">{k.prefix ?? '—'}</td>
                    <td>{k.scopes.join(', ')}</td>
                    <td>{k.last_used_at ? formatTime(k.last_used_at) : 'Never'}</td>
                    <td>{k.expires_at ? formatTime(k.expires_at) : 'Never'}</td>
                    <td className="right"><RevokeButton label={k.name} onRevoke={() => revoke(k)} /></td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </div>
      {!created && <NextButton onNext={onNext} />}
    </section>
  );
}

// ------------------------------------------------------------------ endpoint

export function endpointSnippets(baseUrl: string, model: string): { python: string; node: string; curl: string } {
  return {
    python: [
      '# pip install openai',
      'import os, pathlib',
      'from openai import OpenAI',
      '',
      `key_file = pathlib.Path("${KEY_FILE}").expanduser()`,
      'key = os.environ.get("B3IQ_API_KEY") or key_file.read_text().strip()',
      `client = OpenAI(base_url="${baseUrl}", api_key=key)`,
      'reply = client.chat.completions.create(',
      `    model="${model}",`,
      '    messages=[{"role": "user", "content": "Hello!"}],',
      ')',
      'print(reply.choices[0].message.content)',
    ].join('\n'),
    node: [
      '// npm install openai',
      "import { readFileSync } from 'node:fs';",
      "import { homedir } from 'node:os';",
      "import OpenAI from 'openai';",
      '',
      `const keyFile = \`\${homedir()}/${KEY_FILE.slice(2)}\`;`,
      "const key = process.env.B3IQ_API_KEY ?? readFileSync(keyFile, 'utf8').trim();",
      `const client = new OpenAI({ baseURL: '${baseUrl}', apiKey: key });`,
      'const reply = await client.chat.completions.create({',
      `  model: '${model}',`,
      "  messages: [{ role: 'user', content: 'Hello!' }],",
      '});',
      'console.log(reply.choices[0].message.content);',
    ].join('\n'),
    curl: [
      '# The key goes in through a file descriptor, never on the command line.',
      `curl -sS ${baseUrl}/chat/completions \\`,
      `  -H @<(printf 'Authorization: Bearer %s\\n' "$(cat ${KEY_FILE})") \\`,
      "  -H 'Content-Type: application/json' \\",
      `  -d '{"model": "${model}", "messages": [{"role": "user", "content": "Hello!"}]}'`,
    ].join('\n'),
  };
}

export function EndpointScreen({ api, onNext }: ScreenProps) {
  const models = useLoad(() => api.models(), [api]);
  const [tab, setTab] = useState<'python' | 'node' | 'curl'>('python');
  const baseUrl = `${window.location.origin}/v1`;
  const model = models.data?.loaded ?? models.data?.profiles[0]?.id ?? 'MODEL_ID';
  const snippets = endpointSnippets(baseUrl, model);
  const tabs: { id: typeof tab; label: string }[] = [
    { id: 'python', label: 'Python' },
    { id: 'node', label: 'Node.js' },
    { id: 'curl', label: 'curl' },
  ];
  return (
    <section className="screen" aria-labelledby="ep-h">
      <p className="eyebrow">Step 6 · Endpoint</p>
      <h1 id="ep-h">Connect your apps</h1>
      <p className="lead">Any OpenAI-compatible client works. Point it at your node and give it a key.</p>
      <div className="card">
        <dl className="facts facts-wide">
          <div><dt>Base URL</dt><dd className="secret-row"><code data-testid="base-url">{baseUrl}</code><CopyButton text={baseUrl} label="Copy URL" /></dd></div>
          <div><dt>Model</dt><dd><code>{model}</code></dd></div>
        </dl>
      </div>
      <div className="tabs" role="tablist" aria-label="Example language">
        {tabs.map((t) => (
          <button key={t.id} type="button" role="tab" id={`tab-${t.id}`} aria-selected={tab === t.id} aria-controls={`panel-${t.id}`}
            tabIndex={tab === t.id ? 0 : -1} className={`tab ${tab === t.id ? 'tab-on' : ''}`} onClick={() => setTab(t.id)}
            onKeyDown={(e) => {
              const i = tabs.findIndex((x) => x.id === tab);
              const next = e.key === 'ArrowRight' ? tabs[(i + 1) % tabs.length] : e.key === 'ArrowLeft' ? tabs[(i + tabs.length - 1) % tabs.length] : undefined;
              if (next) {
                setTab(next.id);
                document.getElementById(`tab-${next.id}`)?.focus();
              }
            }}>
            {t.label}
          </button>
        ))}
      </div>
      <div role="tabpanel" id={`panel-${tab}`} aria-labelledby={`tab-${tab}`}>
        <CodeBlock label={tabs.find((t) => t.id === tab)?.label ?? ''} code={snippets[tab]} />
      </div>
      <p className="muted small">Keys are read from <code>{KEY_FILE}</code> or the <code>B3IQ_API_KEY</code> environment variable, never typed on the command line, where other users could see them in the process list.</p>
      <NextButton onNext={onNext} />
    </section>
  );
}

// ------------------------------------------------------------------ mode

/** What the dashboard's Backend tile says for each `runtime.kind` of `GET /api/node`. */
const BACKEND_TEXT: Record<string, string> = { llama_cpp: 'llama.cpp', wgpu: 'wgpu (WGSL)', openai_upstream: 'Upstream API' };

const MODE_TEXT: Record<string, { title: string; what: string; shares: string }> = {
  local: {
    title: 'Local',
    what: 'A private endpoint for you and your apps. Works with no internet and no account.',
    shares: 'Nothing leaves this machine.',
  },
  managed: {
    title: 'Managed',
    what: 'Enroll in a control plane for remote health checks, updates and support, without opening a port.',
    shares: 'Node id, health, hardware inventory, installed models and request counts. Never prompts, outputs, keys or local addresses.',
  },
  network: {
    title: 'Network',
    what: 'Serve paid requests from the hosted gateway within your schedule and limits, earning credits against your signed receipts.',
    shares: 'Everything in Managed, plus signed receipts (hashes, token counts, timings, prices). Other people’s prompts run on this machine.',
  },
};

export function ModeScreen({ api, onNext }: ScreenProps) {
  const mode = useLoad(() => api.mode(), [api]);
  const [error, setError] = useState<unknown>(null);
  const modes = mode.data?.modes.length ? mode.data.modes : [{ mode: 'local', selectable: true }, { mode: 'managed', selectable: false }, { mode: 'network', selectable: false }];
  async function choose(m: string) {
    setError(null);
    try {
      const r = await fetchMode(api, m);
      if (r) await mode.reload();
    } catch (e) {
      setError(e);
    }
  }
  return (
    <section className="screen" aria-labelledby="mode-h">
      <p className="eyebrow">Step 7 · Mode</p>
      <h1 id="mode-h">How this node works</h1>
      <p className="lead">{MODE_TEXT[mode.data?.mode ?? 'local']?.title ?? 'Local'} is on. The other modes are opt-in and share only what is listed.</p>
      <ErrorNotice error={mode.error ?? error} />
      <fieldset className="choices choices-3">
        <legend className="sr-only">Operating mode</legend>
        {modes.map((m) => {
          const t = MODE_TEXT[m.mode] ?? { title: m.mode, what: '', shares: '' };
          const on = (mode.data?.mode ?? 'local') === m.mode;
          return (
            <label key={m.mode} className={`choice choice-tall ${on ? 'choice-on' : ''} ${m.selectable ? '' : 'choice-off'}`}>
              <input type="radio" name="mode" value={m.mode} checked={on} disabled={!m.selectable} onChange={() => void choose(m.mode)} />
              <span className="choice-body">
                <span className="choice-title">{t.title} {on ? <Badge tone="ok">On</Badge> : <Badge tone="muted">Opt-in</Badge>}</span>
                <span>{t.what}</span>
                <span className="shares"><b>Shares:</b> {t.shares}</span>
                {!m.selectable && m.reason && <span className="muted small">{m.reason}</span>}
              </span>
            </label>
          );
        })}
      </fieldset>
      {mode.data?.managed && <ManagedPanel m={mode.data.managed} />}
      {mode.data?.network && (mode.data.managed || mode.data.mode === 'network') && (
        <NetworkPanel
          api={api}
          initial={mode.data.network}
          active={mode.data.mode === 'network'}
          notSelectable={mode.data.modes.find((m) => m.mode === 'network' && !m.selectable)?.reason}
          onSaved={() => void mode.reload()}
        />
      )}
      {mode.data?.managed && <RemoteJobs api={api} />}
      <NextButton onNext={onNext} label="Finish setup" />
    </section>
  );
}

const HEARTBEAT_TEXT: Record<string, string> = {
  accepted: 'Accepted',
  refused: 'Refused by the control plane',
  unreachable: 'Control plane unreachable',
};

/** The control plane this node reports to, and how its last heartbeat went. */
export function ManagedPanel({ m }: { m: ManagedInfo }) {
  const h = m.last_heartbeat;
  return (
    <div className="card" data-testid="managed-panel">
      <h2>Managed by {m.audience}</h2>
      <dl className="facts">
        <div><dt>Organisation</dt><dd>{m.org_id}</dd></div>
        <div><dt>Job-signing key</dt><dd><code>{m.job_key.slice(0, 16)}…</code></dd></div>
        <div><dt>Enrollment ends</dt><dd>{m.expires_at_ms ? new Date(m.expires_at_ms).toLocaleString() : 'unknown'}</dd></div>
        <div><dt>Last heartbeat</dt>
        <dd data-testid="last-heartbeat">
          {h ? (
            <>
              <Badge tone={h.outcome === 'accepted' ? 'ok' : 'warn'}>{HEARTBEAT_TEXT[h.outcome] ?? h.outcome}</Badge>{' '}
              #{h.sequence} at {new Date(h.at_ms).toLocaleTimeString()}
              {h.error && <span className="muted small"> {h.error}</span>}
            </>
          ) : (
            'none yet'
          )}
        </dd></div>
      </dl>
      <p className="muted small">Choosing Local leaves the control plane: its key is no longer trusted here.</p>
    </div>
  );
}

// ------------------------------------------------------------------ network

const DAYS = ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday'];
const pad2 = (h: number) => String(h).padStart(2, '0');

/** The policy as the form edits it: text as typed, prices in credits per 1,000 tokens. */
export interface PolicyDraft {
  windows: { days: boolean[]; start: number; end: number }[];
  maxTokensPerDay: string;
  maxConcurrent: string;
  models: string[];
  promptPer1k: string;
  completionPer1k: string;
  perRequest: string;
}

export function draftFromPolicy(p: NetworkPolicy): PolicyDraft {
  return {
    // A window with no days means every day: shown with all seven checked.
    windows: p.schedule.map((w) => ({ days: DAYS.map((_, d) => w.days.length === 0 || w.days.includes(d)), start: w.start_hour, end: w.end_hour })),
    maxTokensPerDay: p.max_tokens_per_day === null ? '' : String(p.max_tokens_per_day),
    maxConcurrent: String(p.max_concurrent),
    models: [...p.models],
    promptPer1k: microsPer1mToCreditsPer1k(p.price_floor.prompt_per_1m_tokens),
    completionPer1k: microsPer1mToCreditsPer1k(p.price_floor.completion_per_1m_tokens),
    perRequest: formatScaled(p.price_floor.per_request, 6),
  };
}

export type PolicyErrors = Partial<Record<'schedule' | 'maxTokensPerDay' | 'maxConcurrent' | 'models' | 'promptPer1k' | 'completionPer1k' | 'perRequest', string>>;

const WHOLE = /^\s*\d+\s*$/;
const PRICE_HINT = 'a price of 0 or more credits, with at most 9 decimals';

/**
 * Checks the form and builds the PUT /api/network body: integers only (prices converted
 * digit by digit, never through floating point), or the errors by field.
 */
export function policyFromDraft(d: PolicyDraft): { policy: NetworkPolicy | null; errors: PolicyErrors } {
  const errors: PolicyErrors = {};
  if (d.windows.length > 32) errors.schedule = 'At most 32 time windows.';
  d.windows.forEach((w, i) => {
    if (!errors.schedule && !w.days.some(Boolean)) errors.schedule = `Window ${i + 1}: tick at least one day.`;
    if (!errors.schedule && !(w.end > w.start)) errors.schedule = `Window ${i + 1}: “until” must be later than “from” (UTC, within one day; split a night into two windows).`;
  });
  let maxTokens: number | null = null;
  if (d.maxTokensPerDay.trim() !== '') {
    const n = WHOLE.test(d.maxTokensPerDay) ? Number(d.maxTokensPerDay) : NaN;
    if (!Number.isSafeInteger(n) || n < 1) errors.maxTokensPerDay = 'Enter a whole number of tokens (1 or more), or leave it empty for no limit.';
    else maxTokens = n;
  }
  const conc = WHOLE.test(d.maxConcurrent) ? Number(d.maxConcurrent) : NaN;
  if (!Number.isInteger(conc) || conc < 1 || conc > 1024) errors.maxConcurrent = 'Enter a whole number from 1 to 1024.';
  if (d.models.length > 16) errors.models = 'At most 16 models.';
  const prompt = creditsPer1kToMicrosPer1m(d.promptPer1k);
  if (prompt === null) errors.promptPer1k = `Enter ${PRICE_HINT}.`;
  const completion = creditsPer1kToMicrosPer1m(d.completionPer1k);
  if (completion === null) errors.completionPer1k = `Enter ${PRICE_HINT}.`;
  const perRequest = creditsToMicros(d.perRequest);
  if (perRequest === null) errors.perRequest = 'Enter a price of 0 or more credits, with at most 6 decimals.';
  if (Object.keys(errors).length > 0 || prompt === null || completion === null || perRequest === null) return { policy: null, errors };
  return {
    policy: {
      schedule: d.windows.map((w) => ({
        days: w.days.every(Boolean) ? [] : w.days.flatMap((on, day) => (on ? [day] : [])),
        start_hour: w.start,
        end_hour: w.end,
      })),
      max_tokens_per_day: maxTokens,
      max_concurrent: conc,
      models: [...d.models],
      price_floor: { prompt_per_1m_tokens: prompt, completion_per_1m_tokens: completion, per_request: perRequest },
    },
    errors,
  };
}

/** The tunnel's state in words: connected to which gateway since when, or down and why. */
export function TunnelLine({ t }: { t: TunnelStatus }) {
  const since = t.since_ms ? new Date(t.since_ms).toLocaleString() : undefined;
  switch (t.state) {
    case 'connected':
      return <><Badge tone="ok">Connected</Badge> to gateway <span className="mono">{t.gateway_id ?? '?'}</span>{since && <> since {since}</>}</>;
    case 'connecting':
      return <><Badge tone="warn">Connecting</Badge> to the gateway…</>;
    case 'down':
      return <><Badge tone="bad">Down</Badge>{since && <> since {since}</>}{t.error && <>: <span className="small">{t.error}</span></>} <span className="muted small">(retrying)</span></>;
    default:
      return <><Badge tone="muted">Off</Badge> <span className="muted small">The tunnel opens when Network mode is on.</span></>;
  }
}

/**
 * Network mode: the tunnel's state, today's network requests and earnings, and the owner's
 * policy (schedule in UTC, daily tokens, share of slots, models, price floor), saved with
 * PUT /api/network.
 */
export function NetworkPanel({ api, initial, active, notSelectable, onSaved }: {
  api: Api;
  initial: NetworkInfo;
  /** The node is in network mode: the tunnel and today's numbers refresh every few seconds. */
  active: boolean;
  /** The API's reason when network mode cannot be chosen now. */
  notSelectable?: string;
  onSaved?: () => void;
}) {
  const [info, setInfo] = useState(initial);
  const [draft, setDraft] = useState(() => draftFromPolicy(initial.policy));
  const [errors, setErrors] = useState<PolicyErrors>({});
  const [saveError, setSaveError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);
  const [busy, setBusy] = useState(false);
  const node = useLoad(() => api.node(), [api]);
  useEffect(() => setInfo(initial), [initial]);
  useEffect(() => {
    if (!active) return;
    const t = window.setInterval(() => {
      if (document.visibilityState !== 'visible') return;
      api.network().then(setInfo, () => {});
    }, 3000);
    return () => window.clearInterval(t);
  }, [api, active]);

  // Served models (from /api/node), plus any the saved policy names that are not served now.
  const served = (node.data?.models ?? []).map((m) => m.id);
  const modelChoices = [...new Set([...served, ...info.models, ...draft.models])];
  const edit = (patch: Partial<PolicyDraft>) => { setDraft((d) => ({ ...d, ...patch })); setSaved(false); };
  const editWindow = (i: number, patch: Partial<PolicyDraft['windows'][number]>) =>
    edit({ windows: draft.windows.map((w, j) => (j === i ? { ...w, ...patch } : w)) });
  const stored = (text: string) => {
    const v = creditsPer1kToMicrosPer1m(text);
    return v === null ? undefined : `Stored as ${v} micro-credits per 1M tokens.`;
  };
  const storedMicros = (text: string) => {
    const v = creditsToMicros(text);
    return v === null ? undefined : `Stored as ${v} micro-credit${v === 1 ? '' : 's'}.`;
  };

  async function save(e: FormEvent) {
    e.preventDefault();
    setSaveError(null);
    setSaved(false);
    const { policy, errors: found } = policyFromDraft(draft);
    setErrors(found);
    if (!policy) return;
    setBusy(true);
    try {
      const n = await api.setNetwork(policy);
      setInfo(n);
      setDraft(draftFromPolicy(n.policy));
      setSaved(true);
      onSaved?.();
    } catch (err) {
      setSaveError(err);
    } finally {
      setBusy(false);
    }
  }

  const invalid = (k: keyof PolicyErrors) => (errors[k] ? { 'aria-invalid': true as const, 'aria-describedby': `nw-${k}-error` } : {});
  const fieldError = (k: keyof PolicyErrors) => (errors[k] ? <p className="field-error" id={`nw-${k}-error`}>{errors[k]}</p> : null);
  return (
    <div className="card" data-testid="network-panel">
      <h2>Network</h2>
      {notSelectable && (
        <div className="notice notice-warn" role="status" data-testid="network-reason">
          <strong className="notice-title">Network mode cannot be chosen yet</strong>
          <p>{notSelectable}</p>
        </div>
      )}
      <dl className="facts">
        <div><dt>Gateway tunnel</dt><dd data-testid="tunnel-state"><TunnelLine t={info.tunnel} /></dd></div>
        <div><dt>Offered now</dt><dd>{info.models.length ? info.models.join(', ') : 'no model'} · up to {info.offered_concurrency} at once</dd></div>
        <div><dt>Today (UTC)</dt>
          <dd data-testid="network-today">
            {info.today.requests} {info.today.requests === 1 ? 'request' : 'requests'} · {info.today.tokens} tokens · <b>{formatCredits(info.today.earned_micro_credits)}</b> credits earned
          </dd></div>
      </dl>

      <form className="form network-form" onSubmit={save} noValidate aria-labelledby="nw-policy-h">
        <h3 id="nw-policy-h">Network policy</h3>
        <fieldset className="field" {...(errors.schedule ? { 'aria-describedby': 'nw-schedule-error' } : {})}>
          <legend>When to serve (all times UTC)</legend>
          <p className="field-hint">
            Hours are in UTC, not your local time{draft.windows.length === 0 ? '. No window: network requests are served at any hour, every day.' : '. Requests are served inside any window.'}
          </p>
          {draft.windows.map((w, i) => (
            <fieldset key={i} className="window" data-testid="schedule-window">
              <legend>Window {i + 1}</legend>
              <div className="days">
                {DAYS.map((day, d) => (
                  <label key={day} className="check">
                    <input type="checkbox" checked={w.days[d] ?? false} onChange={(e) => editWindow(i, { days: w.days.map((on, k) => (k === d ? e.target.checked : on)) })} />
                    <span aria-hidden="true">{day.slice(0, 3)}</span><span className="sr-only">{day}</span>
                  </label>
                ))}
              </div>
              <div className="hours">
                <Field label="From (UTC)" htmlFor={`nw-w${i}-start`}>
                  <select id={`nw-w${i}-start`} value={w.start} onChange={(e) => editWindow(i, { start: Number(e.target.value) })}>
                    {Array.from({ length: 24 }, (_, h) => <option key={h} value={h}>{pad2(h)}:00 UTC</option>)}
                  </select>
                </Field>
                <Field label="Until (UTC)" htmlFor={`nw-w${i}-end`}>
                  <select id={`nw-w${i}-end`} value={w.end} onChange={(e) => editWindow(i, { end: Number(e.target.value) })}>
                    {Array.from({ length: 24 }, (_, h) => <option key={h + 1} value={h + 1}>{h + 1 === 24 ? '24:00 (midnight)' : `${pad2(h + 1)}:00`} UTC</option>)}
                  </select>
                </Field>
                <button type="button" className="btn btn-small btn-danger-quiet" aria-label={`Remove window ${i + 1}`}
                  onClick={() => edit({ windows: draft.windows.filter((_, j) => j !== i) })}>Remove</button>
              </div>
            </fieldset>
          ))}
          {fieldError('schedule')}
          <div>
            <button type="button" className="btn btn-small" disabled={draft.windows.length >= 32}
              onClick={() => edit({ windows: [...draft.windows, { days: DAYS.map((_, d) => d < 5), start: 9, end: 17 }] })}>Add a time window</button>
          </div>
        </fieldset>

        <div className="grid grid-2">
          <Field label="Max tokens per day" htmlFor="nw-max-tokens" hint="Prompt and completion tokens served to the network per UTC day. Empty: no limit.">
            <input id="nw-max-tokens" inputMode="numeric" value={draft.maxTokensPerDay} placeholder="No limit"
              onChange={(e) => edit({ maxTokensPerDay: e.target.value })} {...invalid('maxTokensPerDay')} />
          </Field>
          <Field label="Max concurrent network requests" htmlFor="nw-max-concurrent"
            hint={<>One slot always stays free for your local keys, so the node offers at most its slots minus one: <b data-testid="offered-concurrency">{info.offered_concurrency}</b> at once now.</>}>
            <input id="nw-max-concurrent" inputMode="numeric" value={draft.maxConcurrent}
              onChange={(e) => edit({ maxConcurrent: e.target.value })} {...invalid('maxConcurrent')} />
          </Field>
        </div>
        {fieldError('maxTokensPerDay')}
        {fieldError('maxConcurrent')}

        <fieldset className="field">
          <legend>Models offered to the network</legend>
          {modelChoices.length === 0 && <p className="muted small">This node serves no model yet.</p>}
          {modelChoices.map((m) => (
            <label key={m} className="check">
              <input type="checkbox" checked={draft.models.includes(m)}
                onChange={(e) => edit({ models: e.target.checked ? [...draft.models, m] : draft.models.filter((x) => x !== m) })} />
              <span className="mono">{m}</span>{!served.includes(m) && node.data ? <span className="muted small"> (not served now)</span> : null}
            </label>
          ))}
          <p className="field-hint">None ticked: every model this node serves.</p>
          {fieldError('models')}
        </fieldset>

        <fieldset className="field">
          <legend>Price floor (credits)</legend>
          <p className="field-hint">Requests paying less are refused. Prices are per 1,000 tokens; the node stores them as whole micro-credits per 1M tokens (1 credit = 1,000,000 micro-credits).</p>
          <div className="grid grid-3 prices">
            <Field label="Prompt, per 1,000 tokens" htmlFor="nw-prompt" hint={errors.promptPer1k ? undefined : stored(draft.promptPer1k)}>
              <input id="nw-prompt" inputMode="decimal" value={draft.promptPer1k} onChange={(e) => edit({ promptPer1k: e.target.value })} {...invalid('promptPer1k')} />
            </Field>
            <Field label="Completion, per 1,000 tokens" htmlFor="nw-completion" hint={errors.completionPer1k ? undefined : stored(draft.completionPer1k)}>
              <input id="nw-completion" inputMode="decimal" value={draft.completionPer1k} onChange={(e) => edit({ completionPer1k: e.target.value })} {...invalid('completionPer1k')} />
            </Field>
            <Field label="Per request" htmlFor="nw-per-request" hint={errors.perRequest ? undefined : storedMicros(draft.perRequest)}>
              <input id="nw-per-request" inputMode="decimal" value={draft.perRequest} onChange={(e) => edit({ perRequest: e.target.value })} {...invalid('perRequest')} />
            </Field>
          </div>
          {fieldError('promptPer1k')}
          {fieldError('completionPer1k')}
          {fieldError('perRequest')}
        </fieldset>

        <ErrorNotice error={saveError} />
        {saved && <Notice kind="ok" title="Network policy saved">New requests are admitted under it at once; the gateway learns a new share or model list when the tunnel next connects.</Notice>}
        <div className="actions">
          <button type="submit" className="btn btn-primary" disabled={busy}>{busy ? 'Saving…' : 'Save network policy'}</button>
        </div>
      </form>
    </div>
  );
}

const JOB_NAMES: Record<string, string> = {
  run_benchmark: 'Run the benchmark',
  build_support_bundle: 'Send a support bundle (redacted: no keys, prompts or paths)',
  install_model_profile: 'Install a model',
  remove_model_profile: 'Remove a model',
  restart_runtime: 'Restart the runtime',
  change_mode: 'Change the operating mode',
  rotate_issuer_key: "Move to the control plane's new job-signing key",
  update: 'Install a signed B3IQ update',
};

/** Jobs the control plane sent: the ones waiting for the owner with Approve / Reject, and the trail. */
export function RemoteJobs({ api }: { api: Api }) {
  const jobs = useLoad(() => api.jobs(), [api]);
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const remote = (jobs.data ?? []).filter((j) => j.issuer === 'remote');
  const waiting = remote.filter((j) => j.state === 'awaiting_approval');
  async function decide(id: string, approve: boolean) {
    setBusy(id);
    setError(null);
    try {
      if (approve) await api.approveJob(id);
      else await api.rejectJob(id);
      await jobs.reload();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(null);
    }
  }
  return (
    <div className="card" data-testid="remote-jobs">
      <h2>Remote jobs</h2>
      <ErrorNotice error={jobs.error ?? error} />
      {waiting.length === 0 ? (
        <p className="muted">Nothing waits for your approval.</p>
      ) : (
        <ul className="plain">
          {waiting.map((j) => (
            <li key={j.id} data-testid="pending-job">
              <b>{JOB_NAMES[j.kind] ?? j.kind}</b>
              {j.expires_at_ms ? <span className="muted small"> · expires {new Date(j.expires_at_ms).toLocaleTimeString()}</span> : null}{' '}
              <button type="button" disabled={busy !== null} onClick={() => void decide(j.id, true)}>Approve</button>{' '}
              <button type="button" className="secondary" disabled={busy !== null} onClick={() => void decide(j.id, false)}>Reject</button>
            </li>
          ))}
        </ul>
      )}
      {remote.length > 0 && (
        <table className="table" data-testid="remote-trail">
          <thead><tr><th>Job</th><th>State</th><th>When</th></tr></thead>
          <tbody>
            {remote.map((j) => (
              <tr key={j.id}><td>{j.kind}</td><td>{j.state.replace(/_/g, ' ')}</td><td>{j.updated_at ? new Date(j.updated_at * 1000).toLocaleString() : ''}</td></tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

async function fetchMode(api: Api, m: string): Promise<boolean> {
  const current = await api.mode();
  if (current.mode === m) return false;
  await api.setMode(m);
  return true;
}

// ------------------------------------------------------------------ dashboard

/** The export format `b3iqd receipts verify FILE` reads (`b3iq-receipts/v1`), holding one receipt. */
export function receiptExport(r: Receipt, nodeId: string | undefined): string {
  return JSON.stringify({ format: 'b3iq-receipts/v1', node_id: nodeId, node_public_key: r.node_public_key, receipts: [r] }, null, 2);
}

function ReceiptRow({ r, api, nodeId }: { r: Receipt; api: Api; nodeId?: string }) {
  const [open, setOpen] = useState(false);
  const [full, setFull] = useState<Receipt | null>(null);
  const [href, setHref] = useState<string | null>(null);
  useEffect(() => () => { if (href) URL.revokeObjectURL(href); }, [href]);
  async function toggle() {
    if (!open && !full) {
      const f = await api.receipt(r.id).catch(() => r);
      setFull(f);
      setHref(URL.createObjectURL(new Blob([receiptExport(f, nodeId)], { type: 'application/json' })));
    }
    setOpen(!open);
  }
  const shown = full ?? r;
  return (
    <>
      <tr>
        <td className="nowrap">{formatTime(r.created_at)}</td>
        <td>{r.model ?? '—'}</td>
        <td className="num">{r.prompt_tokens} + {r.completion_tokens}</td>
        <td className="num">{r.duration_ms !== undefined ? `${r.duration_ms} ms` : '—'}</td>
        <td>{r.valid === true ? <Badge tone="ok">Signature valid</Badge> : r.valid === false ? <Badge tone="bad">Invalid</Badge> : <Badge tone="muted">Unchecked</Badge>}</td>
        <td className="right"><button type="button" className="btn btn-small" aria-expanded={open} onClick={() => void toggle()}>{open ? 'Hide' : 'Details'}</button></td>
      </tr>
      {open && (
        <tr className="detail-row">
          <td colSpan={6}>
            <dl className="facts">
              <div><dt>Receipt</dt><dd className="mono wrap">{shown.id}</dd></div>
              <div><dt>Request</dt><dd className="mono wrap">{shown.request_id ?? '—'}</dd></div>
              <div><dt>Key</dt><dd className="mono">{shown.key_id ?? '—'}</dd></div>
              <div><dt>Node public key</dt><dd className="mono wrap">{shown.node_public_key ?? '—'}</dd></div>
              <div><dt>Signed bytes</dt><dd className="mono wrap small">{shown.signed ?? '—'}</dd></div>
            </dl>
            <p className="small">
              {href && <a href={href} download={`b3iq-receipt-${shown.id}.json`}>Download receipt JSON</a>}
              {' '}and verify it offline on any machine with <code>b3iqd receipts verify b3iq-receipt-{shown.id}.json</code>.
            </p>
          </td>
        </tr>
      )}
    </>
  );
}

function GrantsCard({ api }: { api: Api }) {
  const grants = useLoad(() => api.grants(), [api]);
  const [ttl, setTtl] = useState('3600');
  const [note, setNote] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [secret, setSecret] = useState<string | null>(null);
  async function create(e: FormEvent) {
    e.preventDefault();
    setError(null);
    try {
      const r = await api.createGrant(Number(ttl), note.trim());
      setSecret(r.secret);
      setNote('');
      await grants.reload();
    } catch (err) {
      setError(err);
    }
  }
  async function revoke(g: SupportGrant) {
    try {
      await api.revokeGrant(g.id);
    } catch (err) {
      setError(err);
    }
    await grants.reload();
  }
  return (
    <div className="card">
      <h2>Support access</h2>
      <p className="muted small">A support grant lets someone you choose download a redacted diagnostics bundle (no keys, prompts or outputs) until it expires. It opens nothing else.</p>
      {secret ? (
        <div className="reveal">
          <p><b>Send this to your support contact now.</b> It is shown only once.</p>
          <div className="secret-row"><code className="secret">{secret}</code><CopyButton text={secret} label="Copy grant" /></div>
          <div className="actions actions-end"><button type="button" className="btn" onClick={() => setSecret(null)}>Done</button></div>
        </div>
      ) : (
        <form className="inline-form" onSubmit={create}>
          <Field label="Note" htmlFor="grant-note"><input id="grant-note" value={note} onChange={(e) => setNote(e.target.value)} maxLength={200} placeholder="Ticket 1234" /></Field>
          <Field label="Valid for" htmlFor="grant-ttl">
            <select id="grant-ttl" value={ttl} onChange={(e) => setTtl(e.target.value)}>
              <option value="3600">1 hour</option>
              <option value="86400">1 day</option>
              <option value="604800">7 days</option>
            </select>
          </Field>
          <button type="submit" className="btn">Create grant</button>
        </form>
      )}
      <ErrorNotice error={error ?? grants.error} />
      {grants.data && grants.data.length > 0 && (
        <div className="table-wrap">
          <table className="table">
            <thead><tr><th scope="col">Grant</th><th scope="col">Note</th><th scope="col">Expires</th><th scope="col"><span className="sr-only">Actions</span></th></tr></thead>
            <tbody>
              {grants.data.map((g) => (
                <tr key={g.id}><td className="mono">{g.prefix ?? g.id}</td><td>{g.note || '—'}</td><td>{formatTime(g.expires_at)}</td>
                  <td className="right"><RevokeButton label={g.note || g.id} onRevoke={() => revoke(g)} /></td></tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

function formatUptime(s: number | undefined): string {
  if (s === undefined) return '—';
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/**
 * "Update available": shown when the node's release repository has a newer signed release,
 * with its release notes' summary; Install runs the owner's `update` job (verified against the
 * node's pinned root, then the node restarts on the new binary).
 */
export function UpdateCard({ api }: { api: Api }) {
  const u = useLoad(() => api.update(), [api]);
  const [busy, setBusy] = useState(false);
  const [started, setStarted] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const s = u.data;
  if (!s || !s.configured || (!s.available && !s.error)) return null;
  async function install(version: string) {
    setBusy(true);
    setError(null);
    try {
      await api.installUpdate(version);
      setStarted(true);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }
  if (!s.available) {
    return (
      <div className="card" data-testid="update-card">
        <h2>Updates</h2>
        <p className="muted">Could not check for updates: {s.error}</p>
      </div>
    );
  }
  return (
    <div className="card" data-testid="update-card" aria-live="polite">
      <div className="card-head">
        <h2>Update available: B3IQ {s.latest}</h2>
        <Badge tone="ok">Signed</Badge>
      </div>
      <p className="muted small">You run {s.current}. The release is verified against the signing keys this node trusts before it is installed; the old version is kept for rollback.</p>
      {s.notes ? <p data-testid="update-notes">{s.notes}</p> : null}
      <ErrorNotice error={error} />
      {started ? (
        <p>Installing {s.latest}. The node restarts on the new version when it is in place.</p>
      ) : (
        <div className="actions"><button type="button" className="btn btn-primary" disabled={busy} onClick={() => void install(s.latest ?? '')}>Install {s.latest}</button></div>
      )}
    </div>
  );
}

export function DashboardScreen({ api }: ScreenProps) {
  const node = useLoad(() => api.node(), [api]);
  const health = useLoad(() => api.health(), [api]);
  const usage = useLoad(() => api.usage('hour'), [api]);
  const receipts = useLoad(() => api.receipts(10), [api]);
  const audit = useLoad(() => api.audit(30), [api]);
  // Keep health, counters and the chart current while the dashboard is open (data stays on
  // screen while reloading, so nothing jumps).
  useEffect(() => {
    const t = window.setInterval(() => {
      if (document.visibilityState !== 'visible') return;
      void health.reload();
      void node.reload();
      void usage.reload();
    }, 15_000);
    return () => window.clearInterval(t);
  }, [health.reload, node.reload, usage.reload]);
  const n = node.data;
  const loaded = n?.models.find((m) => m.loaded);
  return (
    <section className="screen screen-wide" aria-labelledby="dash-h">
      <p className="eyebrow">Owner dashboard</p>
      <h1 id="dash-h">Your node</h1>
      <ErrorNotice error={node.error} />
      <div className="tiles">
        <div className="tile"><span className="tile-label">Health</span><span className="tile-value">{health.data === undefined ? '…' : health.data ? <Badge tone="ok">Healthy</Badge> : <Badge tone="bad">Not responding</Badge>}</span></div>
        <div className="tile"><span className="tile-label">Model</span><span className="tile-value small-value">{loaded?.id ?? (n ? 'None loaded' : '…')}</span></div>
        <div className="tile"><span className="tile-label">Mode</span><span className="tile-value">{n ? (MODE_TEXT[n.mode]?.title ?? n.mode) : '…'}</span></div>
        <div className="tile"><span className="tile-label">Uptime</span><span className="tile-value">{formatUptime(n?.uptime_s)}</span></div>
        <div className="tile" data-testid="backend-tile"><span className="tile-label">Backend</span><span className="tile-value small-value" title={n?.runtime.backend}>{n ? (n.runtime.kind ? (BACKEND_TEXT[n.runtime.kind] ?? n.runtime.kind) : 'None') : '…'}</span></div>
        <div className="tile"><span className="tile-label">Queue</span><span className="tile-value">{n?.runtime.queue_depth ?? '…'}{n?.runtime.max_queue !== undefined ? ` / ${n.runtime.max_queue}` : ''}</span></div>
        <div className="tile"><span className="tile-label">Receipts</span><span className="tile-value">{n?.receipts_stored ?? '…'}</span></div>
      </div>
      <UpdateCard api={api} />
      <div className="card">
        <div className="card-head">
          <h2>Requests and tokens, last 24 hours</h2>
          <button type="button" className="btn btn-small" onClick={() => { void usage.reload(); void receipts.reload(); void node.reload(); void audit.reload(); }}>Refresh</button>
        </div>
        <ErrorNotice error={usage.error} />
        <UsageChart points={usage.data?.series ?? []} bucketSeconds={3600} buckets={24} now={Math.floor(Date.now() / 1000)} />
      </div>
      <div className="card">
        <h2>Recent receipts</h2>
        <p className="muted small">Every answered request is signed by this node’s key.</p>
        <ErrorNotice error={receipts.error} />
        {receipts.data && receipts.data.length === 0 && <p className="muted">No requests yet.</p>}
        {receipts.data && receipts.data.length > 0 && (
          <div className="table-wrap">
            <table className="table" data-testid="receipts-table">
              <thead><tr><th scope="col">Time</th><th scope="col">Model</th><th scope="col" className="num">Tokens in + out</th><th scope="col" className="num">Duration</th><th scope="col">Signature</th><th scope="col"><span className="sr-only">Details</span></th></tr></thead>
              <tbody>{receipts.data.map((r) => <ReceiptRow key={r.id} r={r} api={api} nodeId={n?.node_id} />)}</tbody>
            </table>
          </div>
        )}
      </div>
      <div className="grid grid-2">
        <div className="card">
          <h2>Audit log</h2>
          <ErrorNotice error={audit.error} />
          <ol className="audit" data-testid="audit-log" tabIndex={0} aria-label="Audit events, newest first">
            {(audit.data ?? []).map((ev) => (
              <li key={ev.id}>
                <span className="audit-time">{formatTime(ev.at)}</span>
                <span className="audit-action"><b>{ev.action}</b> {ev.target && <span className="mono small">{ev.target}</span>}</span>
                <span className="muted small">{ev.actor}{ev.outcome ? ` · ${ev.outcome}` : ''}{ev.detail ? ` · ${ev.detail}` : ''}</span>
              </li>
            ))}
          </ol>
          {audit.data && audit.data.length === 0 && <p className="muted">No events yet.</p>}
        </div>
        <GrantsCard api={api} />
      </div>
      {n && (
        <p className="muted small">Node <span className="mono">{n.node_id}</span>{n.version ? ` · B3IQ ${n.version}` : ''}{n.listen ? ` · listening on ${n.listen}` : ''}</p>
      )}
    </section>
  );
}
