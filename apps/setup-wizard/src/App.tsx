// The wizard shell: boot (status + session), hash routing, navigation, session expiry.
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { Api, type SetupStatus } from './api';
import { Claim, Login, Welcome } from './auth';
import { DashboardScreen, EndpointScreen, HardwareScreen, KeysScreen, ModeScreen, ModelScreen } from './screens';
import { ErrorNotice, Spinner } from './ui';
import { humanCode, routeFromHash, tokenFromHash } from './util';

export const OWNER_ROUTES = ['hardware', 'model', 'keys', 'endpoint', 'mode', 'dashboard'] as const;
export type OwnerRoute = (typeof OWNER_ROUTES)[number];
type Route = 'boot' | 'welcome' | 'claim' | 'login' | OwnerRoute;

const NAV: { route: OwnerRoute; label: string }[] = [
  { route: 'dashboard', label: 'Overview' },
  { route: 'hardware', label: 'Hardware' },
  { route: 'model', label: 'Model' },
  { route: 'keys', label: 'Keys' },
  { route: 'endpoint', label: 'Endpoint' },
  { route: 'mode', label: 'Mode' },
];

const NEXT: Partial<Record<OwnerRoute, OwnerRoute>> = {
  hardware: 'model',
  model: 'keys',
  keys: 'endpoint',
  endpoint: 'mode',
  mode: 'dashboard',
};

const isOwnerRoute = (r: string): r is OwnerRoute => (OWNER_ROUTES as readonly string[]).includes(r);

/**
 * Takes the setup token out of the address bar (and history) at once, so it is never
 * bookmarked, synced or left for the next person. It stays only in this page's memory.
 */
export function takeTokenFromLocation(): string | undefined {
  const token = tokenFromHash(window.location.hash);
  if (token) {
    const route = routeFromHash(window.location.hash);
    window.history.replaceState(null, '', `${window.location.pathname}${window.location.search}${route ? `#/${route}` : ''}`);
  }
  return token;
}

function Logo() {
  return (
    <svg className="logo" viewBox="0 0 32 32" aria-hidden="true" focusable="false">
      <rect x="2" y="2" width="28" height="28" rx="8" className="logo-bg" />
      <path d="M10 9h7.5a4 4 0 0 1 0 8H10zm0 8h8.5a4 4 0 0 1 0 8H10z" className="logo-fg" />
    </svg>
  );
}

export function App({ api: given }: { api?: Api }) {
  const [token, setToken] = useState<string | undefined>(() => takeTokenFromLocation());
  const [status, setStatus] = useState<SetupStatus | null>(null);
  const [bootError, setBootError] = useState<unknown>(null);
  const [user, setUser] = useState<string | null>(null);
  const [route, setRoute] = useState<Route>('boot');
  const [after, setAfter] = useState<OwnerRoute>('dashboard');
  const mainRef = useRef<HTMLElement>(null);

  const onSessionLost = useRef<() => void>(() => {});
  const api = useMemo(() => given ?? new Api(async (input, init) => {
    const res = await globalThis.fetch(input, init);
    if (res.status === 401 && input.startsWith('/api/') && !/^\/api\/(setup|session)/.test(input)) onSessionLost.current();
    return res;
  }), [given]);

  const go = useCallback((r: OwnerRoute) => {
    window.location.hash = `#/${r}`;
    setRoute(r);
  }, []);

  useEffect(() => {
    onSessionLost.current = () => {
      setUser(null);
      setRoute('login');
    };
  }, []);

  const boot = useCallback(async () => {
    setBootError(null);
    try {
      const s = await api.setupStatus();
      setStatus(s);
      const wanted = routeFromHash(window.location.hash);
      if (!s.claimed) {
        setRoute(token && wanted === 'claim' ? 'claim' : 'welcome');
        return;
      }
      const session = await api.session();
      if (session) {
        setUser(session.username);
        setRoute(isOwnerRoute(wanted) ? wanted : 'dashboard');
      } else {
        setAfter(isOwnerRoute(wanted) ? wanted : 'dashboard');
        setRoute('login');
      }
    } catch (e) {
      setBootError(e);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [api]);

  useEffect(() => {
    void boot();
  }, [boot]);

  useEffect(() => {
    const onHash = () => {
      // A setup link opened in a tab that already shows the wizard is a same-document
      // navigation: take the token out of the address bar here too, then start over.
      const fresh = takeTokenFromLocation();
      if (fresh) {
        setToken(fresh);
        setRoute('boot');
        void boot();
        return;
      }
      const r = routeFromHash(window.location.hash);
      if (user && isOwnerRoute(r)) setRoute(r);
    };
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, [user, boot]);

  // Move focus to the new screen's heading so keyboard and screen-reader users land on it.
  useEffect(() => {
    if (route === 'boot') return;
    const h = mainRef.current?.querySelector('h1');
    if (h) {
      h.setAttribute('tabindex', '-1');
      h.focus({ preventScroll: false });
    }
    window.scrollTo(0, 0);
  }, [route]);

  async function signOut() {
    try {
      await api.logout();
    } finally {
      setUser(null);
      setAfter('dashboard');
      setRoute('login');
    }
  }

  const code = status ? humanCode(status.node_id, status.node_code) : '';
  const owner = user !== null && isOwnerRoute(route);

  let screen;
  if (bootError) {
    screen = (
      <section className="screen screen-narrow" aria-labelledby="err-h">
        <h1 id="err-h">Can’t reach the node</h1>
        <ErrorNotice error={bootError} />
        <div className="actions"><button type="button" className="btn btn-primary" onClick={() => void boot()}>Try again</button></div>
      </section>
    );
  } else if (route === 'boot' || !status) {
    screen = <div className="loading loading-page"><Spinner label="Connecting to the node" /> Connecting to the node…</div>;
  } else if (route === 'welcome') {
    screen = <Welcome status={status} hasToken={!!token} onContinue={() => { window.location.hash = '#/claim'; setRoute('claim'); }} />;
    if (status.claimed) {
      screen = (
        <>
          {screen}
          <div className="actions screen"><button type="button" className="btn btn-primary" onClick={() => setRoute('login')}>Sign in</button></div>
        </>
      );
    }
  } else if (route === 'claim' && token) {
    screen = (
      <Claim api={api} token={token} onNewToken={setToken}
        onClaimed={(u) => {
          setToken(undefined);
          setUser(u);
          setStatus({ ...status, claimed: true, setup_token_expires_at: null });
          go('hardware');
        }} />
    );
  } else if (route === 'login' || route === 'claim' || !user) {
    screen = <Login api={api} onSignedIn={() => { void api.session().then((s) => { setUser(s?.username ?? 'owner'); go(after); }); }} />;
  } else {
    const next = NEXT[route] ? () => go(NEXT[route as OwnerRoute] as OwnerRoute) : undefined;
    switch (route) {
      case 'hardware': screen = <HardwareScreen api={api} onNext={next} />; break;
      case 'model': screen = <ModelScreen api={api} onNext={next} />; break;
      case 'keys': screen = <KeysScreen api={api} onNext={next} />; break;
      case 'endpoint': screen = <EndpointScreen api={api} onNext={next} />; break;
      case 'mode': screen = <ModeScreen api={api} onNext={next} />; break;
      default: screen = <DashboardScreen api={api} />;
    }
  }

  return (
    <div className={`app ${owner ? 'app-owner' : 'app-setup'}`}>
      <a className="skip" href="#main" onClick={(e) => { e.preventDefault(); mainRef.current?.querySelector('h1')?.focus(); }}>Skip to content</a>
      <header className="topbar">
        <div className="brand"><Logo /><span>B3IQ</span>{code && <span className="brand-code" data-testid="node-code">{code}</span>}</div>
        {user && (
          <div className="who">
            <span className="muted small">Signed in as <b>{user}</b></span>
            <button type="button" className="btn btn-small" onClick={() => void signOut()}>Sign out</button>
          </div>
        )}
      </header>
      <div className="layout">
        {owner && (
          <nav className="nav" aria-label="Sections">
            <ol>
              {NAV.map((n) => (
                <li key={n.route}>
                  <a href={`#/${n.route}`} aria-current={route === n.route ? 'page' : undefined} className={route === n.route ? 'nav-on' : ''}>{n.label}</a>
                </li>
              ))}
            </ol>
          </nav>
        )}
        <main id="main" ref={mainRef}>{screen}</main>
      </div>
    </div>
  );
}
