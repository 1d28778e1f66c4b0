import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { TEST_SERVERS_ALLOW } from './fetch-allow.js';

export const ROOT = new URL('..', import.meta.url).pathname;
const LOCAL_ENV = process.env.IMGBUILDER_LOCAL_DIR ? join(process.env.IMGBUILDER_LOCAL_DIR, 'env') : '/tmp/imgbuilder-local/env';

/** The local stack's environment (written by infra/local/up.sh). */
export function localEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(LOCAL_ENV, 'utf8').split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) env[m[1]] = m[2].replace(/^'(.*)'$/, '$1');
  }
  return env;
}

/** A process starts in a few seconds; stacks started side by side (describe.concurrent) on a loaded machine take longer. */
const START_TIMEOUT_MS = 90_000;

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** A running imgbuilder process whose JSON log lines can be awaited. */
export class ServiceProcess {
  readonly lines: string[] = [];
  private waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  readonly exited: Promise<number | null>;

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    logFile: string,
  ) {
    const out = createWriteStream(logFile, { flags: 'a' });
    for (const s of [child.stdout!, child.stderr!]) {
      s.pipe(out, { end: false });
      createInterface({ input: s }).on('line', (l) => {
        this.lines.push(l);
        this.waiters = this.waiters.filter((w) => {
          if (!w.re.test(l)) return true;
          w.resolve(l);
          return false;
        });
      });
    }
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  /** Resolves with the first log line (past or future) matching `re`; bounded. */
  waitForLine(re: RegExp, timeoutMs = 30_000): Promise<string> {
    const past = this.lines.find((l) => re.test(l));
    if (past) return Promise.resolve(past);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no log line matching ${re} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        re,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
      void this.exited.then((code) => reject(new Error(`${this.name} exited (${code}) before logging ${re}:\n${this.lines.slice(-15).join('\n')}`)));
    });
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

export interface StackOptions {
  apis?: number;
  workers?: number;
  env?: Record<string, string>;
}

export interface Stack {
  env: Record<string, string>;
  apiAddrs: string[];
  apis: ServiceProcess[];
  workers: ServiceProcess[];
  logDir: string;
  startApi(extra?: Record<string, string>): Promise<ServiceProcess>;
  /**
   * `waitFor`: the log line that means the worker is up (default: it started taking builds); `wrapper`: a command
   * the worker runs under (`unshare …`), its own command line appended.
   */
  startWorker(extra?: Record<string, string>, waitFor?: RegExp, wrapper?: string[]): Promise<ServiceProcess>;
  stop(): Promise<void>;
}

/**
 * Starts API and worker processes against the local stack, with repositories unique to this stack so tests never see
 * each other's images. They run the bundles global setup builds, as the image does: half the start-up CPU of tsx.
 */
export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const id = randomBytes(4).toString('hex');
  const logDir = mkdtempSync(join(tmpdir(), `imgbuilder-test-${id}-`));
  const env: Record<string, string> = {
    ...localEnv(),
    IMGBUILDER_BASE_REPOSITORY: `127.0.0.1:5000/t${id}/base`,
    IMGBUILDER_WORKSPACE_REPOSITORY: `127.0.0.1:5000/t${id}/workspace`,
    IMGBUILDER_SECRET_KEY: randomBytes(32).toString('base64'),
    // Own queue and keys: stacks of concurrently running test files never take each other's jobs.
    IMGBUILDER_REDIS_NAMESPACE: `t${id}`,
    IMGBUILDER_WORKER_LOCK_TIMEOUT: '5s',
    IMGBUILDER_STALLED_CHECK_INTERVAL: '2s',
    IMGBUILDER_FETCH_ALLOW: TEST_SERVERS_ALLOW,
    // A 3 MiB probe build at every worker start would load the one engine all tests share; operations.test keeps it.
    IMGBUILDER_ENGINE_LOG_CHECK: 'off',
    // Tests push to a branch and build it again at once: within the default 5 s window the API would still resolve
    // the branch to its previous commit (and find that image built), however fast the engine happens to be.
    IMGBUILDER_LS_REMOTE_CACHE: '0',
    LOG_LEVEL: 'debug',
    ...opts.env,
  };
  const apiAddrs: string[] = [];
  const apis: ServiceProcess[] = [];
  const workers: ServiceProcess[] = [];
  const spawnService = (kind: 'api' | 'worker', extra: Record<string, string>, wrapper: string[] = []) => {
    const name = `${kind}-${kind === 'api' ? apis.length : workers.length}`;
    const [cmd, ...args] = [...wrapper, process.execPath, '--enable-source-maps', join(ROOT, `apps/${kind}/dist/main.js`)];
    const child = spawn(cmd, args, {
      cwd: ROOT,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env, ...extra },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new ServiceProcess(name, child, join(logDir, `${name}.log`));
  };
  const stack: Stack = {
    env,
    apiAddrs,
    apis,
    workers,
    logDir,
    async startApi(extra = {}) {
      const port = await freePort();
      const p = spawnService('api', { IMGBUILDER_GRPC_ADDR: `127.0.0.1:${port}`, IMGBUILDER_METRICS_ADDR: `127.0.0.1:${await freePort()}`, ...extra });
      apis.push(p);
      apiAddrs.push(`127.0.0.1:${port}`);
      await p.waitForLine(/API listening/, START_TIMEOUT_MS);
      return p;
    },
    async startWorker(extra = {}, waitFor = /worker started/, wrapper = []) {
      const p = spawnService('worker', { IMGBUILDER_METRICS_ADDR: `127.0.0.1:${await freePort()}`, ...extra }, wrapper);
      workers.push(p);
      await p.waitForLine(waitFor, START_TIMEOUT_MS);
      return p;
    },
    async stop() {
      await Promise.all([...apis, ...workers].map((p) => p.kill('SIGKILL')));
    },
  };
  try {
    await Promise.all([
      ...Array.from({ length: opts.apis ?? 1 }, () => stack.startApi()),
      ...Array.from({ length: opts.workers ?? 1 }, () => stack.startWorker()),
    ]);
  } catch (err) {
    await stack.stop();
    throw err;
  }
  return stack;
}
