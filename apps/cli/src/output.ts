import { StringDecoder } from 'node:string_decoder';

/**
 * Where the CLI's output goes. Human mode: progress and build logs on stderr, the result (a workspace ref) on stdout.
 * JSON mode (`--json`): one JSON object per line on stdout, nothing else there.
 */
export class Output {
  private readonly decoder = new StringDecoder('utf8');

  constructor(readonly json: boolean) {}

  /** A progress line for people; silent in JSON mode. */
  progress(text: string): void {
    if (!this.json) process.stderr.write(`==> ${text}\n`);
  }

  /** A machine-readable event; silent in human mode. */
  event(event: string, fields: Record<string, unknown>): void {
    if (this.json) process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
  }

  /** Build log bytes: raw on stderr, or `log` events with whole UTF-8 characters. */
  log(chunk: Buffer): void {
    if (!this.json) {
      process.stderr.write(chunk);
      return;
    }
    const text = this.decoder.write(chunk);
    if (text) this.event('log', { text });
  }

  /** The command's result for people (stdout). */
  result(text: string): void {
    if (!this.json) process.stdout.write(`${text}\n`);
  }
}

/** Rows as columns padded to their widest cell, on stdout (the first row is the header). */
export function writeTable(rows: string[][]): void {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) process.stdout.write(`${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('   ')}\n`);
}
