import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GitServer } from '../../testkit/git-server.js';
import { BASE_IMAGE, dockerfile } from '../../testkit/requests.js';
import { allowEgress, bridgeGateway } from '../../testkit/egress.js';
import { freePort, ROOT, startStack, type Stack } from '../../testkit/stack.js';

/** Small enough that a 1 MiB file of random bytes cannot be uploaded; every test context is far below it. */
const MAX_UPLOAD = '256KiB';

let stack: Stack;
let git: GitServer;
let server: string;
let tlsServer: string;
let certs: Certs;

beforeAll(async () => {
  certs = makeCerts();
  [stack, git] = await Promise.all([startStack({ apis: 1, workers: 1, env: { IMGBUILDER_MAX_UPLOAD_BYTES: MAX_UPLOAD } }), GitServer.start()]);
  server = stack.apiAddrs[0];
  await stack.startApi({ IMGBUILDER_TLS_CERT: certs.serverCert, IMGBUILDER_TLS_KEY: certs.serverKey, IMGBUILDER_TLS_CA: certs.ca });
  tlsServer = stack.apiAddrs[1];
});

afterAll(async () => {
  git?.stop();
  await stack?.stop();
});

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The real CLI binary, as a user runs it (`bin/imgbuilder.mjs`), with output observable while it runs. */
class CliProcess {
  stdout = '';
  stderr = '';
  readonly child: ChildProcess;
  readonly done: Promise<CliResult>;
  private waiters: (() => void)[] = [];

  constructor(args: string[], env: Record<string, string> = {}) {
    this.child = spawn(process.execPath, [join(ROOT, 'bin/imgbuilder.mjs'), ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, IMGBUILDER_SERVER: server, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.on('data', (d: Buffer) => this.append('stdout', d));
    this.child.stderr!.on('data', (d: Buffer) => this.append('stderr', d));
    this.done = new Promise((resolve) => this.child.on('close', (code) => resolve({ code, stdout: this.stdout, stderr: this.stderr })));
  }

  private append(which: 'stdout' | 'stderr', d: Buffer): void {
    this[which] += d.toString();
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves with the first match of `re` in stdout or stderr; bounded, and fails if the CLI exits first. */
  async waitFor(which: 'stdout' | 'stderr', re: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this[which]);
      if (m) return m;
      if (this.child.exitCode !== null) throw new Error(`CLI exited (${this.child.exitCode}) before printing ${re}:\n${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`CLI printed no ${re} on ${which} within ${timeoutMs} ms:\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

function cli(args: string[], env?: Record<string, string>, timeoutMs = 150_000): Promise<CliResult> {
  const p = new CliProcess(args, env);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  return p.done.finally(() => clearTimeout(timer));
}

/** A directory holding `files`. */
function contextDir(files: Record<string, string | Buffer>): string {
  const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-cli-ctx-'));
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), content);
  }
  return dir;
}

const refPattern = () => new RegExp(`^${stack.env.IMGBUILDER_WORKSPACE_REPOSITORY.replace(/[.]/g, '\\.')}:[a-f0-9]{64}$`);
const errorLines = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('imgbuilder: '));
const noStackTrace = (stderr: string) => expect(stderr).not.toMatch(/^\s+at /m);

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
    const gate = await Gate.open();
    try {
      const dir = contextDir({ Dockerfile: dockerfile('echo gated-start', gate.waitStep(), 'echo gated-end') });
      const build = new CliProcess(['build', dir, '--json']);
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

      const follow = new CliProcess(['logs', buildId, '-f']);
      await follow.waitFor('stdout', /gated-start/);
      gate.release();
      const followed = await follow.done;
      expect(followed.code, followed.stderr).toBe(0);
      expect(followed.stdout).toContain('gated-end');

      const byRef = await cli(['logs', ref]);
      expect(byRef.code, byRef.stderr).toBe(0);
      expect(byRef.stdout).toContain('gated-end');
      expect((await cli(['ls'])).stdout).not.toContain(buildId);
    } finally {
      gate.release();
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

describe('TLS', () => {
  it('uploads and builds over mutual TLS; without a client certificate or without TLS the connection is refused (exit 2)', async () => {
    const dir = contextDir({ Dockerfile: `${dockerfile()}COPY m.txt /m.txt\nRUN cat /m.txt\n`, 'm.txt': 'over-mutual-tls' });
    const ok = await cli(['build', dir, '--server', tlsServer, '--tls-ca', certs.ca], { IMGBUILDER_CLI_TLS_CERT: certs.clientCert, IMGBUILDER_CLI_TLS_KEY: certs.clientKey });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout.trim()).toMatch(refPattern());
    expect(ok.stderr).toContain('over-mutual-tls');

    const noClientCert = await cli(['ls', '--server', tlsServer, '--tls-ca', certs.ca]);
    expect(noClientCert.code).toBe(2);
    expect(errorLines(noClientCert.stderr)).toHaveLength(1);
    expect(noClientCert.stderr).toMatch(/^imgbuilder: UNAVAILABLE: cannot connect to [^\n]*: TLS handshake failed: [^\n]*certificate required\n$/);

    const plaintext = await cli(['ls', '--server', tlsServer]);
    expect(plaintext.code).toBe(2);
    expect(plaintext.stderr).toMatch(/^imgbuilder: UNAVAILABLE: [^\n]*\n$/);
  });
});

interface Certs {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
function makeCerts(): Certs {
  const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-cli-tls-'));
  const f = (name: string) => join(dir, name);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=imgbuilder-test-ca');
  for (const [name, ext] of [
    ['server', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
    ['client', 'extendedKeyUsage=clientAuth'],
  ]) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=imgbuilder-test-${name}`);
    writeFileSync(f(`${name}.ext`), `${ext}\n`);
    ssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${name}.pem`), '-days', '2', '-extfile', f(`${name}.ext`));
  }
  return { ca: f('ca.pem'), serverCert: f('server.pem'), serverKey: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

/**
 * An HTTP endpoint on the Docker bridge that a RUN step polls: the build stays in that step until the test
 * releases it, so "while the build runs" is a state the test controls, not a sleep.
 */
class Gate {
  opened = false;

  private constructor(
    private readonly server: Server,
    private readonly url: string,
    private readonly revoke: () => Promise<void>,
  ) {}

  static async open(): Promise<Gate> {
    let gate: Gate | undefined;
    const server = createServer((_req, res) => {
      res.statusCode = gate?.opened ? 200 : 503;
      res.end();
    });
    const host = bridgeGateway();
    await new Promise<void>((resolve) => server.listen(0, host, resolve));
    const port = (server.address() as { port: number }).port;
    // Build steps reach the engine's host only through an exception to the egress policy, as an operator would add.
    gate = new Gate(server, `http://${host}:${port}/go`, await allowEgress(`${host}:${port}`));
    return gate;
  }

  /** A RUN command waiting for the release (giving up after ~2 minutes so a crashed test leaves no endless build). */
  waitStep(): string {
    return `i=0; until wget -q -O /dev/null ${this.url}; do i=$((i+1)); [ $i -lt 600 ] || exit 9; sleep 0.2; done`;
  }

  release(): void {
    this.opened = true;
  }

  async close(): Promise<void> {
    await this.revoke();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

