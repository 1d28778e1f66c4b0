import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, localEnv, ROOT, ServiceProcess } from '../../testkit/stack.js';

// The env file of `npm run local:up` is all these processes get.
describe('npm run api and npm run worker right after npm run local:up', () => {
  const started: ServiceProcess[] = [];
  const logDir = mkdtempSync(join(tmpdir(), 'imgbuilder-local-dev-'));

  afterAll(async () => {
    // npm runs node under a shell: stop the whole process group.
    for (const p of started) if (p.child.exitCode === null) process.kill(-p.child.pid!, 'SIGKILL');
    await Promise.all(started.map((p) => p.exited));
  });

  /** `npm run <script>` with no imgbuilder settings but listen addresses and an own queue (no one else's jobs). */
  const npmRun = async (script: 'api' | 'worker') => {
    const env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      IMGBUILDER_GRPC_ADDR: `127.0.0.1:${await freePort()}`,
      IMGBUILDER_METRICS_ADDR: '',
      IMGBUILDER_HTTP_ADDR: '',
      IMGBUILDER_REDIS_NAMESPACE: `dev${randomBytes(4).toString('hex')}`,
      IMGBUILDER_ENGINE_LOG_CHECK: 'off',
    };
    const child = spawn('npm', ['run', '--silent', script], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const p = new ServiceProcess(script, child, join(logDir, `${script}.log`));
    started.push(p);
    return p;
  };

  it('the env file carries a random development key, and both processes start on it alone', async () => {
    // Set-up started the stack already: this run is the warm, idempotent one a newcomer's second call would be.
    execFileSync('npm', ['run', '--silent', 'local:up'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'], timeout: 120_000 });
    const key = localEnv().IMGBUILDER_SECRET_KEY;
    expect(Buffer.from(key ?? '', 'base64')).toHaveLength(32);
    // Not the fixed, public NODE_ENV=development key (SecretBox.fromKey).
    expect(key).not.toBe(Buffer.alloc(32, 'imgbuilder-development-only-key!').toString('base64'));
    const [api, worker] = await Promise.all([npmRun('api'), npmRun('worker')]);
    await Promise.all([api.waitForLine(/imgbuilder API listening/, 90_000), worker.waitForLine(/imgbuilder worker started/, 90_000)]);
  });
});
