import { BuildStore } from '@imgbuilder/common/build-store';
import { retry } from '@imgbuilder/common/retry';
import { redactSecrets } from '@imgbuilder/common/censor';
import type { ObjectStore } from '@imgbuilder/common/object-store';
import { stripUrlCredentials } from '@imgbuilder/common/source-policy';
import type { Logger } from '@imgbuilder/common/logger';

/** The object holding a running build's log is rewritten at least this often. */
const UPLOAD_INTERVAL_MS = 2_000;
/** Attempts at the final upload before the build ends with "log upload pending". */
const FINAL_UPLOAD_ATTEMPTS = 4;

export interface ReporterOptions {
  buildId: string;
  logKey: string;
  maxBytes: number;
  secrets: string[];
  onBytes?: (n: number) => void;
  /** Called when a log upload that was pending at the end of the build finally succeeds. */
  onLateUpload?: () => void;
}

/**
 * Publishes one build's log: every chunk goes to the build's Redis event stream (live subscribers on every API
 * pod) and to the log object in S3, which is rewritten while the build runs and uploaded whole at the end.
 * Secrets are redacted before a byte leaves this class.
 */
export class BuildReporter {
  private readonly chunks: Buffer[] = [];
  private bytes = 0;
  private truncated = false;
  private pendingRedis = '';
  private redisFlush?: Promise<void>;
  private dirty = false;
  private uploading?: Promise<void>;
  private readonly timer: NodeJS.Timeout;
  private secrets: string[];

  constructor(
    private readonly opts: ReporterOptions,
    private readonly store: BuildStore,
    private readonly objects: ObjectStore,
    private readonly log: Logger,
  ) {
    this.secrets = opts.secrets;
    this.timer = setInterval(() => void this.upload().catch(() => undefined), UPLOAD_INTERVAL_MS);
    this.timer.unref();
  }

  /** Loads what earlier attempts of this build logged, so the object stays the whole log across restarts. */
  async resume(): Promise<number> {
    let after = '0-0';
    let n = 0;
    for (;;) {
      const batch = await this.store.readEvents(this.opts.buildId, after, 1000);
      for (const e of batch) {
        if (e.kind === 'log') {
          const b = Buffer.from(e.text);
          this.chunks.push(b);
          this.bytes += b.length;
          n++;
        }
        after = e.id;
      }
      if (batch.length < 1000) break;
    }
    this.dirty = true;
    return n;
  }

  addSecrets(more: string[]): void {
    this.secrets = [...this.secrets, ...more];
  }

  /** Appends text to the log (any chunking; the caller need not split lines). */
  write(text: string): void {
    if (this.truncated || !text) return;
    let clean = redactSecrets(stripUrlCredentials(text), this.secrets);
    const room = this.opts.maxBytes - this.bytes;
    if (Buffer.byteLength(clean) > room) {
      clean = Buffer.from(clean).subarray(0, Math.max(0, room)).toString('utf8').replace(/\uFFFD$/, '');
      clean += `${clean.endsWith('\n') || clean === '' ? '' : '\n'}[imgbuilder] log truncated: the build printed more than ${this.opts.maxBytes} bytes (IMGBUILDER_LOG_MAX_BYTES); the build goes on, its further output is dropped\n`;
      this.truncated = true;
    }
    const buf = Buffer.from(clean);
    this.chunks.push(buf);
    this.bytes += buf.length;
    this.opts.onBytes?.(buf.length);
    this.dirty = true;
    this.pendingRedis += clean;
    this.redisFlush ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.flushRedis());
  }

  /** A line of imgbuilder's own, marked as such. */
  line(text: string): void {
    this.write(`[imgbuilder] ${text}\n`);
  }

  private async flushRedis(): Promise<void> {
    while (this.pendingRedis) {
      const text = this.pendingRedis;
      this.pendingRedis = '';
      try {
        await this.store.appendLog(this.opts.buildId, text);
      } catch (err) {
        // Redis away: keep the text and retry; the ioredis offline queue usually absorbs short outages.
        this.pendingRedis = text + this.pendingRedis;
        this.log.warn({ err: (err as Error).message }, 'log append to Redis failed; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    this.redisFlush = undefined;
  }

  /** Waits until everything written so far is in Redis. */
  async drain(): Promise<void> {
    while (this.redisFlush) await this.redisFlush;
  }

  private upload(): Promise<void> {
    if (!this.dirty) return this.uploading ?? Promise.resolve();
    if (this.uploading) return this.uploading;
    this.dirty = false;
    const body = Buffer.concat(this.chunks);
    this.chunks.length = 0;
    this.chunks.push(body);
    this.uploading = this.objects
      .put(this.opts.logKey, body)
      .catch((err: Error) => {
        this.dirty = true;
        throw err;
      })
      .finally(() => {
        this.uploading = undefined;
      });
    return this.uploading;
  }

  /**
   * Final upload of the complete log. Returns false if the store stayed down through bounded retries; then it keeps
   * retrying in the background (with backoff) for as long as this process lives.
   */
  async close(): Promise<boolean> {
    clearInterval(this.timer);
    await this.drain();
    try {
      await retry(
        async () => {
          if (this.uploading) await this.uploading.catch(() => undefined);
          this.dirty = true;
          await this.upload();
        },
        {
          attempts: FINAL_UPLOAD_ATTEMPTS,
          delayMs: (attempt) => 500 * 2 ** attempt,
          onRetry: (err, attempt) => this.log.warn({ err: (err as Error).message, attempt }, 'log upload failed'),
        },
      );
      return true;
    } catch (err) {
      this.log.warn({ err: (err as Error).message, attempt: FINAL_UPLOAD_ATTEMPTS }, 'log upload failed');
    }
    void this.retryForever();
    return false;
  }

  private async retryForever(): Promise<void> {
    for (let delay = 5_000; ; delay = Math.min(delay * 2, 300_000)) {
      await new Promise((r) => setTimeout(r, delay).unref());
      try {
        this.dirty = true;
        await this.upload();
        this.log.info('pending log upload succeeded');
        this.opts.onLateUpload?.();
        return;
      } catch {
        /* keep trying */
      }
    }
  }
}
