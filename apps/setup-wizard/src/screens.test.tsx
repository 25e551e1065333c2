import { fireEvent, render, screen, waitFor } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { Api, ApiError, type Job, type ModeInfo, type Models, type NetworkInfo, type NetworkPolicy } from './api';
import { DashboardScreen, draftFromPolicy, HardwareScreen, ModeScreen, ModelScreen, policyFromDraft, receiptExport, shortId } from './screens';

function fakeApi(methods: Partial<Record<keyof Api, (...a: never[]) => unknown>>): Api {
  const api = new Api(async () => { throw new Error('unexpected network call'); });
  Object.assign(api, methods);
  return api;
}

const PROFILE = { id: 'smollm2', name: 'SmolLM2 135M', size_bytes: 98362432, sha256: 'b179c9523d0e6a0f', installed: false, loaded: false, fits: true };

describe('ModelScreen', () => {
  it('installs with a live progress bar, then shows the model loaded and answers a test prompt', async () => {
    let models: Models = { profiles: [PROFILE], loaded: null };
    const steps: Job[] = [
      { id: 'job_1', kind: 'install_model', state: 'running', bytes_done: 50, bytes_total: 100 },
      { id: 'job_1', kind: 'install_model', state: 'succeeded', bytes_done: 100, bytes_total: 100 },
    ];
    const api = fakeApi({
      models: async () => models,
      installModel: vi.fn(async () => ({ id: 'job_1', kind: 'install_model', state: 'queued' })) as never,
      job: vi.fn(async () => {
        const j = steps.shift()!;
        if (j.state === 'succeeded') models = { profiles: [{ ...PROFILE, installed: true, loaded: true }], loaded: 'smollm2' };
        return j;
      }) as never,
      playground: vi.fn(async () => ({ model: 'smollm2', content: 'Hello there!', completion_tokens: 3, ttft_ms: 12, tokens_per_second: 50, receipt_id: 'rcpt_9' })) as never,
    });
    render(<ModelScreen api={api} />);
    const send = await screen.findByRole('button', { name: 'Send test prompt' }) as HTMLButtonElement;
    expect(send.disabled).toBe(true);
    fireEvent.click(await screen.findByRole('button', { name: /Install \(93.8 MiB\)/ }));
    const bar = await screen.findByRole('progressbar', { name: 'Install progress' });
    await waitFor(() => expect(bar.getAttribute('aria-valuenow')).toBe('50'), { timeout: 3000 });
    expect(await screen.findByText('is loaded and answering.', { exact: false }, { timeout: 3000 })).toBeTruthy();
    expect(api.installModel).toHaveBeenCalledWith('smollm2');
    fireEvent.click(screen.getByRole('button', { name: 'Send test prompt' }));
    expect(await screen.findByText('Hello there!')).toBeTruthy();
    expect(screen.getByText(/rcpt_9/)).toBeTruthy();
    expect(shortId('a'.repeat(64))).toBe(`${'a'.repeat(12)}…`);
  });

  it('shows a clear error when the install job fails', async () => {
    const api = fakeApi({
      models: async () => ({ profiles: [PROFILE], loaded: null }),
      installModel: async () => ({ id: 'job_2', kind: 'install_model', state: 'running' }),
      job: async () => ({ id: 'job_2', kind: 'install_model', state: 'failed', error: 'sha256 mismatch' }),
    });
    render(<ModelScreen api={api} />);
    fireEvent.click(await screen.findByRole('button', { name: /Install/ }));
    const alert = await screen.findByRole('alert', {}, { timeout: 3000 });
    expect(alert.textContent).toContain('Install failed: sha256 mismatch');
  });
});

describe('ModelScreen states', () => {
  it('points an installed profile to its Load button (no restart), and tests the served file', async () => {
    const playground = vi.fn(async () => ({ model: 'file-model', content: 'ok' }));
    const api = fakeApi({
      models: async () => ({ profiles: [{ ...PROFILE, installed: true }], loaded: 'file-model' }),
      playground: playground as never,
    });
    render(<ModelScreen api={api} />);
    expect(await screen.findByText(/is installed and verified/)).toBeTruthy();
    expect(screen.getByText(/no restart needed/)).toBeTruthy();
    expect(screen.getByText('b3iqd serve --model', { exact: false })).toBeTruthy();
    expect(screen.queryByRole('button', { name: /Install/ })).toBeNull();
    const send = screen.getByRole('button', { name: 'Send test prompt' }) as HTMLButtonElement;
    expect(send.disabled).toBe(false);
  });

  it('lists installed models with load state and in-flight count, loads one, sends the test prompt to it, and words refusals', async () => {
    const installed = [
      { id: 'smollm2', profile: 'smollm2', size_bytes: 98362432 },
      { id: 'smollm2-135m-instruct.q8_0', profile: null, file_name: 'SmolLM2-135M-Instruct.Q8_0.gguf', size_bytes: 144000000 },
    ];
    let served = [{ id: 'smollm2', in_flight: 2, last_used_ms: 1 }];
    const current = (): Models => ({ profiles: [{ ...PROFILE, installed: true, loaded: served.some((s) => s.id === 'smollm2') }], loaded: served[0]?.id ?? null, installed, served, max_loaded_models: 1 });
    const loadModel = vi.fn(async (id: string) => {
      if (served.length && served.every((s) => s.in_flight > 0)) throw new ApiError(503, 'model "x" needs about 144 MiB; the models in use (smollm2) hold ...', 'model_memory_budget', 'server_error');
      served = [{ id, in_flight: 0, last_used_ms: 2 }];
      return current();
    });
    const unloadModel = vi.fn(async () => { throw new ApiError(409, 'model "smollm2-135m-instruct.q8_0" is serving 1 request(s)', 'model_busy', 'invalid_request_error'); });
    const playground = vi.fn(async (_p: string, _n: number, model?: string) => ({ model: model ?? 'smollm2', content: `answer from ${model ?? 'default'}` }));
    const api = fakeApi({ models: async () => current(), loadModel: loadModel as never, unloadModel: unloadModel as never, playground: playground as never });
    render(<ModelScreen api={api} />);

    const table = await screen.findByTestId('installed-models');
    const row = (id: string) => table.querySelector(`tr[data-model="${id}"]`) as HTMLElement;
    expect(row('smollm2').textContent).toContain('Loaded');
    expect(row('smollm2').querySelector('td.num')!.textContent).toBe('2');
    expect(row('smollm2-135m-instruct.q8_0').textContent).toContain('Not loaded');
    // Busy: the unload button is disabled, and a load that needs its place is refused in words.
    expect((screen.getByRole('button', { name: 'Unload smollm2' }) as HTMLButtonElement).disabled).toBe(true);
    fireEvent.click(screen.getByRole('button', { name: 'Load smollm2-135m-instruct.q8_0' }));
    expect((await screen.findByRole('alert')).textContent).toContain('Not enough room to load smollm2-135m-instruct.q8_0');
    expect(row('smollm2-135m-instruct.q8_0').textContent).toContain('Not loaded');

    // Idle: the load succeeds, the default gives way, and the test prompt goes to the new model.
    served = [{ id: 'smollm2', in_flight: 0, last_used_ms: 1 }];
    fireEvent.click(screen.getByRole('button', { name: 'Load smollm2-135m-instruct.q8_0' }));
    await waitFor(() => expect(row('smollm2-135m-instruct.q8_0').textContent).toContain('Loaded'));
    expect(loadModel).toHaveBeenCalledWith('smollm2-135m-instruct.q8_0');
    expect(row('smollm2').textContent).toContain('Not loaded');
    expect(row('smollm2-135m-instruct.q8_0').textContent).toContain('Test prompt');
    expect(screen.queryByRole('alert')).toBeNull();
    fireEvent.click(screen.getByRole('button', { name: 'Send test prompt' }));
    expect(await screen.findByText('answer from smollm2-135m-instruct.q8_0')).toBeTruthy();
    expect(playground).toHaveBeenLastCalledWith(expect.any(String), 64, 'smollm2-135m-instruct.q8_0');

    // A request arrived between the refresh and the click: 409 model_busy, in words.
    fireEvent.click(screen.getByRole('button', { name: 'Unload smollm2-135m-instruct.q8_0' }));
    expect((await screen.findByRole('alert')).textContent).toContain('is answering requests right now, so it cannot be unloaded');
  });

  it('disables the test prompt while nothing is served', async () => {
    render(<ModelScreen api={fakeApi({ models: async () => ({ profiles: [PROFILE], loaded: null }) })} />);
    const send = await screen.findByRole('button', { name: 'Send test prompt' }) as HTMLButtonElement;
    await screen.findByRole('button', { name: /Install/ });
    expect(send.disabled).toBe(true);
  });
});

describe('HardwareScreen', () => {
  it('shows the SKU band and computes headroom against memory', async () => {
    const api = fakeApi({
      hardware: async () => ({
        hardware: { cpu_model: 'EPYC', cpu_cores: 2, memory_total_bytes: 4 * 1024 ** 3, gpus: [] },
        sku_band: { id: 'cpu', label: 'CPU only' },
        fits: [
          { profile: 'smollm2', fits: true, required_memory_bytes: 1024 ** 3, reason: 'fits in system memory' },
          { profile: 'big', fits: false, required_memory_bytes: 6 * 1024 ** 3 },
        ],
      }),
      models: async () => ({ profiles: [PROFILE], loaded: null }),
    });
    render(<HardwareScreen api={api} />);
    expect((await screen.findByTestId('sku-band')).textContent).toContain('CPU only');
    expect(screen.getByText('SmolLM2 135M')).toBeTruthy();
    expect(screen.getByText('3.0 GiB free')).toBeTruthy();
    expect(screen.getByText('2.0 GiB short')).toBeTruthy();
    expect(screen.getByText('Too big')).toBeTruthy();
  });
});

describe('ModeScreen', () => {
  it('has Local on and the others opt-in, disabled with the node’s reason', async () => {
    const api = fakeApi({
      mode: async () => ({ mode: 'local', modes: [
        { mode: 'local', selectable: true },
        { mode: 'managed', selectable: false, reason: 'managed mode is not available in this build' },
        { mode: 'network', selectable: false, reason: 'network mode is not available in this build' },
      ] }),
    });
    const { container } = render(<ModeScreen api={api} />);
    expect(await screen.findByText('managed mode is not available in this build')).toBeTruthy();
    const radios = [...container.querySelectorAll('input[name=mode]')] as HTMLInputElement[];
    expect(radios.map((r) => [r.value, r.checked, r.disabled])).toEqual([['local', true, false], ['managed', false, true], ['network', false, true]]);
    expect(screen.getAllByText(/Never prompts, outputs, keys/).length).toBe(1);
  });
});

describe('ModeScreen in managed mode', () => {
  it('shows the control plane, the enrollment and a refused heartbeat with its reason', async () => {
    const api = fakeApi({
      mode: async () => ({
        mode: 'managed',
        modes: [{ mode: 'local', selectable: true }, { mode: 'managed', selectable: true }, { mode: 'network', selectable: false, reason: 'n/a' }],
        managed: {
          audience: 'cp-0123', org_id: 'org_acme', job_key: 'ab'.repeat(32), expires_at_ms: Date.now() + 86_400_000, heartbeat_interval_ms: 30_000,
          last_heartbeat: { at_ms: Date.now(), sequence: 41, outcome: 'refused', code: 'node_suspended', error: 'suspended by an operator (maintenance)' },
        },
      }),
    });
    const { container } = render(<ModeScreen api={api} />);
    expect(await screen.findByText('Managed by cp-0123')).toBeTruthy();
    expect(screen.getByText('org_acme')).toBeTruthy();
    const hb = screen.getByTestId('last-heartbeat').textContent ?? '';
    expect(hb).toContain('Refused by the control plane');
    expect(hb).toContain('#41');
    expect(hb).toContain('maintenance');
    const radios = [...container.querySelectorAll('input[name=mode]')] as HTMLInputElement[];
    expect(radios.map((r) => [r.value, r.checked, r.disabled])).toEqual([['local', false, false], ['managed', true, false], ['network', false, true]]);
  });

  it('lists remote jobs waiting for approval and approves or rejects them', async () => {
    let jobs: Job[] = [
      { id: 'job_a', kind: 'build_support_bundle', state: 'awaiting_approval', issuer: 'remote', expires_at_ms: Date.now() + 60_000 },
      { id: 'job_b', kind: 'change_mode', state: 'awaiting_approval', issuer: 'remote' },
      { id: 'job_c', kind: 'run_benchmark', state: 'succeeded', issuer: 'remote', updated_at: 1 },
      { id: 'job_d', kind: 'install_model', state: 'succeeded', issuer: 'owner_local' },
    ];
    const approveJob = vi.fn(async (id: string) => { jobs = jobs.map((j) => (j.id === id ? { ...j, state: 'queued' } : j)); return jobs[0]; });
    const rejectJob = vi.fn(async (id: string) => { jobs = jobs.map((j) => (j.id === id ? { ...j, state: 'rejected' } : j)); return jobs[1]; });
    const api = fakeApi({
      mode: async () => ({ mode: 'managed', modes: [{ mode: 'local', selectable: true }], managed: { audience: 'cp-1', org_id: 'org_a', job_key: 'ab', expires_at_ms: 1, heartbeat_interval_ms: 1, last_heartbeat: null } }),
      jobs: async () => jobs,
      approveJob: approveJob as never,
      rejectJob: rejectJob as never,
    });
    render(<ModeScreen api={api} />);
    expect((await screen.findAllByTestId('pending-job')).length).toBe(2);
    expect(screen.getByText(/Send a support bundle/)).toBeTruthy();
    fireEvent.click(screen.getAllByText('Approve')[0]!);
    await waitFor(() => expect(approveJob).toHaveBeenCalledWith('job_a'));
    await waitFor(() => expect(screen.getAllByTestId('pending-job').length).toBe(1));
    fireEvent.click(screen.getByText('Reject'));
    await waitFor(() => expect(rejectJob).toHaveBeenCalledWith('job_b'));
    expect(await screen.findByText('Nothing waits for your approval.')).toBeTruthy();
    const trail = screen.getByTestId('remote-trail').textContent ?? '';
    expect(trail).toContain('run_benchmark');
    expect(trail).not.toContain('install_model');
  });

  it('shows no panel in local mode', async () => {
    render(<ModeScreen api={fakeApi({ mode: async () => ({ mode: 'local', modes: [{ mode: 'local', selectable: true }], managed: null }) })} />);
    expect(await screen.findByText('How this node works')).toBeTruthy();
    expect(screen.queryByTestId('managed-panel')).toBeNull();
  });
});

const MANAGED = { audience: 'cp-1', org_id: 'org_a', job_key: 'ab'.repeat(32), expires_at_ms: 1, heartbeat_interval_ms: 1, last_heartbeat: null };

function networkInfo(patch: Partial<NetworkInfo> = {}): NetworkInfo {
  return {
    policy: {
      schedule: [{ days: [0, 1, 2, 3, 4], start_hour: 9, end_hour: 17 }],
      max_tokens_per_day: 500000, max_concurrent: 2, models: [],
      price_floor: { prompt_per_1m_tokens: 1_500_000, completion_per_1m_tokens: 3_000_000, per_request: 0 },
    },
    offered_concurrency: 2,
    models: ['smollm2'],
    tunnel: { state: 'off', gateway_id: null, since_ms: 0, error: null },
    today: { requests: 3, tokens: 1200, earned_micro_credits: 1_234_567 },
    ...patch,
  };
}

function modeWithNetwork(mode: string, network: NetworkInfo, networkChoice: { selectable: boolean; reason?: string } = { selectable: true }): ModeInfo {
  return {
    mode,
    modes: [{ mode: 'local', selectable: true }, { mode: 'managed', selectable: true }, { mode: 'network', ...networkChoice }],
    managed: MANAGED,
    network,
  };
}

const NODE = { node_id: 'b3n_x', mode: 'managed', hardware: { gpus: [] }, runtime: { parallel: 4 }, models: [{ id: 'smollm2', loaded: true }, { id: 'qwen-0.5b', loaded: true }] };

/** Every number in a JSON value, at any depth. */
function numbersIn(v: unknown): number[] {
  if (typeof v === 'number') return [v];
  if (Array.isArray(v)) return v.flatMap(numbersIn);
  if (v && typeof v === 'object') return Object.values(v).flatMap(numbersIn);
  return [];
}

describe('ModeScreen network panel', () => {
  it('shows the tunnel, today in credits with 6 decimals, the offered share, and the policy as saved', async () => {
    const api = fakeApi({ mode: async () => modeWithNetwork('managed', networkInfo()), node: async () => NODE, jobs: async () => [] });
    render(<ModeScreen api={api} />);
    const panel = await screen.findByTestId('network-panel');
    expect(screen.getByTestId('tunnel-state').textContent).toContain('Off');
    expect(screen.getByTestId('network-today').textContent).toBe('3 requests · 1200 tokens · 1.234567 credits earned');
    expect(screen.getByTestId('offered-concurrency').textContent).toBe('2');
    expect(panel.textContent).toContain('One slot always stays free for your local keys');
    expect(panel.textContent).toContain('all times UTC');
    expect((screen.getByRole('checkbox', { name: 'Monday' }) as HTMLInputElement).checked).toBe(true);
    expect((screen.getByRole('checkbox', { name: 'Saturday' }) as HTMLInputElement).checked).toBe(false);
    expect((screen.getByLabelText('From (UTC)') as HTMLSelectElement).value).toBe('9');
    expect((screen.getByLabelText('Until (UTC)') as HTMLSelectElement).value).toBe('17');
    expect((screen.getByLabelText('Max tokens per day') as HTMLInputElement).value).toBe('500000');
    expect((screen.getByLabelText('Prompt, per 1,000 tokens') as HTMLInputElement).value).toBe('0.0015');
    expect((screen.getByLabelText('Completion, per 1,000 tokens') as HTMLInputElement).value).toBe('0.003');
    // The allowlist offers the served models, none ticked (every model).
    await screen.findByRole('checkbox', { name: 'qwen-0.5b' });
    expect((screen.getByRole('checkbox', { name: 'smollm2' }) as HTMLInputElement).checked).toBe(false);
  });

  it('saves the edited policy with PUT /api/network: integers only, per 1M tokens, days 0 = Monday', async () => {
    const setNetwork = vi.fn(async (p: NetworkPolicy) => networkInfo({ policy: p, models: ['smollm2'] }));
    const api = fakeApi({ mode: async () => modeWithNetwork('managed', networkInfo()), node: async () => NODE, jobs: async () => [], setNetwork: setNetwork as never });
    render(<ModeScreen api={api} />);
    await screen.findByTestId('network-panel');
    fireEvent.click(screen.getByRole('checkbox', { name: 'Friday' })); // Mon-Thu now
    fireEvent.click(screen.getByRole('button', { name: 'Add a time window' }));
    const starts = screen.getAllByLabelText('From (UTC)');
    const ends = screen.getAllByLabelText('Until (UTC)');
    fireEvent.change(starts[1]!, { target: { value: '0' } });
    fireEvent.change(ends[1]!, { target: { value: '24' } });
    for (const d of ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday']) fireEvent.click(screen.getAllByRole('checkbox', { name: d })[1]!);
    for (const d of ['Saturday', 'Sunday']) fireEvent.click(screen.getAllByRole('checkbox', { name: d })[1]!);
    fireEvent.change(screen.getByLabelText('Max tokens per day'), { target: { value: '' } });
    fireEvent.change(screen.getByLabelText('Max concurrent network requests'), { target: { value: '3' } });
    fireEvent.click(await screen.findByRole('checkbox', { name: 'smollm2' }));
    // 0.1 + 0.2 in floating point is 0.30000000000000004; typed prices must not drift.
    fireEvent.change(screen.getByLabelText('Prompt, per 1,000 tokens'), { target: { value: '0.3' } });
    fireEvent.change(screen.getByLabelText('Completion, per 1,000 tokens'), { target: { value: '0.000000007' } });
    fireEvent.change(screen.getByLabelText('Per request'), { target: { value: '0.25' } });
    expect(screen.getByText('Stored as 300000000 micro-credits per 1M tokens.')).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: 'Save network policy' }));
    await waitFor(() => expect(setNetwork).toHaveBeenCalledTimes(1));
    const sent = setNetwork.mock.calls[0]![0];
    expect(sent).toEqual({
      schedule: [{ days: [0, 1, 2, 3], start_hour: 9, end_hour: 17 }, { days: [5, 6], start_hour: 0, end_hour: 24 }],
      max_tokens_per_day: null,
      max_concurrent: 3,
      models: ['smollm2'],
      price_floor: { prompt_per_1m_tokens: 300_000_000, completion_per_1m_tokens: 7, per_request: 250_000 },
    });
    expect(numbersIn(sent).every(Number.isSafeInteger)).toBe(true);
    expect(JSON.stringify(sent)).not.toMatch(/\d\.\d|e[+-]?\d/);
    expect(await screen.findByText('Network policy saved')).toBeTruthy();
  });

  it('refuses a bad form before sending anything, naming each field', async () => {
    const setNetwork = vi.fn();
    const api = fakeApi({ mode: async () => modeWithNetwork('managed', networkInfo()), node: async () => NODE, jobs: async () => [], setNetwork: setNetwork as never });
    render(<ModeScreen api={api} />);
    await screen.findByTestId('network-panel');
    fireEvent.change(screen.getByLabelText('Until (UTC)'), { target: { value: '9' } });
    fireEvent.change(screen.getByLabelText('Max tokens per day'), { target: { value: '1.5' } });
    fireEvent.change(screen.getByLabelText('Max concurrent network requests'), { target: { value: '0' } });
    fireEvent.change(screen.getByLabelText('Prompt, per 1,000 tokens'), { target: { value: '0.0000000001' } });
    fireEvent.change(screen.getByLabelText('Per request'), { target: { value: '-1' } });
    fireEvent.click(screen.getByRole('button', { name: 'Save network policy' }));
    expect(await screen.findByText(/Window 1: “until” must be later than “from”/)).toBeTruthy();
    expect(screen.getByText(/whole number of tokens/)).toBeTruthy();
    expect(screen.getByText('Enter a whole number from 1 to 1024.')).toBeTruthy();
    expect(screen.getByText(/at most 9 decimals/)).toBeTruthy();
    expect(screen.getByText(/at most 6 decimals/)).toBeTruthy();
    const conc = screen.getByLabelText('Max concurrent network requests');
    expect(conc.getAttribute('aria-invalid')).toBe('true');
    expect(document.getElementById(conc.getAttribute('aria-describedby')!)?.textContent).toBe('Enter a whole number from 1 to 1024.');
    expect(setNetwork).not.toHaveBeenCalled();
    // A window with no day ticked is refused too (the API would read it as every day).
    fireEvent.change(screen.getByLabelText('Until (UTC)'), { target: { value: '17' } });
    for (const d of ['Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday']) fireEvent.click(screen.getByRole('checkbox', { name: d }));
    fireEvent.click(screen.getByRole('button', { name: 'Save network policy' }));
    expect(await screen.findByText('Window 1: tick at least one day.')).toBeTruthy();
    expect(setNetwork).not.toHaveBeenCalled();
  });

  it('shows the API’s error when the node refuses the policy', async () => {
    const api = fakeApi({
      mode: async () => modeWithNetwork('managed', networkInfo()), node: async () => NODE, jobs: async () => [],
      setNetwork: async () => { throw new ApiError(400, 'at most 32 schedule windows and 16 models', 'invalid_parameter', 'invalid_request_error'); },
    });
    render(<ModeScreen api={api} />);
    await screen.findByTestId('network-panel');
    fireEvent.click(screen.getByRole('button', { name: 'Save network policy' }));
    const alert = await screen.findByRole('alert');
    expect(alert.textContent).toContain('at most 32 schedule windows and 16 models');
    expect(screen.queryByText('Network policy saved')).toBeNull();
  });

  it('in network mode: connected to the gateway since when; down with the error', async () => {
    const since = Date.UTC(2026, 11, 2, 9, 30);
    const connected = networkInfo({ tunnel: { state: 'connected', gateway_id: 'gw-7f3a', since_ms: since, error: null } });
    const { unmount } = render(<ModeScreen api={fakeApi({ mode: async () => modeWithNetwork('network', connected), node: async () => NODE, jobs: async () => [], network: async () => connected })} />);
    const line = await screen.findByTestId('tunnel-state');
    expect(line.textContent).toBe(`Connected to gateway gw-7f3a since ${new Date(since).toLocaleString()}`);
    expect(((await screen.findAllByRole('radio')).find((r) => (r as HTMLInputElement).value === 'network') as HTMLInputElement).checked).toBe(true);
    unmount();
    const down = networkInfo({ tunnel: { state: 'down', gateway_id: null, since_ms: since, error: 'tunnel refused (HTTP 403): node suspended' } });
    render(<ModeScreen api={fakeApi({ mode: async () => modeWithNetwork('network', down), node: async () => NODE, jobs: async () => [], network: async () => down })} />);
    const d = await screen.findByTestId('tunnel-state');
    expect(d.textContent).toContain('Down');
    expect(d.textContent).toContain('tunnel refused (HTTP 403): node suspended');
  });

  it('lets the owner choose network mode when selectable, and shows the reason when not', async () => {
    const setMode = vi.fn(async () => {});
    const api = fakeApi({ mode: async () => modeWithNetwork('managed', networkInfo()), node: async () => NODE, jobs: async () => [], setMode: setMode as never });
    const { container, unmount } = render(<ModeScreen api={api} />);
    await screen.findByTestId('network-panel');
    const radio = container.querySelector('input[name=mode][value=network]') as HTMLInputElement;
    expect(radio.disabled).toBe(false);
    fireEvent.click(radio);
    await waitFor(() => expect(setMode).toHaveBeenCalledWith('network'));
    unmount();
    const reason = 'network mode keeps one slot for local keys, so it needs "parallel" of at least 2 in config.json (now 1)';
    const r2 = render(<ModeScreen api={fakeApi({ mode: async () => modeWithNetwork('managed', networkInfo({ offered_concurrency: 0 }), { selectable: false, reason }), node: async () => NODE, jobs: async () => [] })} />);
    expect((await screen.findByTestId('network-reason')).textContent).toContain(reason);
    expect((r2.container.querySelector('input[name=mode][value=network]') as HTMLInputElement).disabled).toBe(true);
  });

  it('draft and policy convert both ways without loss', () => {
    const p = networkInfo().policy;
    const { policy, errors } = policyFromDraft(draftFromPolicy(p));
    expect(errors).toEqual({});
    expect(policy).toEqual(p);
    const every = { ...p, schedule: [{ days: [], start_hour: 0, end_hour: 6 }] };
    expect(policyFromDraft(draftFromPolicy(every)).policy).toEqual(every);
  });
});

describe('DashboardScreen', () => {
  it('shows health, receipts with their signature check, and the audit log', async () => {
    const now = Math.floor(Date.now() / 1000);
    const api = fakeApi({
      node: async () => ({ node_id: 'b3n_x', mode: 'local', uptime_s: 3700, hardware: { gpus: [] }, runtime: { queue_depth: 0, max_queue: 64 }, models: [{ id: 'smollm2', loaded: true }], receipts_stored: 2 }),
      health: async () => true,
      usage: async () => ({ bucket: 'hour', series: [{ start: Math.floor(now / 3600) * 3600, requests: 2, prompt_tokens: 10, completion_tokens: 5 }], by_key: [] }),
      receipts: async () => [{ id: 'rcpt_1', model: 'smollm2', prompt_tokens: 10, completion_tokens: 5, created_at: now, duration_ms: 99, valid: true, signed: 'ab', node_public_key: 'cd' }],
      receipt: async () => ({ id: 'rcpt_1', model: 'smollm2', prompt_tokens: 10, completion_tokens: 5, created_at: now, valid: true, signed: 'abcdef', node_public_key: 'cd' }),
      audit: async () => [{ id: '1', at: now, actor: 'owner', action: 'key.create', target: 'key_1', outcome: 'ok' }],
      grants: async () => [],
    });
    globalThis.URL.createObjectURL = vi.fn(() => 'blob:x');
    globalThis.URL.revokeObjectURL = vi.fn();
    render(<DashboardScreen api={api} />);
    expect(await screen.findByText('Healthy')).toBeTruthy();
    expect(await screen.findByText('Signature valid')).toBeTruthy();
    expect(screen.getByText('key.create')).toBeTruthy();
    expect(screen.getByText('1h 1m')).toBeTruthy();
    fireEvent.click(screen.getByRole('button', { name: 'Details' }));
    expect(await screen.findByText('abcdef')).toBeTruthy();
    expect(screen.getByText('Download receipt JSON').getAttribute('href')).toBe('blob:x');
    expect(screen.getByTestId('usage-chart').getAttribute('aria-label')).toBe('2 requests and 15 tokens in the last 24 hours');
  });
});

describe('receiptExport', () => {
  it('writes the b3iq-receipts/v1 export that `b3iqd receipts verify` reads', () => {
    const out = JSON.parse(receiptExport({ id: 'rcpt_1', prompt_tokens: 1, completion_tokens: 2, signed: 'abcd', node_public_key: 'ef01' }, 'b3n_x'));
    expect(out.format).toBe('b3iq-receipts/v1');
    expect(out.node_public_key).toBe('ef01');
    expect(out.node_id).toBe('b3n_x');
    expect(out.receipts).toHaveLength(1);
    expect(out.receipts[0]).toMatchObject({ id: 'rcpt_1', signed: 'abcd' });
  });
});
