import type Docker from 'dockerode';
import type { Logger } from '@imgbuilder/common/logger';
import { randomBytes } from 'node:crypto';
import { BuildSandboxError } from '../errors.js';
import type { BuildLimits } from './cgroup-limits.js';
import { SandboxRun, type SandboxBuildOptions, type SandboxHost } from './sandbox-run.js';
import type { BuildkitExecution } from './buildkit-executions.js';
import type { BuilderKind } from './image-builder.js';
import { LocalEngineHost, type EngineHost } from './engine-host.js';
import { AgentEngineHost } from './limits-agent.js';
import { join } from 'node:path';

/** Any build's step marker (see SandboxRun.stepMarker), this worker's or another's on the same engine. */
const MARKER = /^imgbuilder-build-[\w.-]+\.invalid$/;

/**
 * A marker for a BuildKit build the worker sends outside any build (a probe of the engine): an unmarked execution
 * fails every running build on the engine, while one marked for no build of this worker is another's and let be.
 */
export function probeMarker(name: string): string {
  return `imgbuilder-build-${name}-${randomBytes(8).toString('hex')}.invalid`;
}

/**
 * The markers an execution's environment carries: a RUN step's `no_proxy` (BuildKit sets it from the build arg over
 * any ENV of the Dockerfile), and a `# syntax=` frontend's build args, which BuildKit hands its container as
 * `BUILDKIT_FRONTEND_OPT_<n>=build-arg:no_proxy=<marker>`.
 */
export function markersOf(env: string[]): string[] {
  const out: string[] = [];
  for (const v of env) {
    const m = /^(?:no_proxy|BUILDKIT_FRONTEND_OPT_\d+=build-arg:no_proxy)=(.*)$/i.exec(v);
    if (m && MARKER.test(m[1])) out.push(m[1]);
  }
  return out;
}

/** How long the engine's container events may lag behind the end of the build stream. */
const EVENTS_SETTLE_MS = 3_000;
/** OOM events are kept this long for the build that owns the container to claim them. */
const OOM_MEMORY_MS = 10 * 60_000;

/**
 * Bounds what one build's steps may use: memory (swap included), CPU, processes and the disk space they add. The
 * engine enforces memory and CPU per step container; the build's own cgroup (made on the engine's host, by this
 * process or by the limits agent in the engine's container) bounds the steps together and adds the process limit;
 * disk use is measured while the build runs, because overlay2 has no quota on ordinary file systems.
 */
export class BuildSandbox implements SandboxHost {
  private readonly oomKilled = new Map<string, number>();
  private readonly destroyed = new Map<string, number>();
  private readonly waiters = new Set<() => void>();
  private events?: NodeJS.ReadableStream;
  /** Where cgroups and BuildKit's steps are handled; undefined when nowhere (no writable cgroup filesystem). */
  private host?: EngineHost;
  /** Runs by the marker their BuildKit steps carry in their environment (see stepMarker). */
  private readonly runs = new Map<string, SandboxRun>();

  /** Why builds cannot be held to their limits here (set by create); undefined when they can. */
  private problem?: string;

  private constructor(
    private readonly docker: Docker,
    readonly limits: BuildLimits,
    private readonly log: Logger,
  ) {}

  /**
   * `agent`: the limits agent's socket, where the worker does not share the engine's host (limits-agent.ts); empty
   * for the engine host's own cgroup filesystem at `cgroupRoot`.
   */
  static async create(docker: Docker, limits: BuildLimits, where: { cgroupRoot: string; agent: string }, builder: BuilderKind, log: Logger): Promise<BuildSandbox> {
    const sandbox = new BuildSandbox(docker, limits, log);
    await sandbox.watchEngine();
    const onExecution = (e: BuildkitExecution) => sandbox.onExecution(e);
    if (where.agent) {
      const agent = await AgentEngineHost.connect(where.agent, onExecution, (problem) => sandbox.agentProblem(problem));
      if (typeof agent === 'string') sandbox.problem = agent;
      else sandbox.host = agent;
    } else {
      sandbox.host = await LocalEngineHost.open(where.cgroupRoot, await sandbox.executorDir(), onExecution);
      if (!sandbox.host) sandbox.problem = `the engine's cgroup filesystem is not writable at ${where.cgroupRoot} (IMGBUILDER_BUILD_CGROUP_ROOT), so builds get no cgroup of their own: IMGBUILDER_BUILD_PIDS and the build-wide memory limit cannot hold`;
    }
    if (sandbox.host) {
      log.info({ cgroups: sandbox.host.describe() }, 'build limits: each build gets its own cgroup');
      if (builder === 'buildkit' && !sandbox.host.watchesBuildkit) sandbox.problem = `BuildKit's executor directory ${await sandbox.executorDir()} is not readable ${where.agent ? 'by the limits agent' : 'here'}, so BuildKit steps cannot be moved into their build's cgroup`;
    }
    return sandbox;
  }

  /** The limits agent went away (or came back: undefined): builds running meanwhile cannot be held to their limits. */
  private agentProblem(problem: string | undefined): void {
    this.problem = problem;
    if (!problem) return void this.log.info('build limits: the limits agent is back');
    this.log.error({ problem }, 'build limits: the limits agent is unreachable; failing every build running here');
    for (const r of this.runs.values()) r.fail(new BuildSandboxError(`build limits could not be enforced: ${problem}`));
  }

  /** Why this worker cannot hold builds to their limits (it then takes none, unless IMGBUILDER_BUILD_LIMITS=off). */
  get unenforceable(): string | undefined {
    return this.problem;
  }

  /** Follows the engine's OOM and container-removal events; reconnects if the engine restarts. */
  private async watchEngine(): Promise<void> {
    const connect = async () => {
      try {
        const stream = (await this.docker.getEvents({ filters: { type: ['container'], event: ['oom', 'destroy'] } })) as NodeJS.ReadableStream;
        this.events = stream;
        let buf = '';
        stream.on('data', (chunk: Buffer) => {
          buf += chunk.toString('utf8');
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            this.onEvent(line);
          }
        });
        stream.on('error', () => undefined);
        stream.on('end', () => {
          if (this.events === stream) setTimeout(() => void connect(), 1_000).unref();
        });
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'engine events unavailable; retrying');
        setTimeout(() => void connect(), 2_000).unref();
      }
    };
    await connect();
  }

  /**
   * dockerd's BuildKit runs steps in cgroups of its own, ignoring the build's cgroup parent: each step process of a
   * build in this sandbox is moved into the build's cgroup as soon as BuildKit writes its bundle here.
   */
  private async executorDir(): Promise<string> {
    const info = (await this.docker.info().catch(() => undefined)) as { DockerRootDir?: string } | undefined;
    return join(info?.DockerRootDir ?? '/var/lib/docker', 'buildkit', 'executor');
  }

  /**
   * A BuildKit execution started on the engine. One carrying a build's marker goes into that build's cgroup (markers
   * hold a random part: nobody else's step can claim one); one carrying another worker's marker is that worker's.
   * One with no marker at all cannot be told apart from a step of any build running here, so it fails them all.
   */
  private onExecution(e: BuildkitExecution): void {
    const markers = markersOf(e.env);
    const run = markers.map((m) => this.runs.get(m)).find(Boolean);
    if (run) return void run.adopt(e);
    if (markers.length || !this.runs.size) return;
    const what = `a BuildKit process without any build's marker (${e.id}) started on the engine while this build ran`;
    this.log.warn({ execution: e.id, builds: this.runs.size }, 'build limits: a BuildKit process carries no build\'s marker; failing every build running here');
    for (const r of this.runs.values()) r.fail(new BuildSandboxError(`${what}: the worker cannot tell which build it belongs to, so it could not be held to any build's limits (another client of the engine?)`));
  }

  /** @internal */
  register(marker: string, run: SandboxRun | undefined): void {
    if (run) this.runs.set(marker, run);
    else this.runs.delete(marker);
  }

  private onEvent(line: string): void {
    let e: { Action?: string; status?: string; id?: string; Actor?: { ID?: string } };
    try {
      e = JSON.parse(line);
    } catch {
      return;
    }
    const id = e.Actor?.ID ?? e.id;
    if (!id) return;
    const now = Date.now();
    if ((e.Action ?? e.status) === 'oom') this.oomKilled.set(id, now);
    else this.destroyed.set(id, now);
    for (const [k, t] of this.oomKilled) if (now - t > OOM_MEMORY_MS) this.oomKilled.delete(k);
    for (const [k, t] of this.destroyed) if (now - t > OOM_MEMORY_MS) this.destroyed.delete(k);
    for (const w of this.waiters) w();
  }

  close(): void {
    this.host?.close();
    const s = this.events as (NodeJS.ReadableStream & { destroy?: () => void }) | undefined;
    this.events = undefined;
    s?.destroy?.();
  }

  async open(buildId: string): Promise<SandboxRun> {
    const parent = this.host
      ? await this.host.createBuild(buildId, this.limits).catch((err: Error) => {
          throw new BuildSandboxError(`build limits cannot be enforced: the build's cgroup could not be made: ${err.message}`);
        })
      : undefined;
    return new SandboxRun(this, buildId, parent);
  }

  /** @internal */
  buildOptions(parent: string | undefined): SandboxBuildOptions {
    const m = this.limits.memory.bytes;
    return { ...(parent ? { cgroupparent: parent } : {}), memory: m, memswap: m, cpuperiod: 100_000, cpuquota: Math.round(this.limits.cpus * 100_000) };
  }

  /** @internal */
  wasOomKilled(short: string): boolean {
    for (const id of this.oomKilled.keys()) if (id.startsWith(short)) return true;
    return false;
  }

  /** @internal Resolves once every container named is gone (the engine's destroy event), or after the bound. */
  async settle(shorts: string[]): Promise<void> {
    const gone = () => shorts.every((s) => [...this.destroyed.keys()].some((id) => id.startsWith(s)));
    if (!this.events || gone()) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      const check = () => gone() && done();
      const timer = setTimeout(done, EVENTS_SETTLE_MS);
      this.waiters.add(check);
    });
  }

  /** @internal */
  get engineHost(): EngineHost | undefined {
    return this.host;
  }

  /** @internal */
  get engine(): Docker {
    return this.docker;
  }

  /** @internal */
  get logger(): Logger {
    return this.log;
  }
}
