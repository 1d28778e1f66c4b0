import { mkdtempSync, mkdirSync, readFileSync, symlinkSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { limitStatusMessage, quote, STATUS_MESSAGE_MAX_BYTES } from '@imgbuilder/common/client-text';
import { Limiter } from '@imgbuilder/common/limiter';
import { LimiterBusyError } from '@imgbuilder/common/errors';
import { checkSnapshotSource, hasGitPart } from '@imgbuilder/common/source-policy';
import { SourceRefused } from '@imgbuilder/common/errors';
import { mkdirInside, openInside } from '../../apps/worker/src/sources/context-fs.js';

describe('client values in messages', () => {
  it('quotes short values whole and long ones cut, with their full length', () => {
    expect(quote('abc')).toBe('"abc"');
    const long = 'x'.repeat(153_600);
    expect(quote(long)).toBe(`"${'x'.repeat(100)}…" (153600 characters)`);
  });

  it('cuts any status message to 1 KiB of UTF-8', () => {
    const msg = limitStatusMessage(`bad: ${'é'.repeat(5000)}`);
    expect(Buffer.byteLength(msg)).toBeLessThanOrEqual(STATUS_MESSAGE_MAX_BYTES);
    expect(msg).toMatch(/… \(message cut from 5005 characters\)$/);
    expect(limitStatusMessage('short')).toBe('short');
  });
});

describe('.git path parts', () => {
  it('finds .git in any position and case, not in names that only start with it', () => {
    for (const p of ['.git', 'src/.git', 'src/.git/config', '.GIT/hooks', 'a\\.git\\x']) expect(hasGitPart(p), p).toBe(true);
    for (const p of ['.gitignore', 'src/.gitattributes', 'git/config', 'x.git', '']) expect(hasGitPart(p), p).toBe(false);
  });
});

describe('snapshot sources', () => {
  const policy = { ownBucket: 'own', sources: ['shared', 'team/builds/', 'own/extra'] };
  it('allows our snapshots/ prefix, listed buckets and listed prefixes', () => {
    expect(checkSnapshotSource('snapshots/a.tar', policy)).toEqual({ bucket: 'own', key: 'snapshots/a.tar' });
    expect(checkSnapshotSource('s3://own/snapshots/a.tar', policy)).toEqual({ bucket: 'own', key: 'snapshots/a.tar' });
    expect(checkSnapshotSource('s3://shared/any/where.tar', policy)).toEqual({ bucket: 'shared', key: 'any/where.tar' });
    expect(checkSnapshotSource('s3://team/builds/x.tar', policy)).toEqual({ bucket: 'team', key: 'builds/x.tar' });
    expect(checkSnapshotSource('extra/x.tar', policy)).toEqual({ bucket: 'own', key: 'extra/x.tar' });
  });

  it('refuses other buckets, other prefixes, logs and dot parts', () => {
    for (const name of ['s3://elsewhere/snapshots/a.tar', 'logs/b.log', 's3://team/other/x.tar', 's3://team/buildsX/x.tar', 'snapshots/../logs/x', 'snapshots//x', 's3://bucket-only']) {
      expect(() => checkSnapshotSource(name, policy), name).toThrowError(SourceRefused);
    }
    // A whole listed bucket that is our own still never serves build logs.
    expect(() => checkSnapshotSource('logs/b.log', { ownBucket: 'own', sources: ['own'] })).toThrow(/IMGBUILDER_SNAPSHOT_SOURCES/);
  });
});

describe('Limiter', () => {
  it('runs at most `limit` tasks at once and all of them eventually', async () => {
    const limiter = new Limiter(2);
    let running = 0;
    let peak = 0;
    const gates: (() => void)[] = [];
    const tasks = Array.from({ length: 5 }, (_, i) =>
      limiter.run(async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise<void>((resolve) => gates.push(resolve));
        running--;
        return i;
      }),
    );
    const settle = () => new Promise((r) => setImmediate(r));
    await settle();
    expect(gates).toHaveLength(2);
    expect(limiter.queued).toBe(3);
    for (let started = 2; started < 5; started++) {
      gates.shift()!();
      await settle();
      expect(running).toBe(2);
    }
    for (const g of gates.splice(0)) g();
    await expect(Promise.all(tasks)).resolves.toEqual([0, 1, 2, 3, 4]);
    expect(peak).toBe(2);
    expect(limiter.queued).toBe(0);
  });

  it('fails a task that waited longer than maxWaitMs, without running it', async () => {
    const limiter = new Limiter(1, 20);
    let release!: () => void;
    const first = limiter.run(() => new Promise<void>((r) => (release = r)));
    let ran = false;
    await expect(limiter.run(async () => (ran = true))).rejects.toBeInstanceOf(LimiterBusyError);
    expect(ran).toBe(false);
    expect(limiter.queued).toBe(0);
    release();
    await first;
    await expect(limiter.run(async () => 'free again')).resolves.toBe('free again');
  });

  it('frees the slot of a failing task', async () => {
    const limiter = new Limiter(1);
    await expect(limiter.run(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    await expect(limiter.run(async () => 'next')).resolves.toBe('next');
  });
});

describe('writes inside the build context', () => {
  it('creates directories part by part and refuses a symlinked part or a symlink at the file', async () => {
    const root = mkdtempSync(join(tmpdir(), 'imgbuilder-ctxfs-'));
    const outside = mkdtempSync(join(tmpdir(), 'imgbuilder-ctxfs-outside-'));
    symlinkSync(outside, join(root, 'out'));
    symlinkSync(join(outside, 'f'), join(root, 'file-link'));
    mkdirSync(join(root, 'real'));
    await mkdirInside(root, join(root, 'real/a/b'), 'test');
    const fh = await openInside(root, join(root, 'real/a/b/x.txt'), 'test');
    await fh.writeFile('ok');
    await fh.close();
    expect(readFileSync(join(root, 'real/a/b/x.txt'), 'utf8')).toBe('ok');
    await expect(mkdirInside(root, join(root, 'out/sub'), 'test')).rejects.toThrow(/out is a symlink/);
    await expect(openInside(root, join(root, 'out/x.txt'), 'test')).rejects.toThrow(/out is a symlink/);
    await expect(openInside(root, join(root, 'file-link'), 'test')).rejects.toThrow(/file-link is a symlink/);
    expect(existsSync(join(outside, 'sub'))).toBe(false);
    expect(existsSync(join(outside, 'x.txt'))).toBe(false);
    expect(existsSync(join(outside, 'f'))).toBe(false);
  });
});

describe('status message cut', () => {
  it('never ends on half a surrogate pair', () => {
    for (let pad = 0; pad < 20; pad++) {
      const msg = limitStatusMessage(`${'x'.repeat(pad)}${'😀'.repeat(2000)}`);
      expect(() => encodeURIComponent(msg)).not.toThrow();
      expect(Buffer.byteLength(msg)).toBeLessThanOrEqual(STATUS_MESSAGE_MAX_BYTES);
    }
  });
});
