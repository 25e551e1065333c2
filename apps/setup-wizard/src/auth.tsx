// First-run screens: "node found", claim (owner account), and sign-in for later visits.
import { useState, type FormEvent } from 'react';
import { ApiError, type Api, type SetupStatus, type Transport } from './api';
import { ErrorNotice, Field, Notice } from './ui';
import { formatBytes, formatTime, humanCode, passwordStrength, tokenFromHash } from './util';

export function TokenHelp() {
  return (
    <div className="token-help">
      <p>
        On the machine running B3IQ, open a terminal and run
      </p>
      <pre className="cmd"><code>b3iqd setup --reset</code></pre>
      <p>
        It prints a new one-time setup link (and writes it to <code>~/.b3iq/setup-token</code>).
        Open that link on this computer. Setup links work once and expire; if the node is not claimed yet
        and the link has not expired, opening the original link again also works.
      </p>
    </div>
  );
}

/** The connection facts: encrypted or not, and the certificate fingerprint to compare. */
export function TransportFacts({ transport }: { transport?: Transport }) {
  if (!transport) return null;
  if (transport.tls) {
    return (
      <>
        <div><dt>Connection</dt><dd>Encrypted (TLS, {transport.tls.mode === 'self-signed' ? 'self-signed certificate' : 'provided certificate'})</dd></div>
        <div><dt>Certificate SHA-256</dt><dd className="mono fingerprint" data-testid="tls-fingerprint">{transport.tls.fingerprint_sha256}</dd></div>
      </>
    );
  }
  return <div><dt>Connection</dt><dd>{transport.lan ? 'Not encrypted (plain HTTP on the network)' : 'This computer only (loopback)'}</dd></div>;
}

/** A warning when the node is reachable from the network without TLS. */
export function TransportWarning({ transport }: { transport?: Transport }) {
  if (!transport || !transport.lan || transport.tls) return null;
  return (
    <Notice kind="warn" title="This node is on your network without encryption">
      <p>
        Your password, the sign-in cookie and API keys travel in clear text to {transport.listen ?? 'this node'}.
        Anyone on the same network can read them. Restart the node with TLS:
      </p>
      <pre className="cmd"><code>b3iqd serve --listen {transport.listen ?? '0.0.0.0:7420'} --tls self-signed</code></pre>
      <p>then compare the certificate fingerprint it prints with the one your browser shows.</p>
    </Notice>
  );
}

export function Welcome({ status, hasToken, onContinue }: { status: SetupStatus; hasToken: boolean; onContinue: () => void }) {
  const hw = status.hardware;
  const scan = hw ? `Done · ${hw.cpu_cores ?? '?'} CPU cores, ${formatBytes(hw.memory_total_bytes)} memory, ${hw.gpus.length ? hw.gpus.map((g) => g.name).join(', ') : 'no GPU'}` : 'Scanning…';
  return (
    <section className="screen" aria-labelledby="welcome-h">
      <p className="eyebrow">Node found</p>
      <h1 id="welcome-h">Let’s set up your B3IQ node</h1>
      <div className="node-card">
        <div className="node-code" aria-label="Node code">{humanCode(status.node_id, status.node_code)}</div>
        <dl className="facts">
          <div><dt>Node ID</dt><dd className="mono trunc" title={status.node_id}>{status.node_id || '—'}</dd></div>
          <div><dt>Hardware scan</dt><dd>{scan}</dd></div>
          <div><dt>Owner</dt><dd>{status.claimed ? 'Claimed' : 'Not claimed yet'}</dd></div>
          {status.version && <div><dt>Version</dt><dd>{status.version}</dd></div>}
          {!status.claimed && status.setup_token_expires_at !== null && (
            <div><dt>Setup link valid until</dt><dd>{formatTime(status.setup_token_expires_at)}</dd></div>
          )}
          <TransportFacts transport={status.transport} />
        </dl>
      </div>
      <TransportWarning transport={status.transport} />
      <p className="lead">
        Check that the code above matches the one printed by <code>b3iqd serve</code> on the machine you are setting up.
      </p>
      {status.claimed ? (
        <Notice kind="info" title="This node already has an owner">Sign in with the owner account to continue.</Notice>
      ) : hasToken ? (
        <div className="actions">
          <button type="button" className="btn btn-primary" onClick={onContinue} autoFocus>Claim this node</button>
        </div>
      ) : (
        <Notice kind="warn" title="This page needs a setup link">
          <p>The link you opened has no setup token, or it was already used.</p>
          <TokenHelp />
        </Notice>
      )}
    </section>
  );
}

export function Claim({ api, token, onClaimed, onNewToken }: {
  api: Api;
  token: string;
  onClaimed: (username: string) => void;
  onNewToken: (token: string) => void;
}) {
  const [username, setUsername] = useState('owner');
  const [password, setPassword] = useState('');
  const [confirm, setConfirm] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [tokenBad, setTokenBad] = useState(false);
  const [pasted, setPasted] = useState('');
  const strength = passwordStrength(password, username);
  const mismatch = confirm.length > 0 && confirm !== password;
  const canSubmit = !busy && /^[A-Za-z0-9_.-]{1,64}$/.test(username.trim()) && strength.acceptable && confirm === password;

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (!canSubmit) return;
    setBusy(true);
    setError(null);
    try {
      await api.claim(token, username.trim(), password);
      setPassword('');
      setConfirm('');
      onClaimed(username.trim());
    } catch (err) {
      if (err instanceof ApiError && err.isTokenProblem) {
        setTokenBad(true);
      }
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  function usePasted(e: FormEvent) {
    e.preventDefault();
    const t = tokenFromHash(pasted.slice(pasted.indexOf('#'))) ?? (pasted.includes('#') ? undefined : pasted.trim());
    if (t) {
      setPasted('');
      setTokenBad(false);
      setError(null);
      onNewToken(t);
    }
  }

  return (
    <section className="screen" aria-labelledby="claim-h">
      <p className="eyebrow">Step 2 · Claim</p>
      <h1 id="claim-h">Create the owner account</h1>
      <p className="lead">This account controls the node. The password never leaves this machine’s network.</p>
      {tokenBad ? (
        <Notice kind="error" title="This setup link has expired or was already used">
          <p>{error instanceof Error ? error.message : ''}</p>
          <TokenHelp />
          <form className="inline-form" onSubmit={usePasted}>
            <Field label="Or paste the new setup link" htmlFor="new-link">
              <input id="new-link" type="text" autoComplete="off" spellCheck={false} value={pasted} onChange={(e) => setPasted(e.target.value)} />
            </Field>
            <button type="submit" className="btn" disabled={!pasted.trim()}>Use this link</button>
          </form>
        </Notice>
      ) : (
        <ErrorNotice error={error} />
      )}
      <form className="form" onSubmit={submit} noValidate>
        <Field label="Owner username" htmlFor="username" hint="Letters, digits, _ . - (up to 64).">
          <input id="username" name="username" autoComplete="username" value={username} onChange={(e) => setUsername(e.target.value)} required maxLength={64} />
        </Field>
        <Field label="Password" htmlFor="password" hint={
          <span className={`strength strength-${strength.score}`} aria-live="polite">
            <span className="strength-meter" aria-hidden="true"><i /><i /><i /><i /></span>
            <span><b>{strength.label}.</b> {strength.hint}</span>
          </span>
        }>
          <input id="password" name="password" type="password" autoComplete="new-password" value={password}
            onChange={(e) => setPassword(e.target.value)} aria-describedby="password-hint" required minLength={10} />
        </Field>
        <Field label="Confirm password" htmlFor="confirm" hint={mismatch ? 'The passwords do not match.' : ' '}>
          <input id="confirm" name="confirm" type="password" autoComplete="new-password" value={confirm}
            onChange={(e) => setConfirm(e.target.value)} aria-invalid={mismatch} aria-describedby="confirm-hint" required />
        </Field>
        <div className="actions">
          <button type="submit" className="btn btn-primary" disabled={!canSubmit}>{busy ? 'Claiming…' : 'Claim node'}</button>
        </div>
      </form>
    </section>
  );
}

export function Login({ api, onSignedIn }: { api: Api; onSignedIn: () => void }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api.login(username.trim(), password);
      setPassword('');
      onSignedIn();
    } catch (err) {
      setError(err instanceof ApiError && err.code === 'bad_credentials'
        ? new Error('Wrong username or password. Check both and try again.')
        : err instanceof ApiError && err.code === 'login_backoff'
          ? new Error(`Too many wrong attempts. Wait ${err.retryAfter ?? 'a few'} seconds, then try again.`)
          : err);
      setPassword('');
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="screen screen-narrow" aria-labelledby="login-h">
      <p className="eyebrow">Owner sign-in</p>
      <h1 id="login-h">Sign in to your node</h1>
      <ErrorNotice error={error} />
      <form className="form" onSubmit={submit}>
        <Field label="Username" htmlFor="login-username">
          <input id="login-username" name="username" autoComplete="username" value={username} onChange={(e) => setUsername(e.target.value)} required autoFocus />
        </Field>
        <Field label="Password" htmlFor="login-password">
          <input id="login-password" name="password" type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} required />
        </Field>
        <div className="actions">
          <button type="submit" className="btn btn-primary" disabled={busy || !username || !password}>{busy ? 'Signing in…' : 'Sign in'}</button>
        </div>
      </form>
    </section>
  );
}
