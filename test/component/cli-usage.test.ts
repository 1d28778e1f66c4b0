import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dockerfile } from '../../testkit/requests.js';
import { freePort, ROOT } from '../../testkit/stack.js';
import { cli, errorLines, noStackTrace } from '../support/cli-process.js';
import { contextDir } from '../support/context-dir.js';

// The CLI on its own: what it answers before, or without, reaching a server.
describe('connection and usage errors', () => {
  it('an unreachable server is one UNAVAILABLE line and exit 2, for build DIR and for ls', async () => {
    const closed = `127.0.0.1:${await freePort()}`;
    const dir = contextDir({ Dockerfile: dockerfile() });
    for (const res of [await cli(['build', dir, '--server', closed]), await cli(['ls'], { IMGBUILDER_SERVER: closed })]) {
      expect(res.code).toBe(2);
      expect(res.stdout).toBe('');
      expect(errorLines(res.stderr)).toEqual([`imgbuilder: UNAVAILABLE: cannot connect to ${closed}: connect ECONNREFUSED ${closed}`]);
      noStackTrace(res.stderr);
    }
  });

  it('usage errors exit 2 with one line', async () => {
    const both = await cli(['build', '.', '--git', 'git://127.0.0.1/x']);
    expect(both).toMatchObject({ code: 2, stderr: 'imgbuilder: USAGE: give either DIR or --git, not both\n' });
    const bad = await cli(['ls', '--server', 'no-port']);
    expect(bad).toMatchObject({ code: 2, stderr: 'imgbuilder: USAGE: --server "no-port" is not HOST:PORT\n' });
    const unknown = await cli(['build', '--frobnicate']);
    expect(unknown).toMatchObject({ code: 2, stderr: "imgbuilder: unknown option '--frobnicate'\n" });
    const noDockerfile = await cli(['build', contextDir({ 'a.txt': 'a' })]);
    expect(noDockerfile.code).toBe(2);
    expect(noDockerfile.stderr).toMatch(/^imgbuilder: USAGE: Dockerfile not found: \S+\/Dockerfile\n$/);
  });
});

describe('bin/imgbuilder.mjs (what `npx imgbuilder` runs)', () => {
  it('runs the TypeScript CLI through tsx, with no build step', async () => {
    const res = await cli(['--help'], {}, 60_000, join(ROOT, 'bin/imgbuilder.mjs'));
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout).toContain('Usage: imgbuilder');
  });
});
