import type Docker from 'dockerode';
import type { Logger } from '@imgbuilder/common/logger';
import { randomBytes } from 'node:crypto';
import { BuildLimitError, BuildSandboxError } from '../errors.js';
import type { BuildLimits } from './cgroup-limits.js';
import type { BuildkitExecution } from './buildkit-executions.js';
import type { EngineHost } from './engine-host.js';

/** Why a build ended early: a limit it crossed, or limits that could not be enforced for it. */
export type SandboxFailure = BuildLimitError | BuildSandboxError;

/** How often a running build's disk use and process-limit hits are measured. */
const POLL_MS = 1_000;

/** Build-API parameters that put a build's step containers under its limits. */
export interface SandboxBuildOptions {
  cgroupparent?: string;
  memory: number;
  memswap: number;
  cpuperiod: number;
  cpuquota: number;
}

/** What a run needs of the sandbox it runs in (BuildSandbox, which watches the engine for every build). */
export interface SandboxHost {
  readonly limits: BuildLimits;
  /** Where the build's cgroup lives; undefined when builds get none. */
  readonly engineHost: EngineHost | undefined;
  readonly engine: Docker;
  readonly logger: Logger;
  /** Sends the BuildKit steps carrying `marker` to `run` (undefined: to nobody). */
  register(marker: string, run: SandboxRun | undefined): void;
  buildOptions(parent: string | undefined): SandboxBuildOptions;
  wasOomKilled(short: string): boolean;
  /** Resolves once every container named is gone, or after a bound. */
  settle(shorts: string[]): Promise<void>;
}

/** One build inside the sandbox: its options for the engine, the watch while it runs, the verdict at the end. */
export class SandboxRun {
  private readonly steps: string[] = [];
  /** BuildKit steps moved into this build's cgroup: executor id → the directory their writes land in. */
  private readonly buildkitSteps = new Map<string, string | undefined>();
  /** Value of `no_proxy` in this build's BuildKit steps: how the sandbox tells them from other builds' steps. */
  readonly stepMarker: string;
  /** Bytes the finished steps added (their containers' writable layers, last measured). */
  private readonly stepBytes = new Map<string, number>();
  /**
   * BuildKit steps measured after their process was gone, with that size: their writable directory no longer changes,
   * so it is not walked again, only checked to still be there (a directory BuildKit removed counts 0, as a walk would).
   */
  private readonly endedSteps = new Map<string, number>();
  private readonly ctl = new AbortController();
  private breach?: SandboxFailure;
  private timer?: NodeJS.Timeout;
  private polling = false;
  /** The wait for the engine to report this build's step containers gone: verdict and release share one. */
  private settled?: Promise<void>;
  readonly started = Date.now();

  constructor(
    private readonly sandbox: SandboxHost,
    private readonly buildId: string,
    private readonly parent: string | undefined,
  ) {
    this.timer = setInterval(() => void this.poll(), POLL_MS);
    this.timer.unref();
    this.stepMarker = `imgbuilder-build-${buildId}-${randomBytes(8).toString('hex')}.invalid`;
    if (parent) sandbox.register(this.stepMarker, this);
  }

  /**
   * A BuildKit step of this build started: bring it under the build's limits, or fail the build. A step that ended
   * before its process could be seen (a few milliseconds) is let be: it is over.
   */
  async adopt(e: BuildkitExecution): Promise<void> {
    const host = this.sandbox.engineHost;
    if (!host) return;
    this.buildkitSteps.set(e.id, undefined);
    let outcome;
    try {
      outcome = await host.adopt(this.buildId, e);
    } catch (err) {
      return this.fail(new BuildSandboxError(`a BuildKit step (${e.id}) could not be moved into the build's cgroup, so its limits could not be enforced: ${(err as Error).message}`));
    }
    if (outcome === 'over-memory') return this.trip(new BuildLimitError('memory', this.sandbox.limits));
    if (outcome === 'stuck') return this.fail(new BuildSandboxError(`a BuildKit step (${e.id}) could not be moved into the build's cgroup, so its limits could not be enforced: its processes were still in ${e.cgroupsPath} after 3 s`));
    if (outcome === 'missing') return this.fail(new BuildSandboxError(`a BuildKit step (${e.id}) did not show up in its cgroup ${e.cgroupsPath} within 3 s, so it could not be held to the build's limits`));
    // Without its upper directory the step's disk use cannot be measured.
    const upper = await host.upperDir(e.rootfs).catch((err: Error) => this.fail(new BuildSandboxError(`the disk use of a BuildKit step (${e.id}) cannot be measured: ${err.message}`)));
    if (upper) this.buildkitSteps.set(e.id, upper);
  }

  /** Ends the build: the worker cannot hold it to its limits. */
  fail(err: BuildSandboxError): void {
    this.sandbox.logger.error({ build_id: this.buildId, err: err.message }, 'build limits cannot be enforced for this build; failing it');
    this.trip(err);
  }

  /** Aborted when the build crosses a limit while it runs. */
  get signal(): AbortSignal {
    return this.ctl.signal;
  }

  buildOptions(): SandboxBuildOptions {
    return this.sandbox.buildOptions(this.parent);
  }

  /** The engine started a step container (classic builder: "Running in <id>"). */
  stepContainer(shortId: string): void {
    this.steps.push(shortId);
  }

  private trip(err: SandboxFailure): void {
    if (this.breach) return;
    this.breach = err;
    this.ctl.abort(err);
  }

  private async poll(): Promise<void> {
    if (this.polling || this.breach) return;
    this.polling = true;
    try {
      const { limits } = this.sandbox;
      const host = this.sandbox.engineHost;
      if (host && (await host.pidsExceeded(this.buildId, limits))) {
        this.trip(new BuildLimitError('process', limits));
        return;
      }
      for (const [id, upper] of this.buildkitSteps) {
        if (!upper || !host) continue;
        const ended = this.endedSteps.get(id);
        if (ended !== undefined) {
          this.stepBytes.set(id, (await host.exists(upper)) ? ended : 0);
          continue;
        }
        // Asked before the walk: a step found over here has written all it will by the time the walk starts.
        const over = !(await host.stepRunning(id));
        const bytes = await host.dirBytes(upper);
        this.stepBytes.set(id, bytes);
        if (over) this.endedSteps.set(id, bytes);
      }
      const current = this.steps.at(-1);
      if (current) {
        const info = (await this.sandbox.engine.getContainer(current).inspect({ size: true } as object).catch(() => undefined)) as { SizeRw?: number } | undefined;
        if (info?.SizeRw !== undefined) this.stepBytes.set(current, info.SizeRw);
      }
      let total = 0;
      for (const n of this.stepBytes.values()) total += n;
      if (total > limits.disk.bytes) this.trip(new BuildLimitError('disk', limits));
    } catch (err) {
      this.fail(new BuildSandboxError(`build limits could not be checked: ${(err as Error).message}`));
    } finally {
      this.polling = false;
    }
  }

  /**
   * The limit the finished build crossed, if any: seen while it ran, or found now (an OOM kill the step survived,
   * a refused fork, layers larger than the disk limit). `imageId` is the built image, checked for its new layers.
   */
  async verdict(failure: unknown, imageId?: string): Promise<SandboxFailure | undefined> {
    clearInterval(this.timer);
    if (this.breach) return this.breach;
    const { limits } = this.sandbox;
    await this.settle();
    let cg;
    try {
      cg = await this.sandbox.engineHost?.verdict(this.buildId, limits);
    } catch (err) {
      return (this.breach = new BuildSandboxError(`whether the build kept its limits could not be read: ${(err as Error).message}`));
    }
    const memory = new BuildLimitError('memory', limits);
    if (this.steps.some((s) => this.sandbox.wasOomKilled(s)) || cg?.oomKilled) return (this.breach = memory);
    const killed = failure instanceof Error && /(non-zero|exit) code: 137\b|\bKilled\b/.test(failure.message);
    if (killed && cg?.memoryReached) return (this.breach = memory);
    if (cg?.pidsExceeded) return (this.breach = new BuildLimitError('process', limits));
    if (imageId) {
      const added = await this.addedBytes(imageId);
      if (added > limits.disk.bytes) return (this.breach = new BuildLimitError('disk', limits));
    }
    return undefined;
  }

  private settle(): Promise<void> {
    return (this.settled ??= this.sandbox.settle(this.steps));
  }

  /** Size of the image's layers created by this build (cached steps keep their older creation time). */
  private async addedBytes(imageId: string): Promise<number> {
    const history = (await this.sandbox.engine.getImage(imageId).history().catch(() => [])) as { Created?: number; Size?: number }[];
    const since = Math.floor(this.started / 1000) - 1;
    return history.filter((h) => (h.Created ?? 0) >= since).reduce((n, h) => n + (h.Size ?? 0), 0);
  }

  /** Removes what a build that crossed a limit wrote (its image and the layers only it used), then its cgroup. */
  async release(imageId?: string): Promise<void> {
    clearInterval(this.timer);
    this.sandbox.register(this.stepMarker, undefined);
    if (this.breach && imageId) {
      await this.sandbox.engine
        .getImage(imageId)
        .remove({ force: true })
        .catch((err: Error) => this.sandbox.logger.warn({ err: err.message, build_id: this.buildId }, 'could not remove the image of a build over its limits'));
    }
    if (this.sandbox.engineHost) {
      await this.settle();
      await this.sandbox.engineHost.removeBuild(this.buildId).catch((err: Error) => this.sandbox.logger.warn({ err: err.message, build_id: this.buildId }, 'could not remove the build\'s cgroup'));
    }
  }
}
