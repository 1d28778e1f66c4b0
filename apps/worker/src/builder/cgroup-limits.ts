import { access, mkdir, readFile, readdir, rmdir, writeFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { join } from 'node:path';

/** Limits that hold for all of one build's steps together. */
export interface BuildLimits {
  memory: { bytes: number; text: string };
  cpus: number;
  pids: number;
  disk: { bytes: number; text: string };
}

/**
 * How moving a step went: moved; refused because the step was already over the build's memory limit; the step ended
 * before any of its processes showed up (its bundle is gone); it did not show up within the deadline; or its
 * processes were still in the source at the deadline (moves that did not take).
 */
export type Adoption = 'moved' | 'over-memory' | 'ended' | 'missing' | 'stuck';

/** What a build's cgroup observed, read once the build's steps are gone. */
export interface CgroupVerdict {
  /** A fork was refused because the build reached its process limit. */
  pidsExceeded: boolean;
  /** The build's memory use reached its limit (the kernel reclaimed or killed to stay under it). */
  memoryReached: boolean;
  /** The kernel's OOM killer ran inside the build (cgroup v2 only reports this hierarchically). */
  oomKilled: boolean;
}

const CPU_PERIOD_US = 100_000;
/** Under this parent every build gets a cgroup of its own; the engine puts each step container below it. */
const PARENT = 'imgbuilder';

/**
 * One cgroup per build on the engine's host, handed to the engine as the build's cgroup parent. The engine nests
 * every step container (classic builder and BuildKit alike) below it, so the limits hold for the build as a whole,
 * not per step, and pids.max bounds fork bombs that the build API has no parameter for.
 *
 * Works where the worker shares the engine's host (the local stack); cgroup v1 (memory, cpu, pids controllers) and
 * v2 (unified hierarchy) are both handled.
 */
export class CgroupLimits {
  private constructor(
    private readonly root: string,
    private readonly version: 1 | 2,
  ) {}

  /** The cgroup filesystem at `root`, if it is there and writable; undefined otherwise. */
  static async detect(root: string): Promise<CgroupLimits | undefined> {
    try {
      await access(join(root, 'cgroup.controllers'), constants.R_OK);
      await access(root, constants.W_OK);
      return new CgroupLimits(root, 2);
    } catch {
      // not the unified hierarchy; try v1 below
    }
    try {
      for (const c of ['memory', 'cpu', 'pids']) await access(join(root, c), constants.W_OK);
      return new CgroupLimits(root, 1);
    } catch {
      return undefined;
    }
  }

  describe(): string {
    return `cgroup v${this.version} at ${this.root}`;
  }

  /** The cgroup parent to give the engine for this build. */
  parentOf(buildId: string): string {
    return `/${PARENT}/${buildId}`;
  }

  async create(buildId: string, limits: BuildLimits): Promise<string> {
    if (this.version === 2) {
      const parent = join(this.root, PARENT);
      await mkdir(parent, { recursive: true });
      await writeFile(join(this.root, 'cgroup.subtree_control'), '+memory +cpu +pids').catch(() => undefined);
      await writeFile(join(parent, 'cgroup.subtree_control'), '+memory +cpu +pids');
      const dir = join(parent, buildId);
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'memory.max'), String(limits.memory.bytes));
      // Swap counts in the limit: none is allowed on top of it.
      await writeFile(join(dir, 'memory.swap.max'), '0').catch(() => undefined);
      await writeFile(join(dir, 'cpu.max'), `${Math.round(limits.cpus * CPU_PERIOD_US)} ${CPU_PERIOD_US}`);
      await writeFile(join(dir, 'pids.max'), String(limits.pids));
      // Steps must go below this cgroup, never into it ("no internal processes"): the engine does that.
      await writeFile(join(dir, 'cgroup.subtree_control'), '+memory +cpu +pids');
      return this.parentOf(buildId);
    }
    const dir = (c: string) => join(this.root, c, PARENT, buildId);
    for (const c of ['memory', 'cpu', 'pids']) await mkdir(dir(c), { recursive: true });
    await writeFile(join(dir('memory'), 'memory.limit_in_bytes'), String(limits.memory.bytes));
    // memsw exists only with swap accounting on; without it the kernel cannot swap a cgroup's pages beyond the limit.
    await writeFile(join(dir('memory'), 'memory.memsw.limit_in_bytes'), String(limits.memory.bytes)).catch(() => undefined);
    await writeFile(join(dir('cpu'), 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
    await writeFile(join(dir('cpu'), 'cpu.cfs_quota_us'), String(Math.round(limits.cpus * CPU_PERIOD_US)));
    await writeFile(join(dir('pids'), 'pids.max'), String(limits.pids));
    return this.parentOf(buildId);
  }

  async verdict(buildId: string, limits: BuildLimits): Promise<CgroupVerdict> {
    if (this.version === 2) {
      const dir = join(this.root, PARENT, buildId);
      const events = await read(join(dir, 'memory.events'));
      const peak = Number((await read(join(dir, 'memory.peak'))).trim() || 0);
      return {
        pidsExceeded: await this.pidsExceeded(buildId, limits),
        memoryReached: counter(events, 'max') > 0 || peak >= limits.memory.bytes,
        oomKilled: counter(events, 'oom_kill') > 0,
      };
    }
    const mem = join(this.root, 'memory', PARENT, buildId);
    const maxUsage = Math.max(Number((await read(join(mem, 'memory.max_usage_in_bytes'))).trim() || 0), Number((await read(join(mem, 'memory.memsw.max_usage_in_bytes'))).trim() || 0));
    return {
      pidsExceeded: await this.pidsExceeded(buildId, limits),
      memoryReached: maxUsage >= limits.memory.bytes,
      oomKilled: false,
    };
  }

  /** Whether the build reached its process limit (a fork refused, or as many processes as allowed at once). */
  async pidsExceeded(buildId: string, limits: BuildLimits): Promise<boolean> {
    // v1 counts refused forks in the forking (step) cgroup, gone with its container: the peak here tells instead.
    const pids = this.version === 2 ? join(this.root, PARENT, buildId) : join(this.root, 'pids', PARENT, buildId);
    return counter(await read(join(pids, 'pids.events')), 'max') > 0 || Number((await read(join(pids, 'pids.peak'))).trim() || 0) >= limits.pids;
  }

  /**
   * Moves the processes of a step that the engine started in a cgroup of its own (`source`, a cgroup path like
   * `/docker/buildkit/<id>`: dockerd's BuildKit ignores the build API's cgroup parent) into a child of the build's
   * cgroup, charges included, so the build's limits hold for it. Keeps moving until `source` stays empty (a process
   * forking while it moves leaves its child behind). `running` tells whether the step may still start or run (its
   * bundle is there). Any other failure to move a process throws.
   */
  async adopt(buildId: string, step: string, source: string, running: () => Promise<boolean>, deadlineMs = 3_000): Promise<Adoption> {
    const target = (c?: string) => (this.version === 2 ? join(this.root, PARENT, buildId, step) : join(this.root, c!, PARENT, buildId, step));
    const from = (c?: string) => (this.version === 2 ? join(this.root, source) : join(this.root, c!, source));
    const controllers = this.version === 2 ? [undefined] : ['memory', 'cpu', 'pids'];
    for (const c of controllers) await mkdir(target(c), { recursive: true });
    // v1 moves a task's memory charge only when the destination asks for it.
    if (this.version === 1) await writeFile(join(target('memory'), 'memory.move_charge_at_immigrate'), '3').catch(() => undefined);
    const end = Date.now() + deadlineMs;
    let seen = false;
    let emptyReads = 0;
    let moved = 0;
    // v1 hierarchies are independent: a process forked between two of its parent's moves starts in the source of
    // the hierarchies not moved yet. Each hierarchy's source is emptied on its own until all stay empty.
    while (Date.now() < end && emptyReads < 3) {
      moved = 0;
      for (const c of controllers) {
        const procs = (await readFile(join(from(c), 'cgroup.procs'), 'utf8').catch(() => '')).split('\n').filter(Boolean);
        for (const pid of procs) {
          moved++;
          try {
            await writeFile(join(target(c), 'cgroup.procs'), pid);
          } catch (err) {
            const code = (err as NodeJS.ErrnoException).code;
            if (code === 'ENOMEM') return 'over-memory';
            // ESRCH: the process ended meanwhile.
            if (code !== 'ESRCH') throw err;
          }
        }
      }
      if (moved) {
        seen = true;
        emptyReads = 0;
        continue;
      }
      if (seen) emptyReads++;
      else if (!(await running())) return 'ended';
      await new Promise((r) => setTimeout(r, 2));
    }
    if (!seen) return 'missing';
    return moved ? 'stuck' : 'moved';
  }

  /** Removes the build's cgroups in every hierarchy the engine created them in (they must be empty by now). */
  async remove(buildId: string): Promise<void> {
    const dirs = this.version === 2 ? [join(this.root, PARENT, buildId)] : (await readdir(this.root).catch(() => [] as string[])).map((c) => join(this.root, c, PARENT, buildId));
    for (const dir of dirs) await removeTree(dir);
  }
}

/** A cgroup file's text; empty when it is missing (the kernel or the controller does not offer it). */
function read(p: string): Promise<string> {
  return readFile(p, 'utf8').catch(() => '');
}

/** The value of `key` in a flat-keyed cgroup file (`memory.events`, `pids.events`); 0 when absent. */
function counter(text: string, key: string): number {
  return Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
}

/** rmdir of a cgroup and any child cgroups the engine left behind (cgroup dirs only go with rmdir, deepest first). */
async function removeTree(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => undefined);
  if (!entries) return;
  for (const e of entries) if (e.isDirectory()) await removeTree(join(dir, e.name));
  await rmdir(dir).catch(() => undefined);
}
