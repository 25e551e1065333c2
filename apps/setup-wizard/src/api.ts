// Typed client for the node's local HTTP API (docs/api.md).
//
// Rules this module keeps:
// - The owner session is an HttpOnly cookie; this code never sees or stores it.
// - Secrets (setup token, passwords, new key secrets) travel only in request bodies
//   and are never written to localStorage, sessionStorage, the URL or the console.
// - Every failure becomes an `ApiError` with the server's `{error: {message, type, code}}`
//   when there is one, or a clear message when the node could not be reached.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A failed API call: HTTP status (0 when the node was unreachable) plus the server's error body. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly type: string;
  /** Seconds to wait before retrying (from `Retry-After` on 429), when given. */
  readonly retryAfter?: number;

  constructor(status: number, message: string, code = '', type = '', retryAfter?: number) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.type = type;
    this.retryAfter = retryAfter;
  }

  /** The setup token is missing, already used, or expired. */
  get isTokenProblem(): boolean {
    return this.code === 'setup_token_invalid' || this.code === 'setup_token_expired';
  }

  /** The owner is not signed in (or the session expired). */
  get isUnauthenticated(): boolean {
    return this.status === 401;
  }
}

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

async function errorFrom(res: Response): Promise<ApiError> {
  let message = `${res.status} ${res.statusText || 'request failed'}`;
  let code = '';
  let type = '';
  try {
    const body = (await res.json()) as { error?: { message?: unknown; code?: unknown; type?: unknown } };
    if (body && typeof body === 'object' && body.error && typeof body.error === 'object') {
      if (typeof body.error.message === 'string' && body.error.message) message = body.error.message;
      if (typeof body.error.code === 'string') code = body.error.code;
      if (typeof body.error.type === 'string') type = body.error.type;
    }
  } catch {
    // not JSON: keep the status line
  }
  const ra = Number(res.headers.get('Retry-After') ?? '');
  return new ApiError(res.status, message, code, type, Number.isFinite(ra) && ra > 0 ? ra : undefined);
}

/** Low-level JSON request against the node (same origin, cookie session). */
export async function request<T>(
  fetchImpl: FetchLike,
  method: string,
  path: string,
  body?: unknown,
): Promise<T> {
  const init: RequestInit = {
    method,
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { Accept: 'application/json' },
  };
  if (body !== undefined) {
    init.headers = { ...init.headers, 'Content-Type': 'application/json' };
    init.body = JSON.stringify(body);
  }
  let res: Response;
  try {
    res = await fetchImpl(path, init);
  } catch {
    throw new ApiError(0, 'Cannot reach the B3IQ node. Check that `b3iqd serve` is running, then retry.', 'unreachable', 'network');
  }
  if (!res.ok) throw await errorFrom(res);
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  if (!text) return undefined as T;
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ApiError(res.status, `The node sent a response that is not JSON (${path}).`, 'bad_response', 'protocol');
  }
}

// ---------------------------------------------------------------- shapes (docs/api.md)

export interface GpuInfo {
  name: string;
  memory_bytes?: number;
  driver?: string;
  backend?: string;
}

export interface Hardware {
  cpu_model?: string;
  cpu_cores?: number;
  cpu_threads?: number;
  memory_total_bytes?: number;
  memory_available_bytes?: number;
  gpus: GpuInfo[];
  /** Driver / accelerator stack, when the host reports it (e.g. "CUDA 12.4", "Vulkan", "Metal"). */
  driver_stack?: string;
  os?: string;
  arch?: string;
}

/** How clients reach the node (`transport` in /api/setup/status and /api/node). */
export interface Transport {
  listen?: string;
  scheme: 'http' | 'https';
  /** Bound to an address other machines can reach (not loopback). */
  lan: boolean;
  /** TLS in use: its mode and the certificate's SHA-256 fingerprint; null for plain HTTP. */
  tls: { mode: string; fingerprint_sha256: string } | null;
}

export interface SetupStatus {
  claimed: boolean;
  node_id: string;
  node_code?: string;
  version?: string;
  setup_token_expires_at: number | null;
  hardware?: Hardware;
  transport?: Transport;
}

export interface Session {
  username: string;
  expires_at?: number;
}

export interface ModelProfile {
  id: string;
  name: string;
  size_bytes?: number;
  sha256?: string;
  installed: boolean;
  loaded: boolean;
  fits?: boolean;
  default?: boolean;
}

/** A model in the node's store (`GET /api/models` `installed[]`): a catalog profile or an import. */
export interface InstalledModel {
  /** The id requests and `POST /api/models/load` name. */
  id: string;
  profile: string | null;
  file_name?: string;
  size_bytes?: number;
  sha256?: string;
}

/** A model the runtime holds now (`GET /api/models` `served[]`). */
export interface ServedModelInfo {
  id: string;
  /** Requests it is serving now (it cannot be unloaded while above 0). */
  in_flight: number;
  /** Unix ms of its last request (0: never). */
  last_used_ms: number;
  resident_bytes_estimate?: number;
}

export interface Models {
  profiles: ModelProfile[];
  /** The first served model's id (the one a request without `model` gets). */
  loaded: string | null;
  installed?: InstalledModel[];
  served?: ServedModelInfo[];
  /** How many models may be loaded at once (`max_loaded_models`). */
  max_loaded_models?: number;
  memory_budget_bytes?: number;
}

/** One row of the models screen's "installed models": load state from `served`. */
export interface ModelRow {
  id: string;
  label: string;
  size_bytes?: number;
  loaded: boolean;
  in_flight: number;
}

/** The installed models with whether each is loaded and how many requests it serves; a
 * served model missing from the store (a file given to `b3iqd serve --model`) is listed too. */
export function modelRows(m: Models): ModelRow[] {
  const served = new Map((m.served ?? []).map((s) => [s.id, s]));
  const rows: ModelRow[] = (m.installed ?? []).map((i) => ({
    id: i.id,
    label: i.profile ?? i.file_name ?? i.id,
    size_bytes: i.size_bytes,
    loaded: served.has(i.id),
    in_flight: served.get(i.id)?.in_flight ?? 0,
  }));
  for (const s of m.served ?? []) {
    if (!rows.some((r) => r.id === s.id)) rows.push({ id: s.id, label: s.id, loaded: true, in_flight: s.in_flight });
  }
  return rows;
}

/** A load or unload refusal in words (409 `model_busy`, 503 `model_memory_budget`, 404). */
export function modelActionError(e: unknown, action: 'load' | 'unload', id: string): Error {
  if (e instanceof ApiError) {
    if (e.code === 'model_busy') return new Error(`${id} is answering requests right now, so it cannot be unloaded. Try again when they finish. (${e.message})`);
    if (e.code === 'model_memory_budget') return new Error(`Not enough room to load ${id}: the loaded models are busy and fill the memory budget or every model place. Try again when their requests finish, or raise model_memory_mb / max_loaded_models in config.json. (${e.message})`);
    if (e.code === 'model_not_found') return new Error(action === 'load' ? `${id} is not installed on this node any more.` : `${id} is not loaded.`);
    if (e.code === 'model_not_loaded') return new Error('This node runs without an inference runtime, so it cannot load models.');
  }
  return e instanceof Error ? e : new Error(String(e));
}

export function toModels(v: unknown): Models {
  const o = obj(v);
  return {
    profiles: arr(o.profiles).map(toProfile),
    loaded: str(o.loaded) ?? null,
    installed: arr(o.installed).map((x) => {
      const i = obj(x);
      return { id: str(i.id) ?? '', profile: str(i.profile) ?? null, file_name: str(i.file_name), size_bytes: num(i.size_bytes), sha256: str(i.sha256) };
    }),
    served: arr(o.served).map((x) => {
      const s = obj(x);
      return { id: str(s.id) ?? '', in_flight: num(s.in_flight) ?? 0, last_used_ms: num(s.last_used_ms) ?? 0, resident_bytes_estimate: num(s.resident_bytes_estimate) };
    }),
    max_loaded_models: num(o.max_loaded_models),
    memory_budget_bytes: num(o.memory_budget_bytes),
  };
}

export interface FitInfo {
  profile: string;
  fits: boolean;
  required_memory_bytes?: number;
  recommended_memory_bytes?: number;
  reason?: string;
}

export interface HardwareReview {
  hardware: Hardware;
  sku_band: { id: string; label: string };
  fits: FitInfo[];
}

export interface NodeInfo {
  node_id: string;
  node_code?: string;
  version?: string;
  mode: string;
  listen?: string;
  uptime_s?: number;
  hardware: Hardware;
  runtime: { backend?: string; kind?: string; queue_depth?: number; active_sequences?: number; max_queue?: number; parallel?: number };
  models: { id: string; loaded: boolean; size_bytes?: number; sha256?: string }[];
  receipts_stored?: number;
}

export interface Job {
  id: string;
  kind: string;
  profile?: string;
  state: 'queued' | 'running' | 'succeeded' | 'failed' | 'rejected' | string;
  bytes_done?: number;
  bytes_total?: number;
  error?: string;
  created_at?: number;
  updated_at?: number;
  /** `owner_local` (asked for here) or `remote` (signed by the control plane). */
  issuer?: string;
  /** Signed expiry of a remote job, unix ms. */
  expires_at_ms?: number;
}

export interface ChatResult {
  model: string;
  content: string;
  finish_reason?: string;
  prompt_tokens?: number;
  completion_tokens?: number;
  ttft_ms?: number;
  duration_ms?: number;
  tokens_per_second?: number;
  receipt_id?: string;
}

export interface ApiKey {
  id: string;
  name: string;
  prefix?: string;
  scopes: string[];
  created_at?: number;
  last_used_at: number | null;
  expires_at: number | null;
  revoked_at: number | null;
}

/** The POST /api/keys answer: the only time the secret exists outside the user's own storage. */
export interface CreatedKey {
  key: ApiKey;
  secret: string;
}

export interface UsagePoint {
  start: number;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
}

export interface Usage {
  bucket: 'hour' | 'day';
  series: UsagePoint[];
  by_key: { key_id: string; name?: string; requests: number; prompt_tokens: number; completion_tokens: number }[];
}

export interface Receipt {
  id: string;
  seq?: number;
  request_id?: string;
  key_id?: string;
  model?: string;
  prompt_tokens: number;
  completion_tokens: number;
  created_at?: number;
  ttft_ms?: number;
  duration_ms?: number;
  node_public_key?: string;
  signed?: string;
  valid?: boolean;
}

export interface AuditEvent {
  id: string;
  at?: number;
  actor?: string;
  action: string;
  target?: string;
  outcome?: string;
  detail?: string;
}

export interface SupportGrant {
  id: string;
  prefix?: string;
  note?: string;
  scopes: string[];
  created_at?: number;
  expires_at?: number;
  revoked_at: number | null;
}

/** The last heartbeat a managed node sent: `accepted`, `refused` (with the control plane's code and reason) or `unreachable`. */
export interface HeartbeatReport {
  at_ms: number;
  sequence: number;
  outcome: string;
  code?: string;
  error?: string;
}

/** The control plane this node is enrolled in (null in local mode). */
export interface ManagedInfo {
  audience: string;
  org_id: string;
  job_key: string;
  expires_at_ms: number;
  heartbeat_interval_ms: number;
  last_heartbeat: HeartbeatReport | null;
}

export interface ModeInfo {
  mode: string;
  modes: { mode: string; selectable: boolean; reason?: string }[];
  managed?: ManagedInfo | null;
  /** The network policy and the tunnel (present from the node version that has network mode). */
  network?: NetworkInfo | null;
}

/** A window of the week in which network requests are served, in UTC. */
export interface ScheduleWindow {
  /** 0 = Monday .. 6 = Sunday; empty: every day. */
  days: number[];
  /** First hour served, 0-23 (UTC). */
  start_hour: number;
  /** First hour no longer served, 1-24 (UTC), above start_hour. */
  end_hour: number;
}

/** The least price a network request must pay; integer micro-credits. */
export interface PriceFloor {
  prompt_per_1m_tokens: number;
  completion_per_1m_tokens: number;
  per_request: number;
}

/** The owner's network policy (`PUT /api/network` body). Every number is an integer. */
export interface NetworkPolicy {
  /** Empty: always. */
  schedule: ScheduleWindow[];
  /** Prompt + completion tokens per UTC day; null: no limit. */
  max_tokens_per_day: number | null;
  /** Network requests at once (the node keeps one slot for local keys). */
  max_concurrent: number;
  /** Model ids offered to the network; empty: every served model. */
  models: string[];
  price_floor: PriceFloor;
}

/** The tunnel to the hosted gateway. */
export interface TunnelStatus {
  state: 'connected' | 'connecting' | 'down' | 'off' | string;
  gateway_id: string | null;
  since_ms: number;
  error: string | null;
}

/** Network requests served today (UTC day), from the node's receipts. */
export interface NetworkToday {
  requests: number;
  tokens: number;
  earned_micro_credits: number;
}

/** `GET /api/network`, and `network` in `GET /api/mode`. */
export interface NetworkInfo {
  policy: NetworkPolicy;
  /** What the node offers now: the policy's max_concurrent, at most the runtime's slots minus one. */
  offered_concurrency: number;
  /** Models the tunnel offers now (served and allowed by the policy). */
  models: string[];
  tunnel: TunnelStatus;
  today: NetworkToday;
}

/** `GET /api/update`: the running version and a fresh signed check of the release repository. */
export interface UpdateStatus {
  current: string;
  /** A release repository is configured (`b3iqd update check --repo`). */
  configured: boolean;
  /** A newer signed release is available. */
  available: boolean;
  latest: string | null;
  /** The release notes' summary, from the signed targets metadata. */
  notes: string | null;
  /** Why the check failed (a refusal or an unreachable repository). */
  error: string | null;
  code: string | null;
}

export function toUpdate(v: unknown): UpdateStatus {
  const o = obj(v);
  return {
    current: str(o.current) ?? '',
    configured: o.configured === true,
    available: o.available === true,
    latest: str(o.latest) ?? null,
    notes: str(o.notes) ?? null,
    error: str(o.error) ?? null,
    code: str(o.code) ?? null,
  };
}

export function toManaged(v: unknown): ManagedInfo | null {
  if (v === null || typeof v !== 'object') return null;
  const o = obj(v);
  const h = o.last_heartbeat && typeof o.last_heartbeat === 'object' ? obj(o.last_heartbeat) : null;
  return {
    audience: str(o.audience) ?? '',
    org_id: str(o.org_id) ?? '',
    job_key: str(o.job_key) ?? '',
    expires_at_ms: typeof o.expires_at_ms === 'number' ? o.expires_at_ms : 0,
    heartbeat_interval_ms: typeof o.heartbeat_interval_ms === 'number' ? o.heartbeat_interval_ms : 0,
    last_heartbeat: h
      ? { at_ms: typeof h.at_ms === 'number' ? h.at_ms : 0, sequence: typeof h.sequence === 'number' ? h.sequence : 0, outcome: str(h.outcome) ?? 'unknown', code: str(h.code), error: str(h.error) }
      : null,
  };
}

// ---------------------------------------------------------------- normalizers
// The host's JSON is checked and mapped into the shapes above in one place, so the UI
// never crashes on a missing field and never branches on wire details.

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const obj = (v: unknown): Obj => (isObj(v) ? v : {});
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const numOrNull = (v: unknown): number | null => num(v) ?? null;
const strs = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

export function toHardware(v: unknown): Hardware {
  const o = obj(v);
  return {
    cpu_model: str(o.cpu_model),
    cpu_cores: num(o.cpu_cores),
    cpu_threads: num(o.cpu_threads),
    memory_total_bytes: num(o.memory_total_bytes),
    memory_available_bytes: num(o.memory_available_bytes),
    gpus: arr(o.gpus).map((g) => {
      const x = obj(g);
      return { name: str(x.name) ?? 'GPU', memory_bytes: num(x.memory_bytes), driver: str(x.driver), backend: str(x.backend) };
    }),
    driver_stack: str(o.driver_stack),
    os: str(o.os),
    arch: str(o.arch),
  };
}

export function toStatus(v: unknown): SetupStatus {
  const o = obj(v);
  return {
    claimed: o.claimed === true,
    node_id: str(o.node_id) ?? '',
    node_code: str(o.node_code),
    version: str(o.version),
    setup_token_expires_at: numOrNull(o.setup_token_expires_at),
    hardware: o.hardware !== undefined ? toHardware(o.hardware) : undefined,
    transport: o.transport !== undefined ? toTransport(o.transport) : undefined,
  };
}

export function toTransport(v: unknown): Transport {
  const o = obj(v);
  const t = o.tls === null || o.tls === undefined ? null : obj(o.tls);
  return {
    listen: str(o.listen),
    scheme: o.scheme === 'https' ? 'https' : 'http',
    lan: o.lan === true,
    tls: t ? { mode: str(t.mode) ?? 'unknown', fingerprint_sha256: str(t.fingerprint_sha256) ?? '' } : null,
  };
}

export function toProfile(v: unknown): ModelProfile {
  const o = obj(v);
  const id = str(o.id) ?? '';
  return {
    id,
    name: str(o.name) ?? id,
    size_bytes: num(o.size_bytes),
    sha256: str(o.sha256),
    installed: o.installed === true,
    loaded: o.loaded === true,
    fits: typeof o.fits === 'boolean' ? o.fits : undefined,
    default: o.default === true,
  };
}

export function toNode(v: unknown): NodeInfo {
  const o = obj(v);
  const rt = obj(o.runtime);
  return {
    node_id: str(o.node_id) ?? '',
    node_code: str(o.node_code),
    version: str(o.version),
    mode: str(o.mode) ?? 'local',
    listen: str(o.listen),
    uptime_s: num(o.uptime_s),
    hardware: toHardware(o.hardware),
    runtime: {
      backend: str(rt.backend),
      kind: str(rt.kind),
      queue_depth: num(rt.queue_depth),
      active_sequences: num(rt.active_sequences),
      max_queue: num(rt.max_queue),
      parallel: num(rt.parallel),
    },
    models: arr(o.models).map((m) => {
      const x = obj(m);
      return { id: str(x.id) ?? '', loaded: x.loaded === true, size_bytes: num(x.size_bytes), sha256: str(x.sha256) };
    }),
    receipts_stored: num(o.receipts_stored),
  };
}

export function toJob(v: unknown): Job {
  const o = obj(v);
  const p = obj(o.progress);
  const err = o.error;
  return {
    id: str(o.id) ?? '',
    kind: str(o.kind) ?? '',
    profile: str(o.profile),
    state: str(o.state) ?? 'queued',
    bytes_done: num(p.bytes_done),
    bytes_total: num(p.bytes_total),
    error: isObj(err) ? str(err.message) : str(err),
    created_at: num(o.created_at),
    updated_at: num(o.updated_at),
    issuer: str(o.issuer),
    expires_at_ms: num(o.expires_at_ms),
  };
}

/** Fraction done in 0..1, or undefined when the job reports no byte progress. */
export function jobFraction(job: Job): number | undefined {
  if (job.state === 'succeeded') return 1;
  if (job.bytes_total && job.bytes_done !== undefined) return Math.max(0, Math.min(1, job.bytes_done / job.bytes_total));
  return undefined;
}

export function toKey(v: unknown): ApiKey {
  const o = obj(v);
  return {
    id: str(o.id) ?? '',
    name: str(o.name) ?? '',
    prefix: str(o.prefix),
    scopes: strs(o.scopes),
    created_at: num(o.created_at),
    last_used_at: numOrNull(o.last_used_at),
    expires_at: numOrNull(o.expires_at),
    revoked_at: numOrNull(o.revoked_at),
  };
}

export function toReceipt(v: unknown): Receipt {
  const o = obj(v);
  return {
    id: str(o.id) ?? '',
    seq: num(o.seq),
    request_id: str(o.request_id),
    key_id: str(o.key_id),
    model: str(o.model),
    prompt_tokens: num(o.prompt_tokens) ?? 0,
    completion_tokens: num(o.completion_tokens) ?? 0,
    created_at: num(o.created_at),
    ttft_ms: num(o.ttft_ms),
    duration_ms: num(o.duration_ms),
    node_public_key: str(o.node_public_key),
    signed: str(o.signed),
    valid: typeof o.valid === 'boolean' ? o.valid : undefined,
  };
}

export function toAudit(v: unknown, i: number): AuditEvent {
  const o = obj(v);
  const d = o.detail;
  return {
    id: str(o.id) ?? String(i),
    at: num(o.at),
    actor: str(o.actor),
    action: str(o.action) ?? 'event',
    target: str(o.target),
    outcome: str(o.outcome),
    detail: typeof d === 'string' ? d : d != null ? JSON.stringify(d) : undefined,
  };
}

export function toGrant(v: unknown): SupportGrant {
  const o = obj(v);
  return {
    id: str(o.id) ?? '',
    prefix: str(o.prefix),
    note: str(o.note),
    scopes: strs(o.scopes),
    created_at: num(o.created_at),
    expires_at: num(o.expires_at),
    revoked_at: numOrNull(o.revoked_at),
  };
}

/** A non-negative safe integer (u64 amounts above 2^53 cannot be carried exactly by JSON numbers). */
const uint = (v: unknown): number | undefined => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined);

export function toNetworkPolicy(v: unknown): NetworkPolicy {
  const o = obj(v);
  const pf = obj(o.price_floor);
  return {
    schedule: arr(o.schedule).map((w) => {
      const x = obj(w);
      return {
        days: arr(x.days).filter((d): d is number => Number.isInteger(d) && (d as number) >= 0 && (d as number) <= 6),
        start_hour: uint(x.start_hour) ?? 0,
        end_hour: uint(x.end_hour) ?? 24,
      };
    }),
    max_tokens_per_day: uint(o.max_tokens_per_day) ?? null,
    max_concurrent: uint(o.max_concurrent) ?? 1,
    models: strs(o.models),
    price_floor: {
      prompt_per_1m_tokens: uint(pf.prompt_per_1m_tokens) ?? 0,
      completion_per_1m_tokens: uint(pf.completion_per_1m_tokens) ?? 0,
      per_request: uint(pf.per_request) ?? 0,
    },
  };
}

export function toNetwork(v: unknown): NetworkInfo | null {
  if (!isObj(v)) return null;
  const t = obj(v.tunnel);
  const d = obj(v.today);
  return {
    policy: toNetworkPolicy(v.policy),
    offered_concurrency: uint(v.offered_concurrency) ?? 0,
    models: strs(v.models),
    tunnel: { state: str(t.state) || 'off', gateway_id: str(t.gateway_id) ?? null, since_ms: uint(t.since_ms) ?? 0, error: str(t.error) ?? null },
    today: { requests: uint(d.requests) ?? 0, tokens: uint(d.tokens) ?? 0, earned_micro_credits: uint(d.earned_micro_credits) ?? 0 },
  };
}

function toUsage(v: unknown): Usage {
  const o = obj(v);
  const point = (p: unknown) => {
    const x = obj(p);
    return {
      requests: num(x.requests) ?? 0,
      prompt_tokens: num(x.prompt_tokens) ?? 0,
      completion_tokens: num(x.completion_tokens) ?? 0,
    };
  };
  return {
    bucket: o.bucket === 'day' ? 'day' : 'hour',
    series: arr(o.series).map((p) => ({ start: num(obj(p).start) ?? 0, ...point(p) })).sort((a, b) => a.start - b.start),
    by_key: arr(o.by_key).map((p) => ({ key_id: str(obj(p).key_id) ?? '', name: str(obj(p).name), ...point(p) })),
  };
}

// ---------------------------------------------------------------- client

/** All calls the wizard makes. `fetchImpl` is injectable for unit tests. */
export class Api {
  private readonly f: FetchLike;

  constructor(fetchImpl?: FetchLike) {
    this.f = fetchImpl ?? ((input, init) => globalThis.fetch(input, init));
  }

  private call<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    return request<T>(this.f, method, path, body);
  }

  /** Liveness only (`GET /healthz`). */
  async health(): Promise<boolean> {
    try {
      const res = await this.f('/healthz', { cache: 'no-store', credentials: 'same-origin' });
      return res.ok;
    } catch {
      return false;
    }
  }

  async setupStatus(): Promise<SetupStatus> {
    return toStatus(await this.call('GET', '/api/setup/status'));
  }

  /** Consumes the setup token, creates the owner and starts the session (HttpOnly cookie). */
  async claim(setupToken: string, username: string, password: string): Promise<Session> {
    const o = obj(await this.call('POST', '/api/setup/claim', { setup_token: setupToken, username, password }));
    return { username: str(o.username) ?? username, expires_at: num(o.expires_at) };
  }

  async login(username: string, password: string): Promise<Session> {
    const o = obj(await this.call('POST', '/api/session/login', { username, password }));
    return { username: str(o.username) ?? username, expires_at: num(o.expires_at) };
  }

  async logout(): Promise<void> {
    await this.call('POST', '/api/session/logout', {});
  }

  /** The current owner session, or null when not signed in. */
  async session(): Promise<Session | null> {
    try {
      const o = obj(await this.call('GET', '/api/session'));
      return { username: str(o.username) ?? '', expires_at: num(o.expires_at) };
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return null;
      throw e;
    }
  }

  async node(): Promise<NodeInfo> {
    return toNode(await this.call('GET', '/api/node'));
  }

  async hardware(): Promise<HardwareReview> {
    const o = obj(await this.call('GET', '/api/hardware'));
    const band = obj(o.sku_band);
    return {
      hardware: toHardware(o.hardware),
      sku_band: { id: str(band.id) ?? 'unknown', label: str(band.label) ?? str(band.id) ?? 'Unknown' },
      fits: arr(o.fits).map((f) => {
        const x = obj(f);
        return { profile: str(x.profile) ?? '', fits: x.fits === true, required_memory_bytes: num(x.required_memory_bytes), recommended_memory_bytes: num(x.recommended_memory_bytes), reason: str(x.reason) };
      }),
    };
  }

  async models(): Promise<Models> {
    return toModels(await this.call('GET', '/api/models'));
  }

  /** Loads an installed model without a restart (`POST /api/models/load`); idle models may give way. */
  async loadModel(model: string): Promise<Models> {
    return toModels(await this.call('POST', '/api/models/load', { model }));
  }

  /** Unloads a loaded model (`POST /api/models/unload`); it stays installed. */
  async unloadModel(model: string): Promise<Models> {
    return toModels(await this.call('POST', '/api/models/unload', { model }));
  }

  /** Installs an approved model profile; the node runs it as a signed job. */
  async installModel(profile: string): Promise<Job> {
    const o = obj(await this.call('POST', '/api/jobs', { kind: 'install_model', profile }));
    return toJob(o.job ?? o);
  }

  /** The running version and whether a newer signed release is available (`GET /api/update`). */
  async update(): Promise<UpdateStatus> {
    return toUpdate(await this.call('GET', '/api/update'));
  }

  /**
   * Installs the signed current release as an owner job (`update`, the same verified path as
   * `b3iqd update apply`); `version` is the lowest release it may install.
   */
  async installUpdate(version: string): Promise<Job> {
    const o = obj(await this.call('POST', '/api/jobs', { kind: 'update', version }));
    return toJob(o.job ?? o);
  }

  /** Jobs, newest first. */
  async jobs(): Promise<Job[]> {
    return arr(obj(await this.call('GET', '/api/jobs')).jobs).map(toJob);
  }

  /** Approve a remote job that waits for the owner. */
  async approveJob(id: string): Promise<Job> {
    return toJob(await this.call('POST', `/api/jobs/${encodeURIComponent(id)}/approve`, {}));
  }

  /** Reject a remote job that waits for the owner; it never runs. */
  async rejectJob(id: string): Promise<Job> {
    return toJob(await this.call('POST', `/api/jobs/${encodeURIComponent(id)}/reject`, {}));
  }

  async job(id: string): Promise<Job> {
    return toJob(await this.call('GET', `/api/jobs/${encodeURIComponent(id)}`));
  }

  /** One chat turn with the loaded model as the owner (metered and receipted like any request). */
  async playground(prompt: string, maxTokens = 64, model?: string): Promise<ChatResult> {
    const body: Record<string, unknown> = { messages: [{ role: 'user', content: prompt }], max_tokens: maxTokens };
    if (model) body.model = model;
    const o = obj(await this.call('POST', '/api/playground/chat', body));
    const u = obj(o.usage);
    return {
      model: str(o.model) ?? '',
      content: str(o.content) ?? '',
      finish_reason: str(o.finish_reason),
      prompt_tokens: num(u.prompt_tokens),
      completion_tokens: num(u.completion_tokens),
      ttft_ms: num(o.ttft_ms),
      duration_ms: num(o.duration_ms),
      tokens_per_second: num(o.tokens_per_second),
      receipt_id: str(o.receipt_id),
    };
  }

  async mode(): Promise<ModeInfo> {
    const o = obj(await this.call('GET', '/api/mode'));
    return {
      mode: str(o.mode) ?? 'local',
      modes: arr(o.modes).map((m) => {
        const x = obj(m);
        return { mode: str(x.mode) ?? '', selectable: x.selectable === true, reason: str(x.reason) };
      }),
      managed: toManaged(o.managed),
      network: toNetwork(o.network),
    };
  }

  async setMode(mode: string): Promise<void> {
    await this.call('POST', '/api/mode', { mode });
  }

  /** The network policy, what the tunnel offers, its state and today's network earnings. */
  async network(): Promise<NetworkInfo> {
    const n = toNetwork(await this.call('GET', '/api/network'));
    if (!n) throw new ApiError(200, 'The node sent no network policy (GET /api/network).', 'bad_response', 'protocol');
    return n;
  }

  /** Replaces the network policy; answers the same object as `network()`. */
  async setNetwork(policy: NetworkPolicy): Promise<NetworkInfo> {
    const n = toNetwork(await this.call('PUT', '/api/network', policy));
    if (!n) throw new ApiError(200, 'The node saved the policy but sent no network object back. Reload to see it.', 'bad_response', 'protocol');
    return n;
  }

  /** Active (not revoked) keys. */
  async keys(): Promise<ApiKey[]> {
    return arr(obj(await this.call('GET', '/api/keys')).keys).map(toKey).filter((k) => k.revoked_at === null);
  }

  async createKey(name: string, scopes: string[], expiresInDays: number | null): Promise<CreatedKey> {
    const o = obj(await this.call('POST', '/api/keys', { name, scopes, expires_in_s: expiresInDays ? expiresInDays * 86400 : null }));
    const secret = str(o.secret);
    if (!secret) throw new ApiError(201, 'The node created a key but did not return its secret. Revoke it and create another.', 'bad_response', 'protocol');
    return { key: toKey(o.key), secret };
  }

  async revokeKey(id: string): Promise<void> {
    await this.call('DELETE', `/api/keys/${encodeURIComponent(id)}`);
  }

  async usage(bucket: 'hour' | 'day' = 'hour'): Promise<Usage> {
    return toUsage(await this.call('GET', `/api/usage?bucket=${bucket}`));
  }

  async receipts(limit = 20): Promise<Receipt[]> {
    return arr(obj(await this.call('GET', `/api/receipts?limit=${limit}`)).receipts).map(toReceipt);
  }

  async receipt(id: string): Promise<Receipt> {
    return toReceipt(await this.call('GET', `/api/receipts/${encodeURIComponent(id)}`));
  }

  async audit(limit = 50): Promise<AuditEvent[]> {
    return arr(obj(await this.call('GET', `/api/audit?limit=${limit}`)).events).map(toAudit);
  }

  async grants(): Promise<SupportGrant[]> {
    return arr(obj(await this.call('GET', '/api/support/grants')).grants).map(toGrant).filter((g) => g.revoked_at === null);
  }

  async createGrant(ttlSeconds: number, note: string): Promise<{ grant: SupportGrant; secret: string }> {
    const o = obj(await this.call('POST', '/api/support/grants', { ttl_s: ttlSeconds, note }));
    const secret = str(o.secret);
    if (!secret) throw new ApiError(201, 'The node created a grant but did not return its secret. Revoke it and create another.', 'bad_response', 'protocol');
    return { grant: toGrant(o.grant), secret };
  }

  async revokeGrant(id: string): Promise<void> {
    await this.call('DELETE', `/api/support/grants/${encodeURIComponent(id)}`);
  }
}
