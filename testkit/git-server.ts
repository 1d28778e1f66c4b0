import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { connect } from 'node:net';
import { freePort } from './stack.js';

/** A `git daemon` on loopback serving repositories the test creates. */
export class GitServer {
  private constructor(
    readonly root: string,
    readonly port: number,
    private readonly proc: ChildProcess,
  ) {}

  static async start(): Promise<GitServer> {
    const root = mkdtempSync(join(tmpdir(), 'imgbuilder-git-'));
    const port = await freePort();
    const proc = spawn('git', ['daemon', '--reuseaddr', `--base-path=${root}`, '--export-all', '--enable=upload-pack', '--listen=127.0.0.1', `--port=${port}`, root], { stdio: 'ignore' });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = connect(port, '127.0.0.1', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      });
      if (ok) break;
      if (Date.now() > deadline) throw new Error('git daemon did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
    return new GitServer(root, port, proc);
  }

  url(name: string): string {
    return `git://127.0.0.1:${this.port}/${name}`;
  }

  /** Creates (or adds a commit to) repository `name` with the given files on `branch`; returns the commit. */
  commit(name: string, files: Record<string, string>, branch = 'main'): string {
    const dir = join(this.root, name);
    const git = (...args: string[]) => execFileSync('git', ['-c', 'user.email=t@example.com', '-c', 'user.name=test', ...args], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    mkdirSync(dir, { recursive: true });
    try {
      git('rev-parse', '--git-dir');
    } catch {
      git('init', '-q', '-b', branch);
      git('config', 'uploadpack.allowAnySHA1InWant', 'true');
    }
    try {
      git('checkout', '-q', branch);
    } catch {
      git('checkout', '-q', '-b', branch);
    }
    for (const [path, content] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), content);
    }
    git('add', '-A');
    git('commit', '-q', '--allow-empty', '-m', `commit ${Date.now()}`);
    const commit = git('rev-parse', 'HEAD');
    // The served HEAD stays on main, as on a real server.
    if (branch !== 'main') git('checkout', '-q', 'main');
    return commit;
  }

  stop(): void {
    this.proc.kill();
  }
}
