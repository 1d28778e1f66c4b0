import type { LogStore } from '@imgbuilder/common/build-life';
import { retry } from '@imgbuilder/common/retry';
import { SecretCensor } from '@imgbuilder/common/censor';
import { stripUrlCredentials } from '@imgbuilder/common/source-policy';
import type { Logger } from '@imgbuilder/common/logger';

/** How often a running build's log object may be rewritten (when the upload budget allows). */
const UPLOAD_TICK_MS = 2_000;
/** A running build's log object is rewritten at least this often while the log grows, budget or not. */
const UPLOAD_REFRESH_MS = 30_000;
/** The upload budget's constant: a log's rewrites may exceed its linear bound by this much (small logs stay fresh). */
const UPLOAD_SLACK_BYTES = 4 * 1024 * 1024;
/** Attempts at the final upload before the build ends with "log upload pending". */
const FINAL_UPLOAD_ATTEMPTS = 4;
/** Largest log entry in Redis, in characters: keeps the tail bound close. */
const MAX_ENTRY_CHARS = 64 * 1024;

export interface ReporterOptions {
  buildId: string;
  /** The attempt's fencing token; undefined for a writer that only ends the build (the reaper). */
  token?: number;
  maxBytes: number;
  /** Redis keeps about this much of the log's end (IMGBUILDER_LOG_REDIS_TAIL); the rest is read from the object. */
  redisTailBytes: number;
  secrets: string[];
  onBytes?: (n: number) => void;
  /** This attempt may no longer write the build (a newer attempt took over, or it was ended). */
  onLost?: (why: string) => void;
  /**
   * Redis refused the log's writes (out of memory) for `redisGiveUpMs`: the build must stop and end, so its memory
   * is freed; the log still goes whole to the object.
   */
  onRedisRefused?: (why: string) => void;
  redisGiveUpMs?: number;
  /** How often the running log's object may be rewritten (default 2 s; tests make it short). */
  uploadTickMs?: number;
}

/**
 * The log so far in one buffer that grows by doubling: an append copies its bytes once, and an upload sends a view of
 * the bytes so far (later appends only write beyond it; a grown buffer leaves the view on the old one intact).
 */
class LogBuffer {
  private buf = Buffer.allocUnsafe(64 * 1024);
  length = 0;

  append(bytes: Buffer): void {
    const need = this.length + bytes.length;
    if (need > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * this.buf.length));
      this.buf.copy(grown, 0, 0, this.length);
      this.buf = grown;
    }
    bytes.copy(this.buf, this.length);
    this.length = need;
  }

  view(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

/**
 * Publishes one build's log: every chunk goes to the build's Redis event stream (live subscribers on every API
 * pod) and to the log object in S3, which is rewritten while the build runs and uploaded whole at the end.
 * Secrets are redacted before a byte leaves this class.
 *
 * Rewrites are budgeted so a log's uploads stay linear in its size: a rewrite of a log of n bytes is due when the
 * bytes uploaded so far are at most n plus UPLOAD_SLACK_BYTES. So the rewrites total at most 2n + slack, and with the
 * final upload at most 3× the final size + slack; a quickly growing log is rewritten about each time it has doubled,
 * a small one every tick. A log that grows but is over budget is still rewritten every UPLOAD_REFRESH_MS, so a reader
 * of the presigned URL sees progress (the only rewrites beyond the bound; live readers follow Redis anyway).
 */
export class BuildReporter {
  private readonly buffer = new LogBuffer();
  private truncated = false;
  private pendingRedis = '';
  private redisFlush?: Promise<void>;
  /** Bytes of the log the object holds (as last uploaded); it is due an upload while shorter than the log. */
  private uploaded = 0;
  private uploadedAt = Date.now();
  /** Bytes sent to the object store for this log so far (the budget). */
  private putBytes = 0;
  private uploading?: Promise<void>;
  private readonly timer: NodeJS.Timeout;
  private readonly censor: SecretCensor;
  /** Why this attempt stopped writing, once it has. */
  lost?: string;
  /** Why Redis no longer gets this log (it refused writes), once so. */
  redisRefused?: string;
  /** Bytes of the log sent to Redis so far (the offset of the next entry). */
  private redisEnd = 0;
  /** This attempt's entries in the stream, oldest first: what the next append may trim. */
  private readonly entries: { id: string; end: number }[] = [];

  constructor(
    private readonly opts: ReporterOptions,
    private readonly logs: LogStore,
    private readonly log: Logger,
  ) {
    this.censor = new SecretCensor(opts.secrets);
    this.timer = setInterval(() => {
      if (this.due()) void this.upload().catch(() => undefined);
    }, opts.uploadTickMs ?? UPLOAD_TICK_MS);
    this.timer.unref();
  }

  /** Loads what earlier attempts of this build logged, so the object stays the whole log across restarts. */
  async resume(): Promise<void> {
    const prior = await this.logs.readAll(this.opts.buildId);
    this.buffer.append(prior);
    this.redisEnd = prior.length;
  }

  private lose(why: string): void {
    if (this.lost) return;
    this.lost = why;
    clearInterval(this.timer);
    this.pendingRedis = '';
    this.log.warn({ why }, 'this attempt stops writing the build');
    this.opts.onLost?.(why);
  }

  addSecrets(more: string[]): void {
    this.censor.add(more);
  }

  /** Appends text to the log (any chunking; the caller need not split lines, nor keep a secret in one chunk). */
  write(text: string): void {
    if (this.truncated || this.lost || !text) return;
    this.append(this.censor.push(stripUrlCredentials(text)));
  }

  private append(clean: string): void {
    if (this.truncated || this.lost || !clean) return;
    const room = this.opts.maxBytes - this.buffer.length;
    if (Buffer.byteLength(clean) > room) {
      clean = Buffer.from(clean).subarray(0, Math.max(0, room)).toString('utf8').replace(/\uFFFD$/, '');
      clean += `${clean.endsWith('\n') || clean === '' ? '' : '\n'}[imgbuilder] log truncated: the build printed more than ${this.opts.maxBytes} bytes (IMGBUILDER_LOG_MAX_BYTES); the build goes on, its further output is dropped\n`;
      this.truncated = true;
    }
    const buf = Buffer.from(clean);
    this.buffer.append(buf);
    this.opts.onBytes?.(buf.length);
    this.pendingRedis += clean;
    this.redisFlush ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flushRedis());
  }

  /** A line of imgbuilder's own, marked as such. */
  line(text: string): void {
    this.write(`[imgbuilder] ${text}\n`);
  }

  private async flushRedis(): Promise<void> {
    let failingSince: number | undefined;
    while (this.pendingRedis && !this.lost && !this.redisRefused) {
      let text = this.pendingRedis.slice(0, MAX_ENTRY_CHARS);
      // Never split a surrogate pair: Redis and the object must count the same bytes.
      if (text.length === MAX_ENTRY_CHARS && /[\uD800-\uDBFF]$/.test(text)) text = text.slice(0, -1);
      this.pendingRedis = this.pendingRedis.slice(text.length);
      try {
        const end = this.redisEnd + Buffer.byteLength(text);
        // Entries wholly older than the tail go, trimmed in the same step as this append.
        let drop = 0;
        while (drop < this.entries.length && end - this.entries[drop].end >= this.opts.redisTailBytes) drop++;
        const trimBelow = drop === 0 ? '' : drop === this.entries.length ? '*' : this.entries[drop].id;
        const id = await this.logs.append(this.opts.buildId, text, this.opts.token === undefined ? '' : String(this.opts.token), this.redisEnd, trimBelow);
        if (id === undefined) {
          this.lose('a newer attempt took the build over, or it was ended');
          break;
        }
        this.entries.splice(0, drop);
        this.entries.push({ id, end });
        this.redisEnd = end;
        failingSince = undefined;
      } catch (err) {
        // Redis away: keep the text and retry (the ioredis offline queue absorbs short outages); Redis answering
        // with errors (out of memory) for long ends the attempt, so the build can end and free memory.
        failingSince ??= Date.now();
        const giveUp = this.opts.redisGiveUpMs ?? 30_000;
        if (Date.now() - failingSince > giveUp) {
          this.redisRefused = `Redis refused the build's log for over ${Math.round(giveUp / 1000)}s (${(err as Error).message})`;
          this.pendingRedis = '';
          this.log.warn({ why: this.redisRefused }, 'log no longer written to Redis');
          this.opts.onRedisRefused?.(this.redisRefused);
          break;
        }
        this.pendingRedis = text + this.pendingRedis;
        this.log.warn({ err: (err as Error).message }, 'log append to Redis failed; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    this.redisFlush = undefined;
  }

  /** Waits until everything written so far is in Redis, including an end held back as a possible secret's start. */
  async drain(): Promise<void> {
    this.append(this.censor.end());
    while (this.redisFlush) await this.redisFlush;
  }

  /** Whether the running log's object should be rewritten now (see the class comment). */
  private due(): boolean {
    const size = this.buffer.length;
    if (size === this.uploaded || this.uploading) return false;
    return this.putBytes <= size + UPLOAD_SLACK_BYTES || Date.now() - this.uploadedAt >= UPLOAD_REFRESH_MS;
  }

  /** Rewrites the object with the log so far (`force`: even when it holds that much already). */
  private upload(token = this.opts.token, force = false): Promise<void> {
    if (this.lost) return Promise.reject(new Error(this.lost));
    if (this.uploading) return this.uploading;
    if (!force && this.buffer.length === this.uploaded) return Promise.resolve();
    const body = this.buffer.view();
    this.putBytes += body.length;
    this.uploading = this.logs
      .rewrite(this.opts.buildId, body, token === undefined ? '' : String(token))
      .then((written) => {
        if (!written) this.lose('a newer attempt took the build over, or it was ended');
        this.uploaded = body.length;
        this.uploadedAt = Date.now();
      })
      .finally(() => {
        this.uploading = undefined;
      });
    return this.uploading;
  }

  /**
   * Final upload of the complete log. Returns false if the store stayed down through bounded retries (or this
   * attempt lost the build); then `uploadLater` takes over.
   */
  async close(): Promise<boolean> {
    clearInterval(this.timer);
    await this.drain();
    if (this.lost) return false;
    try {
      await retry(
        async () => {
          if (this.uploading) await this.uploading.catch(() => undefined);
          await this.upload(this.opts.token, true);
        },
        {
          attempts: FINAL_UPLOAD_ATTEMPTS,
          delayMs: (attempt) => 500 * 2 ** attempt,
          retriable: () => !this.lost,
          onRetry: (err, attempt) => this.log.warn({ err: (err as Error).message, attempt }, 'log upload failed'),
        },
      );
      return !this.lost;
    } catch (err) {
      this.log.warn({ err: (err as Error).message, attempt: FINAL_UPLOAD_ATTEMPTS }, 'log upload failed');
    }
    return false;
  }

  /**
   * Keeps retrying the upload of a build that ended with its log pending (with backoff, for as long as this process
   * lives), under the token the end gave; `onUploaded` once it is in.
   */
  async uploadLater(token: number, onUploaded: () => void): Promise<void> {
    for (let delay = 2_000; ; delay = Math.min(delay * 2, 300_000)) {
      await new Promise((r) => setTimeout(r, delay).unref());
      try {
        await this.upload(token, true);
        if (this.lost) return;
        this.log.info('pending log upload succeeded');
        onUploaded();
        return;
      } catch {
        if (this.lost) return;
      }
    }
  }
}
