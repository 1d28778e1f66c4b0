import { spawn, type ChildProcess } from 'node:child_process';
import { expect } from 'vitest';
import { CLI_BUNDLE } from '../../testkit/cli.js';
import { ROOT } from '../../testkit/stack.js';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The real CLI in a process of its own (the bundle, or `entry`), with output observable while it runs. */
export class CliProcess {
  stdout = '';
  stderr = '';
  readonly child: ChildProcess;
  readonly done: Promise<CliResult>;
  private waiters: (() => void)[] = [];

  constructor(args: string[], env: Record<string, string> = {}, entry = CLI_BUNDLE) {
    this.child = spawn(process.execPath, [entry, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.on('data', (d: Buffer) => this.append('stdout', d));
    this.child.stderr!.on('data', (d: Buffer) => this.append('stderr', d));
    this.done = new Promise((resolve) => this.child.on('close', (code) => resolve({ code, stdout: this.stdout, stderr: this.stderr })));
  }

  private append(which: 'stdout' | 'stderr', d: Buffer): void {
    this[which] += d.toString();
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves with the first match of `re` in stdout or stderr; bounded, and fails if the CLI exits first. */
  async waitFor(which: 'stdout' | 'stderr', re: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this[which]);
      if (m) return m;
      if (this.child.exitCode !== null) throw new Error(`CLI exited (${this.child.exitCode}) before printing ${re}:\n${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`CLI printed no ${re} on ${which} within ${timeoutMs} ms:\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

export function cli(args: string[], env?: Record<string, string>, timeoutMs = 150_000, entry?: string): Promise<CliResult> {
  const p = new CliProcess(args, env, entry);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  return p.done.finally(() => clearTimeout(timer));
}

/** The lines the CLI prints as errors. */
export const errorLines = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('imgbuilder: '));
/** A person sees a message, never a stack trace. */
export const noStackTrace = (stderr: string) => expect(stderr).not.toMatch(/^\s+at /m);
