import { describe, expect, it } from 'vitest';
import { PresignedLogUrls } from '../../apps/api/src/logs/log-urls.js';

describe('PresignedLogUrls', () => {
  it('signs each log once for many concurrent and later asks, with the configured lifetime', async () => {
    const signed: string[] = [];
    const urls = new PresignedLogUrls(async (key, ttlMs) => {
      signed.push(`${key}:${ttlMs}`);
      return `https://s3.example/${key}?n=${signed.length}`;
    }, 3_600_000);
    const got = await Promise.all(Array.from({ length: 2_000 }, (_, i) => urls.get(i % 2 ? 'logs/a' : 'logs/b')));
    expect(signed.sort()).toEqual(['logs/a:3600000', 'logs/b:3600000']);
    expect(new Set(got).size).toBe(2);
    expect(await urls.get('logs/a')).toBe(got[1]);
    expect(signed).toHaveLength(2);
  });

  it('does not keep a failure: the next ask signs again', async () => {
    let calls = 0;
    const urls = new PresignedLogUrls(async () => {
      if (++calls === 1) throw new Error('store away');
      return 'https://s3.example/logs/c';
    }, 60_000);
    await expect(urls.get('logs/c')).rejects.toThrow('store away');
    expect(await urls.get('logs/c')).toBe('https://s3.example/logs/c');
  });
});
