import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dataOf, find, render, repoPath, type Doc } from '../support/manifests.js';
import { hasKubectl, kubectlKustomize } from '../support/kubectl.js';
import { BASE, container, OVERLAY } from '../support/k8s.js';
import { renderContract } from '../support/k8s-render-contract.js';

// What the manifests run: their start-up scripts under /bin/sh, the bundled Redis in a network namespace of its own,
// the image's entry point with the bundles of npm run build (set-up makes them), and kubectl where it is installed.

describe('placeholders', () => {
  const base = render(BASE);
  const bundled = dataOf(find(base, 'Secret', 'imgbuilder-bundled-secrets'));
  const secrets = dataOf(find(base, 'Secret', 'imgbuilder-secrets'));
  /** Runs a container's start-up script as its image would (`/bin/sh -ec SCRIPT`), with env; it must stop on its own. */
  const runScript = (c: Doc, env: Record<string, string>) => {
    expect(c.command).toEqual(['/bin/sh', '-ec']);
    return spawnSync('/bin/sh', ['-ec', c.args.join('\n')], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 10_000 });
  };

  it('the bundled Redis, MinIO and bucket Job refuse to start with placeholder credentials', () => {
    const redis = container(find(base, 'StatefulSet', 'imgbuilder-redis'), 'redis');
    for (const pw of [bundled.REDIS_PASSWORD, 'short', 'has spaces in it, and more']) {
      const res = runScript(redis, { REDISCLI_AUTH: pw });
      expect(res.status, pw).toBe(1);
      expect(res.stderr).toMatch(/REDIS_PASSWORD/);
    }
    const minio = runScript(container(find(base, 'StatefulSet', 'imgbuilder-minio'), 'minio'), bundled);
    expect(minio.status).toBe(1);
    expect(minio.stderr).toContain('placeholders; refusing to start');
    const job = container(find(base, 'Job', 'imgbuilder-minio-bucket'), 'mc');
    const placeholders = runScript(job, { ...bundled, AWS_ACCESS_KEY_ID: secrets.AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: secrets.AWS_SECRET_ACCESS_KEY });
    expect(placeholders.status).toBe(1);
    expect(placeholders.stderr).toContain('still a placeholder');
    // Handing the services MinIO's root user is refused too.
    const root = runScript(job, { MINIO_ROOT_USER: 'admin', MINIO_ROOT_PASSWORD: 'root-password', AWS_ACCESS_KEY_ID: 'admin', AWS_SECRET_ACCESS_KEY: 'root-password' });
    expect(root.status).toBe(1);
    expect(root.stderr).toContain("must not be MinIO's root user");
  });

  it('the bundled registry refuses to start with the placeholder htpasswd', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-htpasswd-'));
    try {
      const file = join(dir, 'htpasswd');
      writeFileSync(file, dataOf(find(base, 'Secret', 'imgbuilder-registry-htpasswd')).htpasswd);
      const res = runScript(container(find(base, 'Deployment', 'imgbuilder-registry'), 'registry'), { REGISTRY_AUTH_HTPASSWD_PATH: file });
      expect(res.status).toBe(1);
      expect(res.stderr).toContain('still holds the placeholder');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the bundled Redis, started by its manifest's script, answers only clients with the password", async () => {
    // redis-server from Debian in a network namespace of its own (port 6379 there is free); the probe's command too.
    const c = container(find(base, 'StatefulSet', 'imgbuilder-redis'), 'redis');
    const password = 'a'.repeat(8) + Date.now().toString(36) + 'b'.repeat(8);
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-redis-'));
    const server = spawn('unshare', ['-n', '/bin/sh', '-c', 'ip link set lo up && exec /bin/sh -ec "$0"', c.args.join('\n')], {
      cwd: dir,
      env: { PATH: process.env.PATH, REDISCLI_AUTH: password },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      let out = '';
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`redis did not start: ${out}`)), 15_000);
        const onData = (b: Buffer) => {
          out += b.toString();
          if (out.includes('Ready to accept connections')) {
            clearTimeout(timer);
            resolve();
          }
        };
        server.stdout.on('data', onData);
        server.stderr.on('data', onData);
        server.once('exit', (code) => reject(new Error(`redis exited (${code}): ${out}`)));
      });
      const inNs = (cmd: string[], env: Record<string, string>) =>
        spawnSync('nsenter', ['-t', String(server.pid), '-n', ...cmd], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 10_000 });
      expect(inNs(['redis-cli', 'ping'], {}).stdout).toMatch(/NOAUTH/);
      const wrong = inNs(['redis-cli', 'ping'], { REDISCLI_AUTH: 'wrong-password-1234' });
      expect(wrong.stdout + wrong.stderr).toMatch(/WRONGPASS|invalid/i);
      expect(inNs(['redis-cli', 'config', 'get', 'maxmemory-policy'], { REDISCLI_AUTH: password }).stdout).toContain('noeviction');
      // The readiness probe's own command passes with the container's environment and fails without it.
      expect(inNs(c.readinessProbe.exec.command, { REDISCLI_AUTH: password }).status).toBe(0);
      expect(inNs(c.readinessProbe.exec.command, {}).status).not.toBe(0);
    } finally {
      const exited = new Promise((resolve) => (server.exitCode === null ? server.once('exit', resolve) : resolve(undefined)));
      server.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('service image entry point, with the bundles of npm run build', () => {
  it.each(['api', 'worker'])('starts the %s, which validates its configuration', (target) => {
    // A bad setting makes the service exit at once: proves the script reached the right compiled program.
    const res = spawnSync(repoPath('infra/docker/entrypoint.sh'), [target], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, IMGBUILDER_GRPC_ADDR: 'not-an-address' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(res.status).toBe(1);
    expect(res.stdout + res.stderr).toContain('IMGBUILDER_GRPC_ADDR: expected HOST:PORT');
    expect(res.stdout + res.stderr).toContain(target === 'api' ? 'imgbuilder-api' : 'imgbuilder-worker');
  });

  it('runs the CLI', () => {
    const res = spawnSync(repoPath('infra/docker/entrypoint.sh'), ['cli', '--help'], { env: { PATH: process.env.PATH, HOME: process.env.HOME }, encoding: 'utf8', timeout: 60_000 });
    expect(res.status).toBe(0);
    expect(res.stdout).toContain('Usage: imgbuilder');
  });

  it('without a target prints usage and exits 64', () => {
    const res = spawnSync(repoPath('infra/docker/entrypoint.sh'), [], { encoding: 'utf8', timeout: 10_000 });
    expect(res.status).toBe(64);
    expect(res.stderr).toMatch(/usage: IMAGE api \| worker \| cli/);
  });
});

// The same contract as the unit tier's in-process rendering, on what kubectl makes of the kustomizations.
if (hasKubectl()) {
  describe.each([
    ['base rendered by kubectl kustomize', () => kubectlKustomize(BASE)!],
    ['example overlay rendered by kubectl kustomize', () => kubectlKustomize(OVERLAY)!],
  ] as [string, () => Doc[]][])('%s', renderContract);
}
