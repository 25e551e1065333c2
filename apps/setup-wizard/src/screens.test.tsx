import { fireEvent, render, screen, waitFor } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { Api, type Job, type Models } from './api';
import { DashboardScreen, HardwareScreen, ModeScreen, ModelScreen, receiptExport, shortId } from './screens';

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
  it('explains that an installed profile is served after a restart, and tests the served file', async () => {
    const playground = vi.fn(async () => ({ model: 'file-model', content: 'ok' }));
    const api = fakeApi({
      models: async () => ({ profiles: [{ ...PROFILE, installed: true }], loaded: 'file-model' }),
      playground: playground as never,
    });
    render(<ModelScreen api={api} />);
    expect(await screen.findByText(/is installed and verified/)).toBeTruthy();
    expect(screen.getByText('b3iqd serve --model smollm2')).toBeTruthy();
    expect(screen.getByText('file-model')).toBeTruthy();
    expect(screen.queryByRole('button', { name: /Install/ })).toBeNull();
    const send = screen.getByRole('button', { name: 'Send test prompt' }) as HTMLButtonElement;
    expect(send.disabled).toBe(false);
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
