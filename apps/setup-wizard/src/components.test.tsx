import { act, fireEvent, render, screen, waitFor } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { Api, ApiError, type ApiKey } from './api';
import { App, takeTokenFromLocation } from './App';
import { Claim, Login, Welcome } from './auth';
import { fillBuckets, UsageChart } from './chart';
import { endpointSnippets, KeyReveal, KeysScreen, UpdateCard } from './screens';

const apiError = (status: number, code: string, message: string) => new ApiError(status, message, code, 'x');

/** An Api whose methods are replaced by the given fakes; anything else throws. */
function fakeApi(methods: Partial<Record<keyof Api, (...a: never[]) => unknown>>): Api {
  const api = new Api(async () => { throw new Error('unexpected network call'); });
  Object.assign(api, methods);
  return api;
}

describe('Welcome', () => {
  const status = { claimed: false, node_id: 'b3n_abc', node_code: 'K7QP-3MZD', setup_token_expires_at: 1763780000, hardware: { gpus: [], cpu_cores: 2, memory_total_bytes: 1 << 30 } };
  it('shows the node code and a claim button when a token is present', () => {
    const onContinue = vi.fn();
    render(<Welcome status={status} hasToken onContinue={onContinue} />);
    expect(screen.getByLabelText('Node code').textContent).toBe('K7QP-3MZD');
    fireEvent.click(screen.getByRole('button', { name: 'Claim this node' }));
    expect(onContinue).toHaveBeenCalled();
  });
  it('explains how to get a new link when the token is missing', () => {
    render(<Welcome status={status} hasToken={false} onContinue={() => {}} />);
    expect(screen.queryByRole('button', { name: 'Claim this node' })).toBeNull();
    expect(screen.getByText('b3iqd setup --reset')).toBeTruthy();
  });
  it('warns when the node is on the network without TLS, and says how to turn it on', () => {
    const transport = { listen: '192.168.1.20:7420', scheme: 'http' as const, lan: true, tls: null };
    render(<Welcome status={{ ...status, transport }} hasToken onContinue={() => {}} />);
    expect(screen.getByText('This node is on your network without encryption')).toBeTruthy();
    expect(screen.getByText('b3iqd serve --listen 192.168.1.20:7420 --tls self-signed')).toBeTruthy();
    expect(screen.getByText('Not encrypted (plain HTTP on the network)')).toBeTruthy();
  });
  it('shows the certificate fingerprint over TLS and no warning; loopback needs none', () => {
    const fp = 'AB:'.repeat(31) + 'CD';
    const tls = { listen: '192.168.1.20:7420', scheme: 'https' as const, lan: true, tls: { mode: 'self-signed', fingerprint_sha256: fp } };
    const { unmount } = render(<Welcome status={{ ...status, transport: tls }} hasToken onContinue={() => {}} />);
    expect(screen.getByTestId('tls-fingerprint').textContent).toBe(fp);
    expect(screen.getByText('Encrypted (TLS, self-signed certificate)')).toBeTruthy();
    expect(screen.queryByText('This node is on your network without encryption')).toBeNull();
    unmount();
    const lo = { listen: '127.0.0.1:7420', scheme: 'http' as const, lan: false, tls: null };
    render(<Welcome status={{ ...status, transport: lo }} hasToken onContinue={() => {}} />);
    expect(screen.queryByText('This node is on your network without encryption')).toBeNull();
    expect(screen.getByText('This computer only (loopback)')).toBeTruthy();
  });
});

describe('Claim', () => {
  function fill(pw: string, confirm = pw, user = 'owner') {
    fireEvent.change(screen.getByLabelText('Owner username'), { target: { value: user } });
    fireEvent.change(screen.getByLabelText('Password'), { target: { value: pw } });
    fireEvent.change(screen.getByLabelText('Confirm password'), { target: { value: confirm } });
  }

  it('keeps submit disabled for weak or mismatched passwords and shows the hint', () => {
    render(<Claim api={fakeApi({})} token="t" onClaimed={() => {}} onNewToken={() => {}} />);
    const submit = screen.getByRole('button', { name: 'Claim node' }) as HTMLButtonElement;
    fill('short');
    expect(submit.disabled).toBe(true);
    expect(screen.getByText('Too weak.')).toBeTruthy();
    fill('a-long-enough-passphrase', 'different-passphrase');
    expect(submit.disabled).toBe(true);
    expect(screen.getByText('The passwords do not match.')).toBeTruthy();
    fill('a-long-enough-passphrase');
    expect(submit.disabled).toBe(false);
  });

  it('claims with the token and clears the password fields', async () => {
    const claim = vi.fn(async () => ({ username: 'owner' }));
    const onClaimed = vi.fn();
    render(<Claim api={fakeApi({ claim })} token="b3iq_setup_T" onClaimed={onClaimed} onNewToken={() => {}} />);
    fill('Mellow-Tundra-Quartz-9');
    fireEvent.click(screen.getByRole('button', { name: 'Claim node' }));
    await waitFor(() => expect(onClaimed).toHaveBeenCalledWith('owner'));
    expect(claim).toHaveBeenCalledWith('b3iq_setup_T', 'owner', 'Mellow-Tundra-Quartz-9');
  });

  it('on an expired token explains `b3iqd setup --reset` and accepts a pasted new link', async () => {
    const claim = vi.fn(async () => { throw apiError(401, 'setup_token_expired', 'setup token expired; run `b3iqd setup --reset`'); });
    const onNewToken = vi.fn();
    render(<Claim api={fakeApi({ claim })} token="old" onClaimed={() => {}} onNewToken={onNewToken} />);
    fill('Mellow-Tundra-Quartz-9');
    fireEvent.click(screen.getByRole('button', { name: 'Claim node' }));
    expect(await screen.findByText('This setup link has expired or was already used')).toBeTruthy();
    expect(screen.getByText('b3iqd setup --reset')).toBeTruthy();
    fireEvent.change(screen.getByLabelText('Or paste the new setup link'), { target: { value: 'http://127.0.0.1:7420/setup/#token=b3iq_setup_NEW' } });
    fireEvent.click(screen.getByRole('button', { name: 'Use this link' }));
    expect(onNewToken).toHaveBeenCalledWith('b3iq_setup_NEW');
  });
});

describe('Login', () => {
  it('says "wrong username or password" and clears the password', async () => {
    const login = vi.fn(async () => { throw apiError(401, 'bad_credentials', 'bad credentials'); });
    render(<Login api={fakeApi({ login })} onSignedIn={() => {}} />);
    fireEvent.change(screen.getByLabelText('Username'), { target: { value: 'owner' } });
    fireEvent.change(screen.getByLabelText('Password'), { target: { value: 'nope-nope-nope' } });
    fireEvent.click(screen.getByRole('button', { name: 'Sign in' }));
    expect(await screen.findByText(/Wrong username or password/)).toBeTruthy();
    expect((screen.getByLabelText('Password') as HTMLInputElement).value).toBe('');
  });
  it('explains the back-off with the wait time', async () => {
    const login = vi.fn(async () => { throw new ApiError(429, 'slow', 'login_backoff', 'rate_limit_error', 8); });
    render(<Login api={fakeApi({ login })} onSignedIn={() => {}} />);
    fireEvent.change(screen.getByLabelText('Username'), { target: { value: 'owner' } });
    fireEvent.change(screen.getByLabelText('Password'), { target: { value: 'x' } });
    fireEvent.click(screen.getByRole('button', { name: 'Sign in' }));
    expect(await screen.findByText(/Wait 8 seconds/)).toBeTruthy();
  });
});

describe('KeyReveal', () => {
  it('shows the secret with a working copy button and the 0600 storage pattern', async () => {
    const writeText = vi.fn(async () => {});
    Object.defineProperty(navigator, 'clipboard', { value: { writeText }, configurable: true });
    const onDone = vi.fn();
    render(<KeyReveal secret="b3iq_local_SECRET" name="laptop" onDone={onDone} />);
    expect(screen.getByTestId('new-key-secret').textContent).toBe('b3iq_local_SECRET');
    expect(screen.getByText(/chmod 600/)).toBeTruthy();
    await act(async () => { fireEvent.click(screen.getByRole('button', { name: 'Copy key' })); });
    expect(writeText).toHaveBeenCalledWith('b3iq_local_SECRET');
    expect(screen.getByRole('button', { name: 'Copied' })).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: 'I’ve stored it' }));
    expect(onDone).toHaveBeenCalled();
  });
});

describe('KeysScreen', () => {
  it('creates a key, shows it once, forgets it, and revokes with confirmation', async () => {
    let keys: ApiKey[] = [];
    const mk = (id: string, name: string): ApiKey => ({ id, name, prefix: 'b3iq_local_Ab', scopes: ['inference'], last_used_at: null, expires_at: null, revoked_at: null });
    const api = fakeApi({
      keys: async () => keys,
      createKey: vi.fn(async (name: string) => { const k = mk('key_1', name); keys = [k]; return { key: k, secret: 'b3iq_local_ONCE' }; }) as never,
      revokeKey: vi.fn(async () => { keys = []; }) as never,
    });
    render(<KeysScreen api={api} />);
    expect(await screen.findByText('No keys yet.')).toBeTruthy();
    fireEvent.change(screen.getByLabelText('Name'), { target: { value: 'laptop' } });
    fireEvent.click(screen.getByRole('button', { name: 'Create key' }));
    expect((await screen.findByTestId('new-key-secret')).textContent).toBe('b3iq_local_ONCE');
    expect(api.createKey).toHaveBeenCalledWith('laptop', ['inference'], 90);
    fireEvent.click(screen.getByRole('button', { name: 'I’ve stored it' }));
    expect(screen.queryByTestId('new-key-secret')).toBeNull();
    expect(document.body.textContent).not.toContain('b3iq_local_ONCE');
    fireEvent.click(await screen.findByRole('button', { name: 'Revoke laptop' }));
    fireEvent.click(screen.getByRole('button', { name: 'Confirm revoke' }));
    await waitFor(() => expect(api.revokeKey).toHaveBeenCalledWith('key_1'));
    expect(await screen.findByText('No keys yet.')).toBeTruthy();
    expect(localStorage.length + sessionStorage.length).toBe(0);
  });
});

describe('UpdateCard', () => {
  const base = { current: '0.1.0', configured: true, latest: '0.2.0', notes: 'Faster prefill', error: null, code: null };
  it('shows the signed release and its notes, and installs it as an update job', async () => {
    const api = fakeApi({
      update: async () => ({ ...base, available: true }),
      installUpdate: vi.fn(async () => ({ id: 'job_1', kind: 'update', state: 'queued' })) as never,
    });
    render(<UpdateCard api={api} />);
    expect(await screen.findByRole('heading', { name: 'Update available: B3IQ 0.2.0' })).toBeTruthy();
    expect(screen.getByTestId('update-notes').textContent).toBe('Faster prefill');
    expect(screen.getByText(/You run 0.1.0/)).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: 'Install 0.2.0' }));
    await waitFor(() => expect(api.installUpdate).toHaveBeenCalledWith('0.2.0'));
    expect(await screen.findByText(/restarts on the new version/)).toBeTruthy();
  });
  it('says nothing when up to date or unconfigured, and shows a refused check', async () => {
    for (const s of [{ ...base, available: false }, { ...base, configured: false, available: false }]) {
      const { container, unmount } = render(<UpdateCard api={fakeApi({ update: async () => s })} />);
      await act(async () => {});
      expect(container.textContent).toBe('');
      unmount();
    }
    const refused = { ...base, available: false, latest: null, notes: null, error: 'refused: freeze attack or stale repository: the timestamp metadata has expired', code: 'update_expired' };
    render(<UpdateCard api={fakeApi({ update: async () => refused })} />);
    expect(await screen.findByText(/Could not check for updates: refused: freeze attack/)).toBeTruthy();
  });
});

describe('endpoint snippets', () => {
  it('never put the key on a command line', () => {
    const s = endpointSnippets('http://127.0.0.1:7420/v1', 'm');
    expect(s.python).toContain('base_url="http://127.0.0.1:7420/v1"');
    expect(s.python).toMatch(/read_text\(\)/);
    expect(s.node).toContain("baseURL: 'http://127.0.0.1:7420/v1'");
    expect(s.curl).toContain('-H @<(printf');
    expect(s.curl).not.toMatch(/Bearer \$B3IQ|Bearer b3iq_/);
  });
});

describe('UsageChart', () => {
  it('places sparse points into fixed hourly buckets', () => {
    const now = 10 * 3600 + 120;
    const b = fillBuckets([{ start: 9 * 3600, requests: 2, prompt_tokens: 5, completion_tokens: 7 }, { start: 0, requests: 99, prompt_tokens: 0, completion_tokens: 0 }], 3600, 3, now);
    expect(b.map((x) => x.start)).toEqual([8 * 3600, 9 * 3600, 10 * 3600]);
    expect(b.map((x) => x.requests)).toEqual([0, 2, 0]);
    expect(b[1]?.tokens).toBe(12);
  });
  it('renders one bar per bucket and a summary label', () => {
    const now = 1763780000;
    const start = Math.floor(now / 3600) * 3600;
    render(<UsageChart points={[{ start, requests: 3, prompt_tokens: 10, completion_tokens: 20 }]} bucketSeconds={3600} buckets={24} now={now} />);
    const svg = screen.getByTestId('usage-chart');
    const bars = svg.querySelectorAll('rect.chart-bar');
    expect(bars.length).toBe(24);
    expect(bars[23]?.getAttribute('data-requests')).toBe('3');
    expect(svg.getAttribute('aria-label')).toBe('3 requests and 30 tokens in the last 24 hours');
  });
});

describe('App', () => {
  it('takes the token out of the address bar without storing it anywhere', () => {
    window.history.replaceState(null, '', '/setup/#token=b3iq_setup_XYZ');
    expect(takeTokenFromLocation()).toBe('b3iq_setup_XYZ');
    expect(window.location.href).not.toContain('b3iq_setup_XYZ');
    expect(localStorage.length + sessionStorage.length).toBe(0);
  });

  it('asks an unclaimed node for a link when there is no token, and signs in on a claimed node', async () => {
    window.history.replaceState(null, '', '/setup/');
    const status = { claimed: false, node_id: 'b3n_a', node_code: 'AAAA-BBBB', setup_token_expires_at: 1, hardware: undefined };
    render(<App api={fakeApi({ setupStatus: async () => status, session: async () => null })} />);
    expect(await screen.findByText('This page needs a setup link')).toBeTruthy();
    expect(screen.getByTestId('node-code').textContent).toBe('AAAA-BBBB');
  });

  it('takes a token that arrives later by a same-document hash change', async () => {
    window.history.replaceState(null, '', '/setup/');
    const status = { claimed: false, node_id: 'b3n_a', node_code: 'AAAA-BBBB', setup_token_expires_at: 1, hardware: undefined };
    render(<App api={fakeApi({ setupStatus: async () => status, session: async () => null })} />);
    expect(await screen.findByText('This page needs a setup link')).toBeTruthy();
    await act(async () => {
      window.history.replaceState(null, '', '/setup/#token=b3iq_setup_LATER');
      window.dispatchEvent(new HashChangeEvent('hashchange'));
    });
    expect(await screen.findByRole('button', { name: 'Claim this node' })).toBeTruthy();
    expect(window.location.href).not.toContain('b3iq_setup_LATER');
  });

  it('goes to sign-in when the node is claimed and there is no session', async () => {
    window.history.replaceState(null, '', '/setup/#/keys');
    render(<App api={fakeApi({ setupStatus: async () => ({ claimed: true, node_id: 'b3n_a', setup_token_expires_at: null }), session: async () => null })} />);
    expect(await screen.findByRole('heading', { name: 'Sign in to your node' })).toBeTruthy();
  });

  it('shows a retry screen when the node cannot be reached', async () => {
    window.history.replaceState(null, '', '/setup/');
    const setupStatus = vi.fn(async () => { throw new ApiError(0, 'Cannot reach the B3IQ node.', 'unreachable'); });
    render(<App api={fakeApi({ setupStatus })} />);
    expect(await screen.findByRole('heading', { name: 'Can’t reach the node' })).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: 'Try again' }));
    await waitFor(() => expect(setupStatus).toHaveBeenCalledTimes(2));
  });
});
