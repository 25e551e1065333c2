import { useCallback, useEffect, useState, type FormEvent, type ReactNode } from 'react';
import { api, ApiError, bps, duration, milli, tokens, when, type PublicEpoch, type PublicNode } from './api';
import { verifyInclusion } from './merkle';

const BASE = '/explorer';

// ---- routing (History API; the control plane serves index.html for every page path) --------

function usePath(): [string, (to: string) => void] {
  const [path, setPath] = useState(() => location.pathname);
  useEffect(() => {
    const on = () => setPath(location.pathname);
    window.addEventListener('popstate', on);
    return () => window.removeEventListener('popstate', on);
  }, []);
  const go = useCallback((to: string) => {
    history.pushState(null, '', to);
    setPath(new URL(to, location.href).pathname);
    window.scrollTo(0, 0);
  }, []);
  return [path, go];
}

let navigate: (to: string) => void = () => {};

function Link({ to, children }: { to: string; children: ReactNode }) {
  return (
    <a
      href={to}
      onClick={(e) => {
        if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
        e.preventDefault();
        navigate(to);
      }}
    >
      {children}
    </a>
  );
}

// ---- data loading with loading, error and empty states ------------------------------------

type Load<T> = { state: 'loading' } | { state: 'error'; error: ApiError } | { state: 'ok'; data: T };

function useLoad<T>(fn: () => Promise<T>, key: string): [Load<T>, () => void] {
  const [s, set] = useState<Load<T>>({ state: 'loading' });
  const [n, setN] = useState(0);
  useEffect(() => {
    let live = true;
    set({ state: 'loading' });
    fn().then(
      (data) => live && set({ state: 'ok', data }),
      (error: unknown) => live && set({ state: 'error', error: error instanceof ApiError ? error : new ApiError(0, String(error)) }),
    );
    return () => {
      live = false;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, n]);
  return [s, () => setN((x) => x + 1)];
}

function Loaded<T>({ load, retry, children }: { load: Load<T>; retry: () => void; children: (d: T) => ReactNode }) {
  if (load.state === 'loading') return <p className="muted" role="status">Loading…</p>;
  if (load.state === 'error')
    return (
      <div className="notice bad" role="alert">
        <p>{load.error.status === 404 ? 'Nothing here: ' : 'Could not load this page: '}{load.error.message}</p>
        <button type="button" onClick={retry}>Retry</button>
      </div>
    );
  return <>{children(load.data)}</>;
}

function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

function Hex({ value }: { value: string | null }) {
  return value === null ? <span className="muted">—</span> : <code className="hex">{value}</code>;
}

function Presence({ p }: { p: string }) {
  return <span className={`pill ${p === 'online' ? 'ok' : p === 'offline' || p === 'never_seen' ? 'warn' : 'bad'}`}>{p.replace('_', ' ')}</span>;
}

// ---- pages -------------------------------------------------------------------------------

function StatusPage() {
  const [load, retry] = useLoad(api.status, 'status');
  return (
    <>
      <h1>Network status</h1>
      <Loaded load={load} retry={retry}>
        {(s) => (
          <>
            <section aria-labelledby="h-nodes" className="cards">
              <h2 id="h-nodes" className="sr-only">Nodes</h2>
              <Stat label="Nodes" value={s.nodes.total} />
              <Stat label="Online" value={s.nodes.online} />
              <Stat label="Offline" value={s.nodes.offline + s.nodes.never_seen} />
              <Stat label="Suspended or revoked" value={s.nodes.suspended + s.nodes.revoked + s.nodes.expired} />
            </section>
            <section aria-labelledby="h-settle" className="cards">
              <h2 id="h-settle" className="sr-only">Settlement</h2>
              <Stat label="Models ready" value={s.models.filter((m) => m.nodes_ready > 0).length} />
              <Stat label="Epochs posted" value={`${s.epochs.posted} of ${s.epochs.epochs}`} />
              <Stat label="Receipts settled" value={s.epochs.receipt_count} />
              <Stat label="Paid out (tokens)" value={tokens(s.epochs.total_payout)} />
            </section>
            <p className="muted">As of {when(s.generated_at_ms)}. {s.epochs.latest_epoch_id !== null ? <>Latest epoch: <Link to={`${BASE}/epochs/${s.epochs.latest_epoch_id}`}>#{s.epochs.latest_epoch_id}</Link>.</> : 'No epoch has closed yet.'}</p>
          </>
        )}
      </Loaded>
    </>
  );
}

function Stat({ label, value }: { label: string; value: ReactNode }) {
  return (
    <div className="card stat">
      <div className="stat-value">{value}</div>
      <div className="stat-label">{label}</div>
    </div>
  );
}

function ModelsPage() {
  const [load, retry] = useLoad(api.status, 'models');
  return (
    <>
      <h1>Models</h1>
      <p className="muted">Models offered by nodes connected now, with route readiness over the last hour.</p>
      <Loaded load={load} retry={retry}>
        {(s) =>
          s.models.length === 0 ? (
            <Empty>No node offers a model right now.</Empty>
          ) : (
            <div className="table-wrap">
              <table>
                <caption className="sr-only">Models and route readiness</caption>
                <thead>
                  <tr><th scope="col">Model</th><th scope="col">Nodes ready</th><th scope="col">Capacity</th><th scope="col">In flight</th><th scope="col">Waiting</th><th scope="col">Median TTFT (ms)</th><th scope="col">Median tokens/s</th><th scope="col">Samples</th></tr>
                </thead>
                <tbody>
                  {s.models.map((m) => (
                    <tr key={m.model}>
                      <th scope="row"><code>{m.model}</code></th>
                      <td>{m.nodes_ready}</td><td>{m.capacity}</td><td>{m.in_flight}</td><td>{m.waiting}</td>
                      <td>{m.median_ttft_ms ?? '—'}</td><td>{milli(m.median_tokens_per_s_milli)}</td><td>{m.samples}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )
        }
      </Loaded>
    </>
  );
}

function NodesPage() {
  const [load, retry] = useLoad(api.nodes, 'nodes');
  return (
    <>
      <h1>Nodes</h1>
      <Loaded load={load} retry={retry}>
        {(d) =>
          d.nodes.length === 0 ? (
            <Empty>No node has enrolled yet.</Empty>
          ) : (
            <div className="table-wrap">
              <table>
                <caption className="sr-only">Nodes by public id</caption>
                <thead>
                  <tr><th scope="col">Node</th><th scope="col">Presence</th><th scope="col">Tier</th><th scope="col">Reputation</th><th scope="col">Availability (24 h)</th><th scope="col">Models</th><th scope="col">Receipts</th></tr>
                </thead>
                <tbody>
                  {d.nodes.map((n) => (
                    <tr key={n.node_id}>
                      <th scope="row"><Link to={`${BASE}/nodes/${n.node_id}`}><code>{n.node_id}</code></Link></th>
                      <td><Presence p={n.presence} /></td><td>{n.tier}</td><td>{bps(n.reputation_bps)}</td><td>{bps(n.availability_24h_bps)}</td>
                      <td>{n.models.length ? n.models.join(', ') : '—'}</td><td>{n.receipt_count}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )
        }
      </Loaded>
    </>
  );
}

function NodePage({ id }: { id: string }) {
  const [load, retry] = useLoad(() => api.node(id), `node:${id}`);
  return (
    <>
      <h1>Node <code className="hex">{id}</code></h1>
      <Loaded load={load} retry={retry}>
        {(n: PublicNode) => (
          <>
            <dl className="facts">
              <Fact k="Presence"><Presence p={n.presence} /></Fact>
              <Fact k="Trust tier">{n.tier}</Fact>
              <Fact k="Reputation">{bps(n.reputation_bps)}</Fact>
              <Fact k="Availability (24 h)">{bps(n.availability_24h_bps)}</Fact>
              <Fact k="Uptime">{duration(n.uptime_s)}</Fact>
              <Fact k="Last seen">{when(n.last_seen_ms)}</Fact>
              <Fact k="Enrolled">{when(n.enrolled_at_ms)}</Fact>
              <Fact k="Software">{n.software_version ?? '—'}</Fact>
              <Fact k="Models offered">{n.models.length ? n.models.map((m) => <code key={m}>{m} </code>) : 'none right now'}</Fact>
              <Fact k="Receipts">{n.receipt_count}</Fact>
            </dl>
            <h2>Benchmark</h2>
            {n.benchmark ? (
              <dl className="facts">
                <Fact k="Generation">{milli(n.benchmark.generated_tokens_per_s_milli)} tokens/s</Fact>
                <Fact k="Prompt">{milli(n.benchmark.prompt_tokens_per_s_milli)} tokens/s</Fact>
                <Fact k="Time to first token">{n.benchmark.ttft_ms} ms</Fact>
                <Fact k="Measured">{when(n.benchmark.measured_at_ms)}</Fact>
              </dl>
            ) : (
              <Empty>No benchmark reported yet.</Empty>
            )}
          </>
        )}
      </Loaded>
    </>
  );
}

function Fact({ k, children }: { k: string; children: ReactNode }) {
  return (
    <div>
      <dt>{k}</dt>
      <dd>{children}</dd>
    </div>
  );
}

function EpochsPage() {
  const [load, retry] = useLoad(api.epochs, 'epochs');
  return (
    <>
      <h1>Epochs</h1>
      <Loaded load={load} retry={retry}>
        {(d) =>
          d.epochs.length === 0 ? (
            <Empty>No settlement epoch has closed yet.</Empty>
          ) : (
            <div className="table-wrap">
              <table>
                <caption className="sr-only">Settlement epochs, newest first</caption>
                <thead>
                  <tr><th scope="col">Epoch</th><th scope="col">Status</th><th scope="col">Receipts</th><th scope="col">Total (tokens)</th><th scope="col">Closed</th><th scope="col">Transaction</th></tr>
                </thead>
                <tbody>
                  {d.epochs.map((e) => (
                    <tr key={e.epoch_id}>
                      <th scope="row"><Link to={`${BASE}/epochs/${e.epoch_id}`}>#{e.epoch_id}</Link></th>
                      <td>{e.status}</td><td>{e.receipt_count ?? e.receipts_assigned}</td><td>{tokens(e.total_payout)}</td>
                      <td>{when(e.closed_at_ms)}</td><td><Hex value={e.tx_hash ? `${e.tx_hash.slice(0, 12)}…` : null} /></td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )
        }
      </Loaded>
    </>
  );
}

function EpochPage({ id }: { id: string }) {
  const [load, retry] = useLoad(() => api.epoch(id), `epoch:${id}`);
  return (
    <>
      <h1>Epoch #{id}</h1>
      <Loaded load={load} retry={retry}>
        {(e: PublicEpoch) => (
          <dl className="facts">
            <Fact k="Status">{e.status}</Fact>
            <Fact k="Receipts committed">{e.receipt_count ?? '—'}</Fact>
            <Fact k="Receipts assigned">{e.receipts_assigned}</Fact>
            <Fact k="Total paid (tokens)">{tokens(e.total_payout)}</Fact>
            <Fact k="Total paid (base units)">{e.total_payout ?? '—'}</Fact>
            <Fact k="Payout leaves">{e.leaf_count ?? '—'}</Fact>
            <Fact k="Window">{when(e.start_ms)} to {when(e.end_ms)}</Fact>
            <Fact k="Closed">{when(e.closed_at_ms)}</Fact>
            <Fact k="Posted">{e.posted_at !== null ? when(e.posted_at * 1000) : '—'}</Fact>
            <Fact k="Receipt root (blake3)"><Hex value={e.receipt_root} /></Fact>
            <Fact k="Payout root (keccak256)"><Hex value={e.payout_root} /></Fact>
            <Fact k="Transaction"><Hex value={e.tx_hash} /></Fact>
          </dl>
        )}
      </Loaded>
    </>
  );
}

type Check =
  | { state: 'idle' }
  | { state: 'checking' }
  | { state: 'yes'; epoch: number; index: number; count: number; root: string; tx: string | null }
  | { state: 'no'; reason: string };

function ReceiptPage() {
  const [id, setId] = useState(() => new URLSearchParams(location.search).get('id') ?? '');
  const [check, setCheck] = useState<Check>({ state: 'idle' });

  const run = useCallback(async (raw: string) => {
    const rid = raw.trim().toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(rid)) {
      setCheck({ state: 'no', reason: 'A receipt id is 64 hexadecimal characters.' });
      return;
    }
    setCheck({ state: 'checking' });
    try {
      const r = await api.receipt(rid);
      if (r.status !== 'included' || !r.proof || r.epoch_id === null) {
        const why: Record<string, string> = {
          pending: 'The receipt is known but is not in an epoch yet.',
          not_posted: `The receipt is in epoch #${r.epoch_id}, which is not on chain yet.`,
          left_out: `The receipt was assigned to epoch #${r.epoch_id} but is not committed by its root.`,
        };
        setCheck({ state: 'no', reason: why[r.status] ?? `Status: ${r.status}.` });
        return;
      }
      // The root must be the epoch's posted root, read separately; the proof is checked here.
      const e = await api.epoch(r.epoch_id);
      if (e.receipt_root !== r.proof.receipt_root) {
        setCheck({ state: 'no', reason: `The proof ends at a root that is not epoch #${r.epoch_id}'s posted receipt root.` });
        return;
      }
      const ok = verifyInclusion(rid, r.proof.leaf_index, r.proof.leaf_count, r.proof.siblings, e.receipt_root);
      setCheck(
        ok
          ? { state: 'yes', epoch: r.epoch_id, index: r.proof.leaf_index, count: r.proof.leaf_count, root: e.receipt_root, tx: e.tx_hash }
          : { state: 'no', reason: 'The proof does not verify against the posted receipt root.' },
      );
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError(0, String(err));
      setCheck({ state: 'no', reason: e.status === 404 ? 'No receipt with this id is known to this network.' : `The check could not run: ${e.message}` });
    }
  }, []);

  useEffect(() => {
    if (id) void run(id);
    // Only a receipt id in the address runs on load.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  const submit = (ev: FormEvent) => {
    ev.preventDefault();
    history.replaceState(null, '', `${BASE}/receipt?id=${encodeURIComponent(id.trim())}`);
    void run(id);
  };

  return (
    <>
      <h1>Receipt inclusion check</h1>
      <p className="muted">
        Paste a receipt id. The explorer fetches its Merkle proof and checks it here, in your browser, with blake3 against the
        epoch&apos;s receipt root as posted on chain.
      </p>
      <form onSubmit={submit} className="check">
        <label htmlFor="rid">Receipt id</label>
        <input id="rid" name="rid" value={id} onChange={(e) => setId(e.target.value)} spellCheck={false} autoComplete="off" placeholder="64 hexadecimal characters" />
        <button type="submit" disabled={check.state === 'checking'}>Check</button>
      </form>
      <div aria-live="polite" data-testid="verdict">
        {check.state === 'checking' && <p className="muted" role="status">Checking…</p>}
        {check.state === 'yes' && (
          <div className="notice ok">
            <p><strong>Yes: included.</strong> The proof verifies in your browser: leaf {check.index} of {check.count} in <Link to={`${BASE}/epochs/${check.epoch}`}>epoch #{check.epoch}</Link>.</p>
            <p>Receipt root <Hex value={check.root} /></p>
            {check.tx && <p>Posted in transaction <Hex value={check.tx} /></p>}
          </div>
        )}
        {check.state === 'no' && (
          <div className="notice bad">
            <p><strong>No: not verified.</strong> {check.reason}</p>
          </div>
        )}
      </div>
    </>
  );
}

function NotFound() {
  return (
    <>
      <h1>Page not found</h1>
      <p><Link to={`${BASE}/`}>Back to the network status</Link></p>
    </>
  );
}

// ---- shell -----------------------------------------------------------------------------------

const NAV: [string, string][] = [
  [`${BASE}/`, 'Status'],
  [`${BASE}/models`, 'Models'],
  [`${BASE}/nodes`, 'Nodes'],
  [`${BASE}/epochs`, 'Epochs'],
  [`${BASE}/receipt`, 'Receipt check'],
];

export function App() {
  const [path, go] = usePath();
  navigate = go;
  const rel = path.startsWith(BASE) ? path.slice(BASE.length).replace(/\/+$/, '') : path;
  const parts = rel.split('/').filter(Boolean);
  let page: ReactNode;
  let title: string;
  if (parts.length === 0) [page, title] = [<StatusPage />, 'Network status'];
  else if (parts[0] === 'models' && parts.length === 1) [page, title] = [<ModelsPage />, 'Models'];
  else if (parts[0] === 'nodes' && parts.length === 1) [page, title] = [<NodesPage />, 'Nodes'];
  else if (parts[0] === 'nodes' && parts.length === 2) [page, title] = [<NodePage key={parts[1]} id={decodeURIComponent(parts[1]!)} />, 'Node'];
  else if (parts[0] === 'epochs' && parts.length === 1) [page, title] = [<EpochsPage />, 'Epochs'];
  else if (parts[0] === 'epochs' && parts.length === 2) [page, title] = [<EpochPage key={parts[1]} id={decodeURIComponent(parts[1]!)} />, 'Epoch'];
  else if (parts[0] === 'receipt' && parts.length === 1) [page, title] = [<ReceiptPage />, 'Receipt check'];
  else [page, title] = [<NotFound />, 'Not found'];
  useEffect(() => {
    document.title = `${title} · B3IQ explorer`;
  }, [title]);
  const section = `${BASE}/${parts[0] ?? ''}`.replace(/\/$/, '') || BASE;
  return (
    <>
      <a className="skip" href="#main">Skip to content</a>
      <header className="top">
        <span className="brand">B3IQ explorer</span>
        <nav aria-label="Explorer">
          <ul>
            {NAV.map(([to, label]) => {
              const current = to.replace(/\/$/, '') === section || (to === `${BASE}/` && section === BASE);
              return (
                <li key={to}>
                  <a
                    href={to}
                    aria-current={current ? 'page' : undefined}
                    onClick={(e) => {
                      e.preventDefault();
                      go(to);
                    }}
                  >
                    {label}
                  </a>
                </li>
              );
            })}
          </ul>
        </nav>
      </header>
      <main id="main">{page}</main>
      <footer className="muted">Public data only: read from this control plane&apos;s public API.</footer>
    </>
  );
}
