import { describe, expect, it } from 'vitest';
import { creditsPer1kToMicrosPer1m, creditsToMicros, formatBytes, formatCredits, formatScaled, humanCode, microsPer1mToCreditsPer1k, parseScaledDecimal, passwordStrength, routeFromHash, toDate, tokenFromHash } from './util';

describe('setup token in the fragment', () => {
  it('reads token= in the usual and combined forms', () => {
    expect(tokenFromHash('#token=b3iq_setup_abc')).toBe('b3iq_setup_abc');
    expect(tokenFromHash('#/claim&token=b3iq_setup_abc')).toBe('b3iq_setup_abc');
    expect(tokenFromHash('#token=a%2Bb')).toBe('a+b');
  });
  it('is undefined when absent or empty', () => {
    expect(tokenFromHash('')).toBeUndefined();
    expect(tokenFromHash('#/keys')).toBeUndefined();
    expect(tokenFromHash('#token=')).toBeUndefined();
    expect(tokenFromHash('#notatoken=x')).toBeUndefined();
  });
  it('routeFromHash ignores the token', () => {
    expect(routeFromHash('#/keys')).toBe('keys');
    expect(routeFromHash('#/claim&token=x')).toBe('claim');
    expect(routeFromHash('#token=x')).toBe('');
  });
});

describe('humanCode', () => {
  it('prefers the server code', () => {
    expect(humanCode('b3n_x', 'K7QP-3MZD')).toBe('K7QP-3MZD');
  });
  it('derives a stable, readable code', () => {
    const a = humanCode('b3n_abcdef');
    expect(a).toMatch(/^B3IQ-[2-9A-HJ-NP-TV-Z]{4}$/);
    expect(humanCode('b3n_abcdef')).toBe(a);
    expect(humanCode('b3n_abcdeg')).not.toBe(a);
  });
});

describe('passwordStrength', () => {
  it('rejects short, common and username-based passwords', () => {
    expect(passwordStrength('').acceptable).toBe(false);
    expect(passwordStrength('short1!').acceptable).toBe(false);
    expect(passwordStrength('password12345').acceptable).toBe(false);
    expect(passwordStrength('aaaaaaaaaaaaaa').acceptable).toBe(false);
    expect(passwordStrength('alice-is-great-2026', 'alice').acceptable).toBe(false);
  });
  it('accepts a long passphrase and grades longer/more varied higher', () => {
    const fair = passwordStrength('mellow-tundra');
    const strong = passwordStrength('Mellow-Tundra-Quartz-9');
    expect(fair.acceptable).toBe(true);
    expect(strong.score).toBeGreaterThan(fair.score);
    expect(strong.label).toBe('Strong');
  });
});

describe('formatting', () => {
  it('formats bytes in binary units', () => {
    expect(formatBytes(undefined)).toBe('—');
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(98362432)).toBe('93.8 MiB');
    expect(formatBytes(25769803776)).toBe('24.0 GiB');
  });
  it('reads unix seconds, milliseconds and ISO', () => {
    expect(toDate(1763780000)?.getTime()).toBe(1763780000000);
    expect(toDate(1763780000000)?.getTime()).toBe(1763780000000);
    expect(toDate('2025-11-22T00:00:00Z')?.toISOString()).toBe('2025-11-22T00:00:00.000Z');
    expect(toDate(null)).toBeUndefined();
  });
});

describe('credits in integers', () => {
  it('parses decimals digit by digit, refusing what is not a whole number of the unit', () => {
    expect(parseScaledDecimal('0.0015', 9)).toBe(1_500_000n);
    expect(parseScaledDecimal('12', 6)).toBe(12_000_000n);
    expect(parseScaledDecimal('.5', 6)).toBe(500_000n);
    expect(parseScaledDecimal('0.100', 1)).toBe(1n);
    expect(parseScaledDecimal('0.0000001', 6)).toBeNull();
    for (const bad of ['', '.', '-1', '1e3', '1,5', 'abc', '0x10', '1.2.3']) expect(parseScaledDecimal(bad, 6)).toBeNull();
  });
  it('converts credits per 1,000 tokens to micro-credits per 1M tokens exactly (no float drift)', () => {
    // 0.1 + 0.2 style values that floating point gets wrong.
    expect(creditsPer1kToMicrosPer1m('0.3')).toBe(300_000_000);
    expect(creditsPer1kToMicrosPer1m('0.000000001')).toBe(1);
    expect(creditsPer1kToMicrosPer1m('1.000000007')).toBe(1_000_000_007);
    expect(creditsPer1kToMicrosPer1m('0.0000000001')).toBeNull();
    expect(creditsPer1kToMicrosPer1m('9007199.254740992')).toBeNull(); // above 2^53 - 1
    expect(creditsPer1kToMicrosPer1m('9007199.254740991')).toBe(Number.MAX_SAFE_INTEGER);
    expect(microsPer1mToCreditsPer1k(1_500_000)).toBe('0.0015');
    expect(microsPer1mToCreditsPer1k(0)).toBe('0');
    expect(microsPer1mToCreditsPer1k(Number.MAX_SAFE_INTEGER)).toBe('9007199.254740991');
    for (const n of [1, 7, 999, 1000, 123456789, 1_000_000_007]) expect(creditsPer1kToMicrosPer1m(microsPer1mToCreditsPer1k(n))).toBe(n);
    expect(creditsToMicros('0.25')).toBe(250_000);
    expect(creditsToMicros('0.0000001')).toBeNull();
  });
  it('shows micro-credits as credits with 6 decimals', () => {
    expect(formatCredits(0)).toBe('0.000000');
    expect(formatCredits(1)).toBe('0.000001');
    expect(formatCredits(1_234_567)).toBe('1.234567');
    expect(formatCredits(25_000_000)).toBe('25.000000');
    expect(formatCredits(Number.MAX_SAFE_INTEGER)).toBe('9007199254.740991');
    expect(formatCredits(18_446_744_073_709_551_615n)).toBe('18446744073709.551615');
    expect(formatScaled(1_500_000n, 6)).toBe('1.5');
  });
});
