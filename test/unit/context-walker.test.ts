import { symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { walkContext } from '@imgbuilder/common/context-walker';
import { ContextLimitExceeded, ContextSymlinkEscape } from '@imgbuilder/common/errors';
import { contextDir, paths } from '../support/context-dir.js';

describe('context walker', () => {
  it('lists files depth-first in sorted order, skipping the top-level .git only', async () => {
    const dir = contextDir({ b: '', 'a.txt': '', C: '', 'a/x': '', 'a/.git/config': '', '.git/HEAD': '', Dockerfile: '' });
    expect(await paths(dir)).toEqual(['C', 'Dockerfile', 'a/.git/config', 'a/x', 'a.txt', 'b']);
  });

  it('applies .dockerignore (patterns anchored at the root, as in Docker), sends .dockerignore and the kept Dockerfile anyway', async () => {
    const dir = contextDir({
      '.dockerignore': '# comment\n*.tmp\nsecret.txt\n.dockerignore\nDockerfile\nnode_modules\n',
      Dockerfile: 'FROM scratch\n',
      'secret.txt': 'x',
      'a.tmp': 'x',
      'src/b.tmp': 'x',
      'src/main.ts': '12345',
      'node_modules/dep/index.js': 'x',
    });
    const listing = await walkContext(dir, { keep: ['Dockerfile'] });
    expect(listing.entries.map((e) => e.path)).toEqual(['.dockerignore', 'Dockerfile', 'src/b.tmp', 'src/main.ts']);
    expect(listing.entries).toHaveLength(4);
    expect(listing.bytes).toBe(listing.entries.reduce((n, e) => n + e.stat.size, 0));
    expect(await paths(dir)).not.toContain('Dockerfile');
  });

  it('re-includes with ! under an excluded directory, whatever the ! pattern looks like', async () => {
    const files = { 'logs/keep.txt': '', 'logs/drop.txt': '', 'logs/deep/keep.txt': '', 'other/keep.txt': '', top: '' };
    for (const negation of ['!logs/keep.txt\n!logs/deep/keep.txt', '!*/keep.txt\n!*/*/keep.txt', '!**/keep.txt', '!logs']) {
      const dir = contextDir({ ...files, '.dockerignore': `logs\nother\n${negation}\n` });
      const listed = await paths(dir);
      expect(listed, negation).toContain('logs/keep.txt');
      expect(listed, negation).toContain('logs/deep/keep.txt');
      expect(listed, negation).toContain('top');
      if (negation !== '!logs') expect(listed, negation).not.toContain('logs/drop.txt');
    }
    // A ! pattern for another directory leaves this one excluded whole.
    const dir = contextDir({ ...files, '.dockerignore': 'logs\nother\n!src/keep.txt\n' });
    expect(await paths(dir)).toEqual(['.dockerignore', 'top']);
  });

  it('keeps a kept file under an excluded directory', async () => {
    const dir = contextDir({ '.dockerignore': 'build\n', 'build/Dockerfile': '', 'build/out.bin': '' });
    expect(await paths(dir, { keep: ['build/Dockerfile'] })).toEqual(['.dockerignore', 'build/Dockerfile']);
  });

  it('keeps symlinks inside as links, refuses those leaving the context unless excluded', async () => {
    const dir = contextDir({ 'data/file.txt': 'x' });
    symlinkSync('data/file.txt', join(dir, 'inner'));
    symlinkSync(dir, join(dir, 'self'));
    const listing = await walkContext(dir);
    expect(listing.entries.map((e) => [e.path, e.stat.isSymbolicLink()])).toEqual([
      ['data/file.txt', false],
      ['inner', true],
      ['self', true],
    ]);
    expect(listing.bytes).toBe(1);

    symlinkSync('/etc', join(dir, 'data', 'escape'));
    const err = await walkContext(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ContextSymlinkEscape);
    expect(err).toMatchObject({ path: 'data/escape', link: '/etc', message: 'symlink data/escape points outside the build context (/etc)' });

    writeFileSync(join(dir, '.dockerignore'), 'data/escape\n');
    expect(await paths(dir)).toEqual(['.dockerignore', 'data/file.txt', 'inner', 'self']);
  });

  it('refuses a .dockerignore that is a symlink leaving the context', async () => {
    const outside = contextDir({ ignore: '*\n' });
    const dir = contextDir({ Dockerfile: '' });
    symlinkSync(join(outside, 'ignore'), join(dir, '.dockerignore'));
    await expect(walkContext(dir)).rejects.toMatchObject({ path: '.dockerignore', message: '.dockerignore is a symlink pointing outside the build context' });
  });

  it('stops at the first entry past the file or byte cap', async () => {
    const dir = contextDir({ a: '1234', b: '5678', c: '' });
    await expect(walkContext(dir, { limits: { maxFiles: 2, maxBytes: 100 } })).rejects.toEqual(new ContextLimitExceeded('files', 2));
    await expect(walkContext(dir, { limits: { maxFiles: 10, maxBytes: 7 } })).rejects.toMatchObject({ limit: 'bytes', max: 7, message: 'build context is larger than 7 bytes' });
    expect((await walkContext(dir, { limits: { maxFiles: 3, maxBytes: 8 } })).entries).toHaveLength(3);
  });
});
