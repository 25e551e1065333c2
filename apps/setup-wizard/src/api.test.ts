import { describe, expect, it, vi } from 'vitest';
import { Api, ApiError, jobFraction, modelActionError, modelRows, request, toJob, toKey, toManaged, toModels, toStatus } from './api';

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(body === undefined ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });
}

describe('request', () => {
  it('sends JSON with same-origin credentials and no caching', async () => {
    const f = vi.fn(async () => json(200, { ok: true }));
    const out = await request<{ ok: boolean }>(f, 'POST', '/api/x', { a: 1 });
    expect(out).toEqual({ ok: true });
    const [path, init] = f.mock.calls[0] as unknown as [string, RequestInit];
    expect(path).toBe('/api/x');
    expect(init.method).toBe('POST');
    expect(init.credentials).toBe('same-origin');
    expect(init.cache).toBe('no-store');
    expect(init.body).toBe('{"a":1}');
    expect((init.headers as Record<string, string>)['Content-Type']).toBe('application/json');
  });

  it('maps the error envelope to ApiError with status, code, type and message', async () => {
    const f = vi.fn(async () => json(401, { error: { message: 'setup token expired; run `b3iqd setup --reset`', type: 'authentication_error', code: 'setup_token_expired' } }));
    const err = await request(f, 'POST', '/api/setup/claim', {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    const e = err as ApiError;
    expect(e.status).toBe(401);
    expect(e.code).toBe('setup_token_expired');
    expect(e.type).toBe('authentication_error');
    expect(e.message).toContain('b3iqd setup --reset');
    expect(e.isTokenProblem).toBe(true);
    expect(e.isUnauthenticated).toBe(true);
  });

  it('keeps Retry-After for 429', async () => {
    const f = vi.fn(async () => json(429, { error: { message: 'slow down', type: 'rate_limit_error', code: 'login_backoff' } }, { 'Retry-After': '4' }));
    const e = (await request(f, 'POST', '/api/session/login', {}).catch((x: unknown) => x)) as ApiError;
    expect(e.code).toBe('login_backoff');
    expect(e.retryAfter).toBe(4);
  });

  it('uses the status line when the error body is not JSON', async () => {
    const f = vi.fn(async () => new Response('<html>oops</html>', { status: 502, statusText: 'Bad Gateway' }));
    const e = (await request(f, 'GET', '/api/node').catch((x: unknown) => x)) as ApiError;
    expect(e.status).toBe(502);
    expect(e.message).toBe('502 Bad Gateway');
    expect(e.code).toBe('');
  });

  it('reports an unreachable node clearly', async () => {
    const f = vi.fn(async () => { throw new TypeError('Failed to fetch'); });
    const e = (await request(f, 'GET', '/api/node').catch((x: unknown) => x)) as ApiError;
    expect(e.status).toBe(0);
    expect(e.code).toBe('unreachable');
    expect(e.message).toMatch(/b3iqd serve/);
  });

  it('returns undefined for 204 and refuses a 200 that is not JSON', async () => {
    expect(await request(vi.fn(async () => new Response(null, { status: 204 })), 'DELETE', '/api/keys/k')).toBeUndefined();
    const e = (await request(vi.fn(async () => new Response('nope', { status: 200 })), 'GET', '/api/node').catch((x: unknown) => x)) as ApiError;
    expect(e.code).toBe('bad_response');
  });
});

describe('Api', () => {
  it('claims with the token in the body only', async () => {
    const f = vi.fn(async () => json(201, { username: 'alice', node_id: 'b3n_x', expires_at: 1 }));
    const s = await new Api(f).claim('b3iq_setup_abc', 'alice', 'correct horse battery');
    expect(s.username).toBe('alice');
    const [path, init] = f.mock.calls[0] as unknown as [string, RequestInit];
    expect(path).toBe('/api/setup/claim');
    expect(path).not.toContain('b3iq_setup_abc');
    expect(JSON.parse(init.body as string)).toEqual({ setup_token: 'b3iq_setup_abc', username: 'alice', password: 'correct horse battery' });
  });

  it('session() is null on 401 and rethrows other errors', async () => {
    expect(await new Api(vi.fn(async () => json(401, { error: { message: 'no', type: 'authentication_error', code: 'session_required' } }))).session()).toBeNull();
    await expect(new Api(vi.fn(async () => json(500, { error: { message: 'boom', type: 'server_error', code: 'internal' } }))).session()).rejects.toThrow('boom');
  });

  it('createKey returns the secret and the key; a missing secret is an error', async () => {
    const key = { id: 'key_1', name: 'laptop', prefix: 'b3iq_local_AbCd', scopes: ['inference'], created_at: 5, last_used_at: null, expires_at: null, revoked_at: null };
    const f = vi.fn(async () => json(201, { key, secret: 'b3iq_local_SECRET' }));
    const r = await new Api(f).createKey('laptop', ['inference'], 30);
    expect(r.secret).toBe('b3iq_local_SECRET');
    expect(r.key.id).toBe('key_1');
    const [, init] = f.mock.calls[0] as unknown as [string, RequestInit];
    expect(JSON.parse(init.body as string)).toEqual({ name: 'laptop', scopes: ['inference'], expires_in_s: 30 * 86400 });
    await expect(new Api(vi.fn(async () => json(201, { key }))).createKey('x', ['inference'], null)).rejects.toThrow(/did not return its secret/);
  });

  it('keys() hides revoked keys', async () => {
    const f = vi.fn(async () => json(200, { keys: [
      { id: 'a', name: 'a', scopes: ['inference'], revoked_at: null },
      { id: 'b', name: 'b', scopes: ['inference'], revoked_at: 17 },
    ] }));
    expect((await new Api(f).keys()).map((k) => k.id)).toEqual(['a']);
  });

  it('installModel posts an install_model job and unwraps it', async () => {
    const f = vi.fn(async () => json(202, { job: { id: 'job_1', kind: 'install_model', profile: 'p', state: 'queued', progress: null } }));
    const j = await new Api(f).installModel('p');
    expect(j.id).toBe('job_1');
    const [path, init] = f.mock.calls[0] as unknown as [string, RequestInit];
    expect(path).toBe('/api/jobs');
    expect(JSON.parse(init.body as string)).toEqual({ kind: 'install_model', profile: 'p' });
  });

  it('revokeKey escapes the id', async () => {
    const f = vi.fn(async () => new Response(null, { status: 204 }));
    await new Api(f).revokeKey('key/../x');
    expect((f.mock.calls[0] as unknown as [string])[0]).toBe('/api/keys/key%2F..%2Fx');
  });

  it('playground maps the answer', async () => {
    const f = vi.fn(async () => json(200, { model: 'm', content: 'Hi!', finish_reason: 'stop', usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 }, ttft_ms: 9, duration_ms: 20, tokens_per_second: 100, receipt_id: 'rcpt_1' }));
    const r = await new Api(f).playground('Say hi');
    expect(r).toMatchObject({ model: 'm', content: 'Hi!', completion_tokens: 2, receipt_id: 'rcpt_1' });
  });

  it('usage sorts the series and defaults missing numbers to 0', async () => {
    const f = vi.fn(async () => json(200, { bucket: 'hour', series: [{ start: 20, requests: 1 }, { start: 10, requests: 2, prompt_tokens: 3, completion_tokens: 4 }], by_key: [] }));
    const u = await new Api(f).usage();
    expect(u.series.map((p) => p.start)).toEqual([10, 20]);
    expect(u.series[1]).toEqual({ start: 20, requests: 1, prompt_tokens: 0, completion_tokens: 0 });
  });
});

describe('normalizers', () => {
  it('toManaged maps the enrollment and tolerates junk', () => {
    expect(toManaged(null)).toBeNull();
    expect(toManaged('x')).toBeNull();
    const m = toManaged({ audience: 'cp-1', org_id: 'org_a', job_key: 'ab', expires_at_ms: 5, heartbeat_interval_ms: 30000, last_heartbeat: { at_ms: 3, sequence: 2, outcome: 'accepted', code: null, error: null } });
    expect(m).toEqual({ audience: 'cp-1', org_id: 'org_a', job_key: 'ab', expires_at_ms: 5, heartbeat_interval_ms: 30000, last_heartbeat: { at_ms: 3, sequence: 2, outcome: 'accepted', code: undefined, error: undefined } });
    expect(toManaged({ audience: 'cp-1', last_heartbeat: null })?.last_heartbeat).toBeNull();
  });

  it('toStatus tolerates missing fields', () => {
    expect(toStatus({})).toEqual({ claimed: false, node_id: '', node_code: undefined, version: undefined, setup_token_expires_at: null, hardware: undefined, transport: undefined });
    const t = toStatus({ transport: { listen: '0.0.0.0:7420', scheme: 'https', lan: true, tls: { mode: 'self-signed', fingerprint_sha256: 'AA:BB' } } }).transport;
    expect(t).toEqual({ listen: '0.0.0.0:7420', scheme: 'https', lan: true, tls: { mode: 'self-signed', fingerprint_sha256: 'AA:BB' } });
    expect(toStatus({ transport: { scheme: 'gopher', tls: null } }).transport).toEqual({ listen: undefined, scheme: 'http', lan: false, tls: null });
    const s = toStatus({ claimed: true, node_id: 'b3n_a', node_code: 'K7QP-3MZD', setup_token_expires_at: null, hardware: { cpu_cores: 2, memory_total_bytes: 10, gpus: [{ name: 'G', memory_bytes: 8 }] } });
    expect(s.hardware?.gpus[0]).toEqual({ name: 'G', memory_bytes: 8, driver: undefined, backend: undefined });
  });

  it('toKey keeps nulls as nulls', () => {
    expect(toKey({ id: 'k', scopes: ['inference', 3] })).toMatchObject({ id: 'k', scopes: ['inference'], last_used_at: null, revoked_at: null });
  });

  it('jobFraction follows bytes and completion', () => {
    expect(jobFraction(toJob({ id: 'j', state: 'running', progress: { bytes_done: 25, bytes_total: 100 } }))).toBe(0.25);
    expect(jobFraction(toJob({ id: 'j', state: 'running', progress: null }))).toBeUndefined();
    expect(jobFraction(toJob({ id: 'j', state: 'succeeded', progress: null }))).toBe(1);
    expect(toJob({ id: 'j', state: 'failed', error: { message: 'disk full' } }).error).toBe('disk full');
  });
});

describe('network', () => {
  const wire = {
    policy: {
      schedule: [{ days: [0, 1, 2, 3, 4], start_hour: 9, end_hour: 17 }],
      max_tokens_per_day: null, max_concurrent: 2, models: ['smollm2'],
      price_floor: { prompt_per_1m_tokens: 1_500_000, completion_per_1m_tokens: 3_000_000, per_request: 0 },
    },
    offered_concurrency: 2, models: ['smollm2'],
    tunnel: { state: 'connected', gateway_id: 'gw-1', since_ms: 1764640000000, error: null },
    today: { requests: 3, tokens: 120, earned_micro_credits: 420 },
  };

  it('GET /api/mode carries the network object, normalised', async () => {
    const api = new Api(async () => json(200, { mode: 'network', managed: null, network: wire, modes: [] }));
    const m = await api.mode();
    expect(m.network).toEqual(wire);
  });

  it('PUT /api/network sends the policy as JSON integers and reads the answer', async () => {
    const f = vi.fn(async () => json(200, wire));
    const out = await new Api(f).setNetwork(wire.policy);
    const [path, init] = f.mock.calls[0] as unknown as [string, RequestInit];
    expect(path).toBe('/api/network');
    expect(init.method).toBe('PUT');
    expect(JSON.parse(init.body as string)).toEqual(wire.policy);
    expect(out.tunnel.gateway_id).toBe('gw-1');
  });

  it('never trusts a non-integer or unsafe amount from the wire', async () => {
    const bad = { ...wire, today: { requests: 1.5, tokens: -1, earned_micro_credits: 2 ** 60 }, policy: { ...wire.policy, schedule: [{ days: [7, 2, 'x'], start_hour: 9, end_hour: 17 }] } };
    const n = await new Api(async () => json(200, bad)).network();
    expect(n.today).toEqual({ requests: 0, tokens: 0, earned_micro_credits: 0 });
    expect(n.policy.schedule[0]!.days).toEqual([2]);
  });

  it('passes the API error on (400 invalid_parameter with the node\'s message)', async () => {
    const api = new Api(async () => json(400, { error: { message: 'max_concurrent must be 1 to 1024', type: 'invalid_request_error', code: 'invalid_parameter' } }));
    const e = (await api.setNetwork({ ...wire.policy, max_concurrent: 0 }).catch((x: unknown) => x)) as ApiError;
    expect(e.status).toBe(400);
    expect(e.code).toBe('invalid_parameter');
    expect(e.message).toBe('max_concurrent must be 1 to 1024');
  });
});

describe('toModels / modelRows', () => {
  it('reads installed and served models and marks each row loaded with its in-flight count', () => {
    const m = toModels({
      profiles: [], loaded: 'a', max_loaded_models: 3, memory_budget_bytes: 1024,
      installed: [{ id: 'a', profile: 'a', size_bytes: 10 }, { id: 'b.q8_0', profile: null, file_name: 'B.Q8_0.gguf', size_bytes: 20 }],
      served: [{ id: 'a', in_flight: 2, last_used_ms: 5 }, { id: 'file-model', in_flight: 0, last_used_ms: 0 }],
    });
    expect(m.max_loaded_models).toBe(3);
    expect(modelRows(m)).toEqual([
      { id: 'a', label: 'a', size_bytes: 10, loaded: true, in_flight: 2 },
      { id: 'b.q8_0', label: 'B.Q8_0.gguf', size_bytes: 20, loaded: false, in_flight: 0 },
      { id: 'file-model', label: 'file-model', loaded: true, in_flight: 0 },
    ]);
    expect(modelRows(toModels({ profiles: [], loaded: null }))).toEqual([]);
  });

  it('words the load and unload refusals', () => {
    expect(modelActionError(new ApiError(409, 'busy', 'model_busy'), 'unload', 'a').message).toContain('cannot be unloaded');
    expect(modelActionError(new ApiError(503, 'no room', 'model_memory_budget'), 'load', 'a').message).toContain('Not enough room to load a');
    expect(modelActionError(new ApiError(404, 'x', 'model_not_found'), 'load', 'a').message).toBe('a is not installed on this node any more.');
  });
});
