// The public API of the control plane (b3iq-control src/public.rs; docs/control.md). The explorer
// reads nothing else.

export interface PresenceCounts { total: number; online: number; offline: number; never_seen: number; expired: number; suspended: number; revoked: number }
export interface TierCount { tier: number; nodes: number }
export interface PublicModel {
  model: string; nodes_ready: number; tiers: TierCount[]; capacity: number; in_flight: number; waiting: number;
  window_s: number; samples: number; median_ttft_ms: number | null; median_tokens_per_s_milli: number | null;
}
export interface EpochTotals { epochs: number; posted: number; receipt_count: number; total_payout: string; latest_epoch_id: number | null }
export interface NetworkStatus { generated_at_ms: number; nodes: PresenceCounts; models: PublicModel[]; epochs: EpochTotals }
export interface BenchmarkSummary { generated_tokens_per_s_milli: number; prompt_tokens_per_s_milli: number; ttft_ms: number; measured_at_ms: number }
export interface PublicNode {
  node_id: string; tier: number; reputation_bps: number; presence: string; uptime_s: number | null; availability_24h_bps: number;
  enrolled_at_ms: number; last_seen_ms: number | null; software_version: string | null; models: string[]; receipt_count: number;
  benchmark: BenchmarkSummary | null;
}
export interface PublicEpoch {
  epoch_id: number; status: string; start_ms: number; end_ms: number; closed_at_ms: number; receipts_assigned: number;
  receipt_count: number | null; receipt_root: string | null; payout_root: string | null; total_payout: string | null;
  leaf_count: number | null; tx_hash: string | null; posted_at: number | null;
}
export interface InclusionProof { leaf_index: number; leaf_count: number; siblings: string[]; receipt_root: string; tx_hash: string | null; posted_at: number }
export interface ReceiptInclusion { receipt_id: string; status: string; epoch_id: number | null; proof: InclusionProof | null }

/** An API error with the server's message (or a network failure). */
export class ApiError extends Error {
  constructor(public status: number, message: string) {
    super(message);
  }
}

export async function get<T>(path: string): Promise<T> {
  let r: Response;
  try {
    r = await fetch(path, { headers: { accept: 'application/json' } });
  } catch {
    throw new ApiError(0, 'The control plane could not be reached. Check your connection and retry.');
  }
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    const msg = (body as { error?: { message?: string } } | null)?.error?.message ?? `HTTP ${r.status}`;
    throw new ApiError(r.status, msg);
  }
  return body as T;
}

export const api = {
  status: () => get<NetworkStatus>('/v1/public/status'),
  nodes: () => get<{ nodes: PublicNode[] }>('/v1/public/nodes'),
  node: (id: string) => get<PublicNode>(`/v1/public/nodes/${encodeURIComponent(id)}`),
  epochs: () => get<{ epochs: PublicEpoch[] }>('/v1/public/epochs'),
  epoch: (id: string | number) => get<PublicEpoch>(`/v1/public/epochs/${encodeURIComponent(String(id))}`),
  receipt: (id: string) => get<ReceiptInclusion>(`/v1/public/receipts/${encodeURIComponent(id)}`),
};

/** Token base units (18 decimals) as tokens, exact (decimal string arithmetic, no floats). */
export function tokens(units: string | null): string {
  if (units === null || !/^\d+$/.test(units)) return '—';
  const s = units.padStart(19, '0');
  const whole = s.slice(0, -18).replace(/^0+(?=\d)/, '');
  const frac = s.slice(-18).replace(/0+$/, '');
  return frac ? `${whole}.${frac}` : whole;
}

export function when(ms: number | null): string {
  if (ms === null) return '—';
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

export function duration(s: number | null): string {
  if (s === null) return '—';
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d > 0 ? `${d} d ${h} h` : h > 0 ? `${h} h ${m} min` : `${m} min ${s % 60} s`;
}

export const bps = (x: number) => `${(x / 100).toFixed(2)} %`;
export const milli = (x: number | null) => (x === null ? '—' : (x / 1000).toFixed(1));
