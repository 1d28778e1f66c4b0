import { createServer, request, type Server } from 'node:http';
import { chmod, rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { Adoption, BuildLimits, CgroupVerdict } from './cgroup-limits.js';
import type { BuildkitExecution } from './buildkit-executions.js';
import type { EngineHost } from './engine-host.js';

/**
 * The limits agent: an EngineHost served over a Unix socket by a process inside the engine's container (its mount,
 * PID and cgroup namespaces), for a worker that runs beside the engine rather than on its host (the Kubernetes
 * sidecar, compose). The worker keeps every decision; the agent only does what needs the engine's namespaces.
 *
 * Protocol (HTTP/1.1 on the socket): `GET /info` → `{ describe, watchesBuildkit }`; `GET /executions` → one JSON
 * BuildkitExecution per line, as the engine starts them, for as long as the connection lasts; `POST /call/<method>`
 * with the method's arguments as a JSON array → `{ result }` or `{ error }`.
 */

/** The EngineHost methods the agent answers; nothing else is reachable through it. */
const METHODS = ['createBuild', 'adopt', 'pidsExceeded', 'verdict', 'removeBuild', 'stepRunning', 'upperDir', 'dirBytes', 'exists'] as const;
type Method = (typeof METHODS)[number];

/** How long the worker waits for one answer; adoption itself is bounded at 3 s. */
const CALL_TIMEOUT_MS = 15_000;
/** How often the worker tries to reach an agent that went away. */
const RECONNECT_MS = 1_000;

/**
 * Serves `host` on `socketPath`; `publish` sends a BuildKit execution the host reported to every connected worker.
 * Paths the caller names for sizes (upper directories) must lie below `dataRoot`, the engine's data directory.
 */
export async function serveLimitsAgent(host: EngineHost, socketPath: string, dataRoot: string): Promise<{ server: Server; publish: (e: BuildkitExecution) => void }> {
  const watchers = new Set<(e: BuildkitExecution) => void>();
  const publish = (e: BuildkitExecution) => {
    for (const w of watchers) w(e);
  };
  const server = createServer((req, res) => {
    const url = req.url ?? '';
    if (req.method === 'GET' && url === '/info') return void res.end(JSON.stringify({ describe: host.describe(), watchesBuildkit: host.watchesBuildkit }));
    if (req.method === 'GET' && url === '/executions') {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.flushHeaders();
      const w = (e: BuildkitExecution) => void res.write(`${JSON.stringify(e)}\n`);
      watchers.add(w);
      req.on('close', () => watchers.delete(w));
      return;
    }
    const method = /^\/call\/(\w+)$/.exec(url)?.[1] as Method | undefined;
    if (req.method !== 'POST' || !method || !METHODS.includes(method)) return void res.writeHead(404).end();
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => {
      void (async () => {
        try {
          const args = JSON.parse(body) as unknown[];
          if (['dirBytes', 'exists'].includes(method) && !String(args[0]).startsWith(`${dataRoot}/`)) throw new Error(`${String(args[0])} is outside ${dataRoot}`);
          const result = await (host[method] as (...a: unknown[]) => Promise<unknown>).apply(host, args);
          res.end(JSON.stringify({ result }));
        } catch (err) {
          res.writeHead(500).end(JSON.stringify({ error: (err as Error).message }));
        }
      })();
    });
  });
  await rm(socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  // The worker runs as another user; only containers that mount the socket's volume can reach it at all.
  await chmod(socketPath, 0o666);
  return { server, publish };
}

/** The worker's side: an EngineHost whose every call goes to the agent. */
export class AgentEngineHost implements EngineHost {
  private info: { describe: string; watchesBuildkit: boolean } = { describe: '', watchesBuildkit: false };
  private closed = false;
  private reconnecting = false;
  private stream?: { destroy: () => void };

  private constructor(
    private readonly socketPath: string,
    private readonly onExecution: (e: BuildkitExecution) => void,
    private readonly onProblem: (problem: string | undefined) => void,
  ) {}

  /**
   * Connects to the agent at `socketPath`; a string saying why when it cannot be reached. Later losses of the
   * connection are reported through `onProblem` (and its return, with undefined).
   */
  static async connect(socketPath: string, onExecution: (e: BuildkitExecution) => void, onProblem: (problem: string | undefined) => void): Promise<AgentEngineHost | string> {
    const agent = new AgentEngineHost(socketPath, onExecution, onProblem);
    try {
      await agent.follow();
    } catch (err) {
      return `the limits agent at ${socketPath} (IMGBUILDER_LIMITS_AGENT) cannot be reached: ${(err as Error).message}`;
    }
    return agent;
  }

  /** Reads /info, then follows /executions; resolves once both are open, and reconnects when the stream ends. */
  private async follow(): Promise<void> {
    this.info = JSON.parse(await this.send('GET', '/info')) as typeof this.info;
    await new Promise<void>((resolve, reject) => {
      let open = false;
      const req = request({ socketPath: this.socketPath, path: '/executions', method: 'GET' }, (res) => {
        open = true;
        resolve();
        // An agent that dies aborts the response: reported by 'close' below, never thrown.
        res.on('error', () => undefined);
        createInterface({ input: res })
          .on('line', (line) => {
            let e: BuildkitExecution | undefined;
            try {
              e = JSON.parse(line) as BuildkitExecution;
            } catch {
              // Not one of the agent's lines: the stream can no longer be trusted to report every step.
              return void res.destroy();
            }
            this.onExecution(e);
          })
          .on('error', () => undefined);
        res.on('close', () => this.lost('the limits agent closed its stream of BuildKit executions'));
      });
      req.on('error', (err) => (open ? this.lost(`the limits agent is unreachable (${err.message})`) : reject(err)));
      req.end();
      this.stream = req;
    });
  }

  /** The stream of executions ended: steps starting now would go unseen. Reported, then reconnected. */
  private lost(why: string): void {
    if (this.closed || this.reconnecting) return;
    this.reconnecting = true;
    this.onProblem(why);
    const retry = () =>
      this.follow().then(
        () => {
          this.reconnecting = false;
          this.onProblem(undefined);
        },
        () => setTimeout(retry, RECONNECT_MS).unref(),
      );
    setTimeout(retry, RECONNECT_MS).unref();
  }

  private send(method: 'GET' | 'POST', path: string, body?: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.socketPath, path, method, timeout: CALL_TIMEOUT_MS }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString('utf8')));
        res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`limits agent: ${(JSON.parse(text || '{}') as { error?: string }).error ?? `HTTP ${res.statusCode}`}`))));
      });
      req.on('timeout', () => req.destroy(new Error(`limits agent: no answer to ${path} within ${CALL_TIMEOUT_MS / 1000} s`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  private async call<T>(method: Method, ...args: unknown[]): Promise<T> {
    return (JSON.parse(await this.send('POST', `/call/${method}`, JSON.stringify(args))) as { result: T }).result;
  }

  describe(): string {
    return `${this.info.describe} through the limits agent at ${this.socketPath}`;
  }

  get watchesBuildkit(): boolean {
    return this.info.watchesBuildkit;
  }

  createBuild(buildId: string, limits: BuildLimits): Promise<string> {
    return this.call('createBuild', buildId, limits);
  }

  adopt(buildId: string, step: BuildkitExecution): Promise<Adoption> {
    return this.call('adopt', buildId, step);
  }

  pidsExceeded(buildId: string, limits: BuildLimits): Promise<boolean> {
    return this.call('pidsExceeded', buildId, limits);
  }

  verdict(buildId: string, limits: BuildLimits): Promise<CgroupVerdict> {
    return this.call('verdict', buildId, limits);
  }

  removeBuild(buildId: string): Promise<void> {
    return this.call('removeBuild', buildId);
  }

  stepRunning(id: string): Promise<boolean> {
    return this.call('stepRunning', id);
  }

  upperDir(rootfs: string): Promise<string | undefined> {
    return this.call<string | null>('upperDir', rootfs).then((d) => d ?? undefined);
  }

  dirBytes(dir: string): Promise<number> {
    return this.call('dirBytes', dir);
  }

  exists(dir: string): Promise<boolean> {
    return this.call('exists', dir);
  }

  close(): void {
    this.closed = true;
    this.stream?.destroy();
  }
}
