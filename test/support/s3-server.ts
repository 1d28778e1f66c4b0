import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, ROOT } from '../../testkit/stack.js';

/**
 * A private s3rver on a free loopback port, for tests that freeze or kill the object store (never the shared one
 * other tests use).
 */
export class S3Server {
  private proc?: ChildProcess;

  private constructor(
    readonly port: number,
    readonly dir: string,
  ) {}

  static async start(): Promise<S3Server> {
    const s = new S3Server(await freePort(), mkdtempSync(join(tmpdir(), 'imgbuilder-s3-')));
    await s.launch();
    return s;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the server; resolves once it answers HTTP (bounded). */
  async launch(): Promise<void> {
    this.proc = spawn(process.execPath, [join(ROOT, 'infra/local/s3rver.mjs'), '--port', String(this.port), '--directory', this.dir], { stdio: 'ignore' });
    for (const deadline = Date.now() + 60_000; ; ) {
      const up = await fetch(`${this.endpoint}/`).then(
        () => true,
        () => false,
      );
      if (up) return;
      if (Date.now() > deadline) throw new Error(`s3rver on port ${this.port} did not start`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** SIGSTOP: connections are still accepted by the kernel, but nothing answers. */
  freeze(): void {
    this.proc?.kill('SIGSTOP');
  }

  thaw(): void {
    this.proc?.kill('SIGCONT');
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      p.kill('SIGCONT');
      await new Promise<void>((resolve) => {
        p.once('exit', () => resolve());
        p.kill('SIGKILL');
      });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
