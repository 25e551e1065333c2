import { describe, expect, it } from 'vitest';
import { formatBytes, humanCode, passwordStrength, routeFromHash, toDate, tokenFromHash } from './util';

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
