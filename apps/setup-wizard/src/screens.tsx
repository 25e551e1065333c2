// Owner screens: hardware review, model, keys, endpoint, mode, dashboard.
import { useEffect, useRef, useState, type FormEvent } from 'react';
import { ApiError, jobFraction, type Api, type ApiKey, type Job, type ChatResult, type ModelProfile, type Receipt, type SupportGrant, type ManagedInfo } from './api';
import { UsageChart } from './chart';
import { useLoad } from './hooks';
import { Badge, CodeBlock, CopyButton, ErrorNotice, Field, ProgressBar, Spinner } from './ui';
import { formatBytes, formatTime } from './util';

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
  const alive = useRef(true);
  useEffect(() => () => { alive.current = false; }, []);

  const profiles = models.data?.profiles ?? [];
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

  async function ask(e: FormEvent) {
    e.preventDefault();
    setAsking(true);
    setAskError(null);
    try {
      const r = await api.playground(prompt, 64);
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
              To serve this one, restart the node with <code>b3iqd serve --model {profile.id}</code> (this build cannot switch models while running).
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
    what: 'Serve paid jobs for others within your schedule and limits, settled on chain against signed receipts.',
    shares: 'Everything in Managed, plus signed receipts (hashes, token counts, timings) and your stake. Other people’s prompts run on this machine.',
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

const JOB_NAMES: Record<string, string> = {
  run_benchmark: 'Run the benchmark',
  build_support_bundle: 'Send a support bundle (redacted: no keys, prompts or paths)',
  install_model_profile: 'Install a model',
  remove_model_profile: 'Remove a model',
  restart_runtime: 'Restart the runtime',
  change_mode: 'Change the operating mode',
  rotate_issuer_key: "Move to the control plane's new job-signing key",
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
        <div className="tile"><span className="tile-label">Queue</span><span className="tile-value">{n?.runtime.queue_depth ?? '…'}{n?.runtime.max_queue !== undefined ? ` / ${n.runtime.max_queue}` : ''}</span></div>
        <div className="tile"><span className="tile-label">Receipts</span><span className="tile-value">{n?.receipts_stored ?? '…'}</span></div>
      </div>
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
