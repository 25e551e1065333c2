// Small pure helpers: setup-token handling, the human node code, formatting, password strength.

/**
 * Reads `token=...` from a URL fragment such as `#token=abc` or `#/claim&token=abc`.
 * Returns undefined when there is none. The token is never put anywhere but memory.
 */
export function tokenFromHash(hash: string): string | undefined {
  const h = hash.replace(/^#/, '');
  for (const part of h.split(/[&?]/)) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).replace(/^\/.*\//, '') === 'token') {
      const value = decodeURIComponent(part.slice(eq + 1)).trim();
      if (value) return value;
    }
  }
  return undefined;
}

/** The route part of the fragment (`#/keys` -> `keys`), ignoring any token parameter. */
export function routeFromHash(hash: string): string {
  const h = hash.replace(/^#/, '');
  if (!h.startsWith('/')) return '';
  return h.slice(1).split(/[&?]/)[0] ?? '';
}

// Crockford-style alphabet without 0/O/1/I/L/U so the code can be read aloud.
const CODE_ALPHABET = '23456789ABCDEFGHJKMNPQRSTVWXYZ';

/**
 * A short human code for the node, like `B3IQ-N7K4`, derived from the node id
 * (FNV-1a over its UTF-8 bytes). The node prints the same code when the host provides one;
 * the API's `node_code` wins when present.
 */
export function humanCode(nodeId: string, fromServer?: string): string {
  if (fromServer) return fromServer;
  if (!nodeId) return 'B3IQ-····';
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(nodeId)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  let out = '';
  for (let i = 0; i < 4; i++) {
    out += CODE_ALPHABET[h % CODE_ALPHABET.length];
    h = Math.floor(h / CODE_ALPHABET.length);
  }
  return `B3IQ-${out}`;
}

export function formatBytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

/** Accepts unix seconds, unix milliseconds or an ISO string. */
export function toDate(t: string | number | null | undefined): Date | undefined {
  if (t === null || t === undefined || t === '') return undefined;
  if (typeof t === 'number') return new Date(t < 1e11 ? t * 1000 : t);
  if (/^\d+$/.test(t)) return toDate(Number(t));
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

export function formatTime(t: string | number | null | undefined): string {
  const d = toDate(t);
  if (!d) return '—';
  const sameDay = new Date().toDateString() === d.toDateString();
  return sameDay
    ? d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export interface Strength {
  score: 0 | 1 | 2 | 3 | 4;
  label: string;
  hint: string;
  acceptable: boolean;
}

/** A local, dependency-free strength estimate: length first, then variety, minus obvious patterns. */
export function passwordStrength(pw: string, username = ''): Strength {
  if (!pw) return { score: 0, label: 'Empty', hint: 'Use at least 12 characters; a few random words work well.', acceptable: false };
  let score = 0;
  if (pw.length >= 10) score++;
  if (pw.length >= 12) score++;
  if (pw.length >= 16) score++;
  const classes = [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/].filter((r) => r.test(pw)).length;
  if (classes >= 3) score++;
  const lower = pw.toLowerCase();
  const weak =
    /^(.)\1+$/.test(pw) ||
    /(password|passw0rd|qwerty|123456|letmein|admin|b3iq)/.test(lower) ||
    (username.length >= 3 && lower.includes(username.toLowerCase()));
  if (weak) score = Math.min(score, 1);
  const s = Math.max(0, Math.min(4, score)) as Strength['score'];
  const labels = ['Too weak', 'Weak', 'Fair', 'Good', 'Strong'] as const;
  const hints = [
    'Use at least 12 characters; a few random words work well.',
    weak ? 'Avoid common words, repeats and your username.' : 'Make it longer: at least 10 characters, 12 or more is better.',
    'Longer is stronger: aim for 16 characters, or mix in digits and symbols.',
    'Good. Longer is even better.',
    'A password manager can keep it for you.',
  ];
  return { score: s, label: labels[s], hint: hints[s] ?? '', acceptable: pw.length >= 10 && !weak };
}

// ---------------------------------------------------------------- credits, in integers
// Prices and earnings are integer micro-credits on the wire (u64 on the node). The wizard never
// puts them through floating point: decimals typed by the owner are parsed digit by digit into a
// BigInt, and amounts are formatted with BigInt division, so what is sent is exactly what was
// typed and what is shown is exactly what the node stored.

/** Micro-credits in one credit. */
export const MICROS_PER_CREDIT = 1_000_000n;

/**
 * `text` (a non-negative decimal such as `0.0015`, `12` or `.5`) times 10^`scale`, as a BigInt;
 * null when it is not such a number or has more than `scale` decimals (it would not be a whole
 * number of the stored unit).
 */
export function parseScaledDecimal(text: string, scale: number): bigint | null {
  const m = /^\s*(\d*)(?:\.(\d*))?\s*$/.exec(text);
  if (!m) return null;
  const whole = m[1] ?? '';
  const frac = m[2] ?? '';
  if (!whole && !frac) return null;
  if (frac.length > scale) {
    // Trailing zeros beyond the scale are harmless (`0.100` at scale 1).
    if (/[^0]/.test(frac.slice(scale))) return null;
  }
  const fracDigits = frac.slice(0, scale).padEnd(scale, '0');
  return BigInt(whole || '0') * 10n ** BigInt(scale) + BigInt(fracDigits || '0');
}

/** `value` / 10^`scale` as a decimal string with at least `minDecimals` places (trailing zeros beyond that dropped). */
export function formatScaled(value: bigint | number, scale: number, minDecimals = 0): string {
  const v = BigInt(value);
  const neg = v < 0n;
  const abs = neg ? -v : v;
  const unit = 10n ** BigInt(scale);
  const whole = abs / unit;
  let frac = (abs % unit).toString().padStart(scale, '0');
  while (frac.length > minDecimals && frac.endsWith('0')) frac = frac.slice(0, -1);
  return `${neg ? '-' : ''}${whole.toString()}${frac ? `.${frac}` : ''}`;
}

/** Micro-credits shown as credits with exactly 6 decimals: 1234567 -> `1.234567`. */
export function formatCredits(microCredits: bigint | number): string {
  return formatScaled(microCredits, 6, 6);
}

/**
 * A price per 1,000 tokens in credits (what the owner types) as micro-credits per 1M tokens
 * (what the node stores): credits/1k x 1,000,000 micro x 1,000 = x 10^9. Up to 9 decimals are
 * exact; null for anything else or above the largest integer JSON carries exactly.
 */
export function creditsPer1kToMicrosPer1m(text: string): number | null {
  const v = parseScaledDecimal(text, 9);
  if (v === null || v > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return Number(v);
}

/** The inverse of creditsPer1kToMicrosPer1m, for showing a stored price: 1500000 -> `0.0015`. */
export function microsPer1mToCreditsPer1k(microsPer1m: number): string {
  return formatScaled(BigInt(microsPer1m), 9);
}

/** Credits typed by the owner (up to 6 decimals) as micro-credits; null when not exact or too large. */
export function creditsToMicros(text: string): number | null {
  const v = parseScaledDecimal(text, 6);
  if (v === null || v > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return Number(v);
}
