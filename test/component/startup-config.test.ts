import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';

// Each case starts a process that exits at once: they run at the same time.
describe.concurrent('starting without required settings', () => {
  const start = (app: 'api' | 'worker', env: Record<string, string>) =>
    new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [`apps/${app}/dist/main.js`], {
        cwd: new URL('../..', import.meta.url).pathname,
        env: { PATH: process.env.PATH ?? '', IMGBUILDER_METRICS_ADDR: '', IMGBUILDER_HTTP_ADDR: '', IMGBUILDER_GRPC_ADDR: '127.0.0.1:0', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });

  it.each(['api', 'worker'] as const)('the %s refuses to start without IMGBUILDER_SECRET_KEY (unless NODE_ENV=development)', async (app) => {
    const res = await start(app, {});
    expect(res.code).toBe(1);
    expect(res.out).toContain('IMGBUILDER_SECRET_KEY');
  });

  it('the API refuses the fixed development key on a listener other machines reach', async () => {
    const res = await start('api', { NODE_ENV: 'development', IMGBUILDER_GRPC_ADDR: '0.0.0.0:0' });
    expect(res.code).toBe(1);
    expect(res.out).toMatch(/IMGBUILDER_GRPC_ADDR=0\.0\.0\.0:0 is reachable from other machines: set IMGBUILDER_SECRET_KEY/);
  });

  it('a bad setting stops the API with a message naming the variable', async () => {
    const res = await start('api', { NODE_ENV: 'development', IMGBUILDER_BUILD_TIMEOUT: 'whenever' });
    expect(res.code).toBe(1);
    expect(res.out).toContain('IMGBUILDER_BUILD_TIMEOUT');
  });

  it('LOG_LEVEL is validated with the other settings and sets what the processes log', async () => {
    // The same refusal, raised once the configuration is read, is logged at fatal and so hidden by `silent`.
    const refuse = { NODE_ENV: 'development', IMGBUILDER_LOG_INFO: 'supervisor', IMGBUILDER_SUPERVISOR_ADDR: '127.0.0.1:0' };
    const [bad, fatal, silent] = await Promise.all([
      start('worker', { NODE_ENV: 'development', LOG_LEVEL: 'verbose' }),
      start('api', { ...refuse, LOG_LEVEL: 'fatal' }),
      start('api', { ...refuse, LOG_LEVEL: 'silent' }),
    ]);
    expect(bad.code).toBe(1);
    expect(bad.out).toMatch(/invalid configuration:.*\\n\s+LOG_LEVEL: /);
    expect(fatal.code).toBe(1);
    expect(fatal.out).toContain('IMGBUILDER_PUBLIC_URL');
    expect(silent.code).toBe(1);
    expect(silent.out).toBe('');
  });

  it('the API refuses IMGBUILDER_LOG_INFO=supervisor without IMGBUILDER_PUBLIC_URL', async () => {
    const res = await start('api', { NODE_ENV: 'development', IMGBUILDER_LOG_INFO: 'supervisor', IMGBUILDER_SUPERVISOR_ADDR: '127.0.0.1:0' });
    expect(res.code).toBe(1);
    expect(res.out).toContain('IMGBUILDER_PUBLIC_URL');
  });
});
