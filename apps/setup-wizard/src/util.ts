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
