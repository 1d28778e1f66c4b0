import { watch, type FSWatcher } from 'node:fs';
import { access, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** One process BuildKit is about to start for a RUN step, as its OCI bundle describes it. */
export interface BuildkitExecution {
  /** Executor id: the bundle's directory name, also the name of the step's cgroup. */
  id: string;
  env: string[];
  /** The cgroup BuildKit asked runc for (`/docker/buildkit/<id>`). */
  cgroupsPath: string;
  /** The step's root file system (an overlay mount; its upper directory holds what the step writes). */
  rootfs: string;
}

/** How often the directory is listed as well, in case an inotify event was lost. */
const RESCAN_MS = 500;

/**
 * Reports each step process dockerd's BuildKit starts, from the OCI bundles it writes under
 * `<docker root>/buildkit/executor/` before it runs them. BuildKit steps are no Docker containers: no container id,
 * no events, no cgroup parent from the build API; this is how a worker on the engine's host finds them.
 */
export class BuildkitExecutions {
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  private readonly known = new Set<string>();
  /** Names being read now: the watcher and the rescan can both see a new bundle, and it must be reported once. */
  private readonly reading = new Set<string>();

  private constructor(
    private readonly dir: string,
    private readonly onExecution: (e: BuildkitExecution) => void,
  ) {}

  /** Starts watching `dir`; undefined when it cannot be read from here (the worker is not on the engine's host). */
  static async watch(dir: string, onExecution: (e: BuildkitExecution) => void): Promise<BuildkitExecutions | undefined> {
    try {
      await readdir(dir);
    } catch {
      return undefined;
    }
    const w = new BuildkitExecutions(dir, onExecution);
    w.watcher = watch(dir, (_event, name) => name && void w.look(String(name)));
    w.watcher.on('error', () => undefined);
    w.timer = setInterval(() => void w.scan(), RESCAN_MS);
    w.timer.unref();
    await w.scan();
    return w;
  }

  /**
   * Whether a step's bundle is still there: BuildKit removes it once the step's process is gone, so from then on
   * nothing writes to the step's root file system. Asked of the directory itself (a failed listing proves nothing).
   */
  async running(id: string): Promise<boolean> {
    return access(join(this.dir, id)).then(
      () => true,
      (err: NodeJS.ErrnoException) => err.code !== 'ENOENT',
    );
  }

  close(): void {
    this.watcher?.close();
    clearInterval(this.timer);
  }

  private async scan(): Promise<void> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const present = new Set(names);
    for (const k of this.known) if (!present.has(k)) this.known.delete(k);
    await Promise.all(names.map((n) => this.look(n)));
  }

  private async look(name: string): Promise<void> {
    if (this.known.has(name) || this.reading.has(name) || !/^[a-z0-9]{20,32}$/.test(name)) return;
    this.reading.add(name);
    try {
      await this.read(name);
    } finally {
      this.reading.delete(name);
    }
  }

  private async read(name: string): Promise<void> {
    // The bundle's config.json may still be being written: retry briefly.
    for (let i = 0; i < 50; i++) {
      if (this.known.has(name)) return;
      const spec = await readFile(join(this.dir, name, 'config.json'), 'utf8').catch(() => undefined);
      if (spec) {
        let parsed: { process?: { env?: string[] }; linux?: { cgroupsPath?: string }; root?: { path?: string } };
        try {
          parsed = JSON.parse(spec);
        } catch {
          await new Promise((r) => setTimeout(r, 2));
          continue;
        }
        this.known.add(name);
        this.onExecution({ id: name, env: parsed.process?.env ?? [], cgroupsPath: parsed.linux?.cgroupsPath ?? `/docker/buildkit/${name}`, rootfs: parsed.root?.path ?? join(this.dir, name, 'rootfs') });
        return;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}
