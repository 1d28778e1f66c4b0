import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitServer } from '../../testkit/git-server.js';
import { BASE_IMAGE, dockerfile } from '../../testkit/requests.js';
import { Gate } from '../../testkit/gate.js';
import { makePki, type TestPki } from '../support/certs.js';
import { contextDir } from '../support/context-dir.js';
import { CliProcess, cli as runCli, errorLines, noStackTrace, type CliResult } from '../support/cli-process.js';
import { startStack, type Stack } from '../../testkit/stack.js';

/** Small enough that a 1 MiB file of random bytes cannot be uploaded; every test context is far below it. */
const MAX_UPLOAD = '256KiB';

let stack: Stack;
let git: GitServer;
let server: string;
let tlsServer: string;
let certs: TestPki;

beforeAll(async () => {
  certs = makePki();
  [stack, git] = await Promise.all([startStack({ apis: 1, workers: 1, env: { IMGBUILDER_MAX_UPLOAD_BYTES: MAX_UPLOAD } }), GitServer.start()]);
  server = stack.apiAddrs[0];
  await stack.startApi({ IMGBUILDER_TLS_CERT: certs.serverCert, IMGBUILDER_TLS_KEY: certs.serverKey, IMGBUILDER_TLS_CA: certs.caCert });
  tlsServer = stack.apiAddrs[1];
});

afterAll(async () => {
  git?.stop();
  await stack?.stop();
});

/** The CLI against this file's API (IMGBUILDER_SERVER), unless `env` names another. */
const cli = (args: string[], env: Record<string, string> = {}, timeoutMs?: number) => runCli(args, { IMGBUILDER_SERVER: server, ...env }, timeoutMs);
const cliProcess = (args: string[]) => new CliProcess(args, { IMGBUILDER_SERVER: server });

const refPattern = () => new RegExp(`^${stack.env.IMGBUILDER_WORKSPACE_REPOSITORY.replace(/[.]/g, '\\.')}:[a-f0-9]{64}$`);

describe('imgbuilder build DIR', () => {
  it('uploads the directory, streams the log to stderr, prints only the workspace ref on stdout, and exits 0; unchanged, it is up to date at once', async () => {
    const dir = contextDir({ Dockerfile: `${dockerfile()}COPY hello.txt /hello.txt\nRUN cat /hello.txt\n`, 'hello.txt': 'hello-from-the-context\n' });
    const res = await cli(['build', dir]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stdout.trim()).toMatch(refPattern());
    expect(res.stdout.trim().split('\n')).toHaveLength(1);
    expect(res.stderr).toMatch(/==> uploaded .* as snapshots\/[a-f0-9]{64}\.tar\.gz/);
    expect(res.stderr).toMatch(/==> build \S+ running \(\d+\.\ds\)/);
    expect(res.stderr).toContain('hello-from-the-context');
    expect(res.stderr).toMatch(/==> build \S+ succeeded in /);

    // Same bytes, same snapshot key, same ref: the image exists, no build runs.
    const again = await cli(['build', dir]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toBe(res.stdout);
    expect(again.stderr).toContain('image is up to date');
    expect(again.stderr).not.toContain('hello-from-the-context');
  });

  it('a failing Dockerfile exits 1 with the failing step on stderr and nothing on stdout', async () => {
    const dir = contextDir({ Dockerfile: dockerfile('echo about-to-fail && exit 3') });
    const res = await cli(['build', dir]);
    expect(res.code, res.stderr).toBe(1);
    expect(res.stdout).toBe('');
    expect(res.stderr).toContain('about-to-fail');
    // Classic: "returned a non-zero code: 3"; BuildKit: "exit code: 3".
    expect(errorLines(res.stderr)).toEqual([expect.stringMatching(/^imgbuilder: build failed: .*(non-zero|exit) code: 3$/)]);
    noStackTrace(res.stderr);
  });

  it('honours .dockerignore: ignored files are neither uploaded (a 1 MiB file would exceed the cap) nor in the context', async () => {
    const dir = contextDir({
      Dockerfile: `${dockerfile()}COPY . /ctx\nRUN test -f /ctx/keep.txt && test ! -e /ctx/secret.txt && test ! -e /ctx/big.bin && test ! -e /ctx/logs && echo ignore-ok\n`,
      '.dockerignore': 'secret.txt\nbig.bin\nlogs/\n',
      'keep.txt': 'keep',
      'secret.txt': 'do not send',
      'big.bin': randomBytes(1024 * 1024),
      'logs/a.log': 'noise',
    });
    const res = await cli(['build', dir]);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toContain('ignore-ok');
    expect(res.stderr).toMatch(/uploading .*: 3 files/);
  });

  it('-f names a Dockerfile relative to DIR, and a Dockerfile outside DIR is sent too', async () => {
    const dir = contextDir({ 'docker/Build.dockerfile': `${dockerfile()}COPY data.txt /data.txt\nRUN cat /data.txt\n`, 'data.txt': 'inner-dockerfile-data' });
    const inner = await cli(['build', dir, '-f', 'docker/Build.dockerfile']);
    expect(inner.code, inner.stderr).toBe(0);
    expect(inner.stderr).toContain('inner-dockerfile-data');

    const outsideDir = contextDir({ 'Outside.dockerfile': `${dockerfile()}COPY data.txt /data.txt\nRUN cat /data.txt\n` });
    const ctx = contextDir({ 'data.txt': 'outside-dockerfile-data' });
    const outside = await cli(['build', ctx, '-f', join(outsideDir, 'Outside.dockerfile')]);
    expect(outside.code, outside.stderr).toBe(0);
    expect(outside.stderr).toContain('outside-dockerfile-data');
  });

  it('--json prints one JSON event per line on stdout: upload, status, log, done', async () => {
    const dir = contextDir({ Dockerfile: dockerfile('echo json-log-line') });
    const res = await cli(['build', dir, '--json']);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toBe('');
    const events = res.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const kinds = events.map((e) => e.event);
    expect(kinds[0]).toBe('upload');
    expect(kinds[1]).toBe('status');
    expect(kinds[kinds.length - 1]).toBe('done');
    const status = events[1];
    expect(status).toMatchObject({ status: 'running', build_id: expect.any(String), ref: expect.stringMatching(refPattern()) });
    const log = events.filter((e) => e.event === 'log').map((e) => e.text).join('');
    expect(log).toContain('json-log-line');
    expect(events[events.length - 1]).toMatchObject({ event: 'done', status: 'done_success', build_id: status.build_id, ref: status.ref });
  });

  it('an upload over IMGBUILDER_MAX_UPLOAD_BYTES fails with RESOURCE_EXHAUSTED naming the limit, exit 2', async () => {
    const dir = contextDir({ Dockerfile: dockerfile(), 'big.bin': randomBytes(1024 * 1024) });
    const res = await cli(['build', dir]);
    expect(res.code).toBe(2);
    expect(res.stdout).toBe('');
    expect(errorLines(res.stderr)).toEqual([
      "imgbuilder: RESOURCE_EXHAUSTED: upload is larger than the server's limit of 256 KiB (IMGBUILDER_MAX_UPLOAD_BYTES); shrink the context with .dockerignore",
    ]);
    noStackTrace(res.stderr);
  });
});

describe('imgbuilder build --git', () => {
  it('builds a branch, a commit and the remote HEAD, with --context', async () => {
    const v1 = git.commit('cli-git', { Dockerfile: dockerfile('echo git-v1'), 'sub/Dockerfile': `${dockerfile()}COPY x.txt /x.txt\nRUN cat /x.txt\n`, 'sub/x.txt': 'git-sub-context' });
    git.commit('cli-git', { Dockerfile: dockerfile('echo git-v2') });
    git.commit('cli-git', { Dockerfile: dockerfile('echo git-feature') }, 'feature');
    const url = git.url('cli-git');
    const [branch, commit, head, sub] = await Promise.all([
      cli(['build', '--git', `${url}#feature`]),
      cli(['build', '--git', `${url}#${v1}`]),
      cli(['build', '--git', url]),
      cli(['build', '--git', url, '--context', 'sub']),
    ]);
    for (const r of [branch, commit, head, sub]) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toMatch(refPattern());
    }
    expect(branch.stderr).toContain('echo git-feature');
    expect(commit.stderr).toContain('echo git-v1');
    expect(head.stderr).toContain('echo git-v2');
    expect(sub.stderr).toContain('git-sub-context');

    // resolve workspace computes the same ref without building, and says it exists.
    const resolved = await cli(['resolve', 'workspace', '--git', `${url}#feature`, '--json']);
    expect(resolved.code, resolved.stderr).toBe(0);
    expect(JSON.parse(resolved.stdout)).toMatchObject({ ref: branch.stdout.trim(), status: 'done_success', base_ref: expect.stringContaining('/base:') });
  });
});

describe('imgbuilder ls, logs, and Ctrl-C', () => {
  it('Ctrl-C detaches (exit 130) while the build goes on; ls lists it; logs prints the log so far, logs -f follows it to the end', async () => {
    const gate = await Gate.start();
    try {
      const dir = contextDir({ Dockerfile: dockerfile('echo gated-start', gate.waitStep(), 'echo gated-end') });
      const build = cliProcess(['build', dir, '--json']);
      const [, buildId, ref] = await build.waitFor('stdout', /"event":"status","status":"running","build_id":"([^"]+)","ref":"([^"]+)"/);
      await build.waitFor('stdout', /gated-start/);
      build.child.kill('SIGINT');
      const detached = await build.done;
      expect(detached.code).toBe(130);
      expect(detached.stdout).toContain(JSON.stringify({ event: 'detached', build_id: buildId }));

      const ls = await cli(['ls']);
      expect(ls.code, ls.stderr).toBe(0);
      const lines = ls.stdout.trim().split('\n');
      expect(lines[0]).toMatch(/^BUILD ID\s+REF\s+STATUS\s+STARTED$/);
      expect(lines.find((l) => l.startsWith(buildId))).toMatch(new RegExp(`^${buildId}\\s+${ref.replace(/[.]/g, '\\.')}\\s+running\\s+\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$`));

      // Without -f: returns while the build still waits at the gate, with the log stored so far (flushed every few seconds).
      const deadline = Date.now() + 30_000;
      let soFar: CliResult;
      do {
        soFar = await cli(['logs', buildId]);
        expect(soFar.code, soFar.stderr).toBe(0);
      } while (!soFar.stdout.includes('gated-start') && Date.now() < deadline);
      expect(soFar.stdout).toContain('gated-start');
      expect(soFar.stdout).not.toContain('gated-end');

      const follow = cliProcess(['logs', buildId, '-f']);
      await follow.waitFor('stdout', /gated-start/);
      gate.open();
      const followed = await follow.done;
      expect(followed.code, followed.stderr).toBe(0);
      expect(followed.stdout).toContain('gated-end');

      const byRef = await cli(['logs', ref]);
      expect(byRef.code, byRef.stderr).toBe(0);
      expect(byRef.stdout).toContain('gated-end');
      expect((await cli(['ls'])).stdout).not.toContain(buildId);
    } finally {
      gate.open();
      await gate.close();
    }
  });

  it('logs of an unknown build is one NOT_FOUND line, exit 2', async () => {
    const res = await cli(['logs', 'no-such-build']);
    expect(res.code).toBe(2);
    expect(res.stderr).toBe('imgbuilder: NOT_FOUND: build not found\n');
  });
});

describe('imgbuilder resolve', () => {
  it('resolve base prints the digest ref; resolve workspace --ref prints ref, base_ref and status', async () => {
    const base = await cli(['resolve', 'base', BASE_IMAGE]);
    expect(base.code, base.stderr).toBe(0);
    expect(base.stdout).toMatch(/^127\.0\.0\.1:5000\/imgbuilder\/busybox@sha256:[a-f0-9]{64}\n$/);

    const ws = await cli(['resolve', 'workspace', '--ref', BASE_IMAGE]);
    expect(ws.code, ws.stderr).toBe(0);
    const fields = Object.fromEntries(ws.stdout.trim().split('\n').map((l) => l.split(/\s+/, 2)));
    expect(fields.ref).toMatch(refPattern());
    expect(fields.base_ref).toBe(base.stdout.trim());
    expect(['unknown', 'done_success']).toContain(fields.status);

    const missing = await cli(['resolve', 'base', '127.0.0.1:5000/imgbuilder/busybox:no-such-tag']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^imgbuilder: NOT_FOUND: cannot resolve image[^\n]*\n$/);
  });
});

describe('TLS', () => {
  it('uploads and builds over mutual TLS; without a client certificate or without TLS the connection is refused (exit 2)', async () => {
    const dir = contextDir({ Dockerfile: `${dockerfile()}COPY m.txt /m.txt\nRUN cat /m.txt\n`, 'm.txt': 'over-mutual-tls' });
    const ok = await cli(['build', dir, '--server', tlsServer, '--tls-ca', certs.caCert], { IMGBUILDER_CLI_TLS_CERT: certs.clientCert, IMGBUILDER_CLI_TLS_KEY: certs.clientKey });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout.trim()).toMatch(refPattern());
    expect(ok.stderr).toContain('over-mutual-tls');

    const noClientCert = await cli(['ls', '--server', tlsServer, '--tls-ca', certs.caCert]);
    expect(noClientCert.code).toBe(2);
    expect(errorLines(noClientCert.stderr)).toHaveLength(1);
    expect(noClientCert.stderr).toMatch(/^imgbuilder: UNAVAILABLE: cannot connect to [^\n]*: TLS handshake failed: [^\n]*certificate required\n$/);

    const plaintext = await cli(['ls', '--server', tlsServer]);
    expect(plaintext.code).toBe(2);
    expect(plaintext.stderr).toMatch(/^imgbuilder: UNAVAILABLE: [^\n]*\n$/);
  });
});
