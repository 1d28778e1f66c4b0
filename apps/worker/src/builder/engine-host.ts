import { access, lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CgroupLimits, type Adoption, type BuildLimits, type CgroupVerdict } from './cgroup-limits.js';
import { BuildkitExecutions, type BuildkitExecution } from './buildkit-executions.js';

/**
 * What the build sandbox needs done where the engine runs: per-build cgroups, BuildKit's step processes moved into
 * them, and the size of what a step wrote. In the engine's mount and PID namespaces, either in-process (the worker on
 * the engine's host, LocalEngineHost) or through the limits agent inside the engine's container (limits-agent.ts).
 */
export interface EngineHost {
  describe(): string;
  /** Whether BuildKit's step processes are reported (its executor directory is readable there). */
  readonly watchesBuildkit: boolean;
  /** Creates the build's cgroup; returns the cgroup parent to give the engine. */
  createBuild(buildId: string, limits: BuildLimits): Promise<string>;
  /** Moves a BuildKit step of the build into the build's cgroup (CgroupLimits.adopt). */
  adopt(buildId: string, step: BuildkitExecution): Promise<Adoption>;
  pidsExceeded(buildId: string, limits: BuildLimits): Promise<boolean>;
  verdict(buildId: string, limits: BuildLimits): Promise<CgroupVerdict>;
  removeBuild(buildId: string): Promise<void>;
  /** Whether a BuildKit step's process may still be writing (its bundle is there). */
  stepRunning(id: string): Promise<boolean>;
  /** The writable directory of a step's root file system, if it can be found. */
  upperDir(rootfs: string): Promise<string | undefined>;
  /** Bytes of the regular files below `dir`. */
  dirBytes(dir: string): Promise<number>;
  exists(dir: string): Promise<boolean>;
  close(): void;
}

/** The engine's host seen from this process: its cgroup filesystem and BuildKit's executor directory. */
export class LocalEngineHost implements EngineHost {
  private constructor(
    private readonly cgroups: CgroupLimits,
    private readonly buildkit: BuildkitExecutions | undefined,
  ) {}

  /** Undefined when the cgroup filesystem at `cgroupRoot` is not writable from here. */
  static async open(cgroupRoot: string, executorDir: string, onExecution: (e: BuildkitExecution) => void): Promise<LocalEngineHost | undefined> {
    const cgroups = await CgroupLimits.detect(cgroupRoot);
    if (!cgroups) return undefined;
    return new LocalEngineHost(cgroups, await BuildkitExecutions.watch(executorDir, onExecution));
  }

  describe(): string {
    return this.cgroups.describe();
  }

  get watchesBuildkit(): boolean {
    return Boolean(this.buildkit);
  }

  createBuild(buildId: string, limits: BuildLimits): Promise<string> {
    return this.cgroups.create(buildId, limits);
  }

  adopt(buildId: string, step: BuildkitExecution): Promise<Adoption> {
    return this.cgroups.adopt(buildId, step.id, step.cgroupsPath, () => this.stepRunning(step.id));
  }

  pidsExceeded(buildId: string, limits: BuildLimits): Promise<boolean> {
    return this.cgroups.pidsExceeded(buildId, limits);
  }

  verdict(buildId: string, limits: BuildLimits): Promise<CgroupVerdict> {
    return this.cgroups.verdict(buildId, limits);
  }

  removeBuild(buildId: string): Promise<void> {
    return this.cgroups.remove(buildId);
  }

  async stepRunning(id: string): Promise<boolean> {
    return this.buildkit ? this.buildkit.running(id) : true;
  }

  /** From this process's mount table: the upper directory of the overlay mounted at `rootfs`. */
  async upperDir(rootfs: string): Promise<string | undefined> {
    const table = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
    for (const line of table.split('\n')) {
      const f = line.split(' ');
      if (f[4] !== rootfs) continue;
      const upper = /(?:^|,)upperdir=([^,]+)/.exec(line)?.[1];
      if (upper) return upper;
    }
    return undefined;
  }

  async dirBytes(dir: string): Promise<number> {
    let total = 0;
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isDirectory()) total += await this.dirBytes(p);
      else if (e.isFile()) total += (await lstat(p).catch(() => undefined))?.size ?? 0;
    }
    return total;
  }

  exists(dir: string): Promise<boolean> {
    return access(dir).then(
      () => true,
      () => false,
    );
  }

  close(): void {
    this.buildkit?.close();
  }
}
