import type { Readable } from 'node:stream';
import type { ObjectStore } from '../object-store.js';
import type { RedisClient } from '../redis.js';
import type { RedisKeys } from './redis-keys.js';
import { runScript } from './scripts.js';
import { streamFields } from './state.js';

/** Where build logs live in the service's own bucket; snapshots are never read from under it. */
export const LOG_KEY_PREFIX = 'logs/';

/**
 * A build's log, the one module touching its Redis entries and its object: log chunks go to the build's event
 * stream (live readers on every API pod), the object in S3 holds the whole log (rewritten while the build runs,
 * complete once it ends). Writes carry the attempt's fencing token so a frozen attempt that comes back writes
 * nothing.
 */
export class LogStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly keys: RedisKeys,
    private readonly objects: ObjectStore,
  ) {}

  /** Object key of a build's log in the log bucket. */
  static objectKey(buildId: string): string {
    return `${LOG_KEY_PREFIX}${buildId}.log`;
  }

  /** Creates the empty object, so a presigned URL handed out before the first upload never answers 404. */
  async create(buildId: string): Promise<void> {
    await this.objects.put(LogStore.objectKey(buildId), '');
  }

  /**
   * Appends text (starting at byte `offset` of the log) for the attempt holding `token`, trimming entries older
   * than `trimBelow` (see lua/append-log-3.lua). Returns the entry's id, or undefined when that attempt is stale or the build has
   * ended.
   */
  async append(buildId: string, text: string, token: string, offset: number, trimBelow = ''): Promise<string | undefined> {
    const res = await runScript(this.redis, 'append-log', [this.keys.build(buildId), this.keys.events(buildId), this.keys.eventsNotify(buildId)], [token, text, offset, trimBelow]);
    return typeof res === 'string' ? res : undefined;
  }

  /**
   * Replaces the object with the whole log so far; false (and nothing written) when the attempt holding `token` may
   * no longer write it. The check and the PUT are two steps: a writer frozen in between can still land one stale
   * PUT, which is as far as a store without conditional writes allows.
   */
  async rewrite(buildId: string, body: Buffer, token = ''): Promise<boolean> {
    if ((await runScript(this.redis, 'may-rewrite-log', [this.keys.build(buildId)], [token])) !== 1) return false;
    await this.objects.put(LogStore.objectKey(buildId), body);
    return true;
  }

  /**
   * The whole log so far: the head from the object, the tail from the stream (Redis holds only a tail). A head the
   * object does not hold (the store was down while the attempt that wrote it died) becomes one line saying so.
   */
  async readAll(buildId: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    let first: number | undefined;
    let after = '-';
    for (;;) {
      const rows = await this.redis.xrange(this.keys.events(buildId), after, '+', 'COUNT', 1000);
      for (const [id, fields] of rows) {
        const f = streamFields(fields);
        if (f.l !== undefined) {
          first ??= f.o === undefined ? 0 : Number(f.o);
          parts.push(Buffer.from(f.l));
        }
        after = `(${id}`;
      }
      if (rows.length < 1000) break;
    }
    if (first === undefined) return this.objectBytes(LogStore.objectKey(buildId)).catch(() => Buffer.alloc(0));
    if (first === 0) return Buffer.concat(parts);
    const head = await this.objectRange(LogStore.objectKey(buildId), 0, first);
    return Buffer.concat([head.bytes, ...(head.complete ? [] : [missingLine(first - head.bytes.length)]), ...parts]);
  }

  /**
   * Bytes [from, to) of the log object, waiting up to `waitMs` for it to grow that far (the running build's next
   * upload). `complete` is false when it did not: the caller says so.
   */
  async objectRange(logKey: string, from: number, to: number, waitMs = 0): Promise<{ bytes: Buffer; complete: boolean }> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const got = await this.objects.getRange(logKey, from, to).catch(() => ({ bytes: Buffer.alloc(0), total: 0 }));
      const complete = got.bytes.length >= to - from;
      if (complete || Date.now() >= deadline) return { bytes: got.bytes, complete };
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** Bytes [from, to) of the log object as it is now; rejects when the store cannot read it (no such object). */
  async objectPage(logKey: string, from: number, to: number): Promise<Buffer> {
    return (await this.objects.getRange(logKey, from, to)).bytes;
  }

  private async objectBytes(logKey: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of (await this.objects.getStream(logKey)) as AsyncIterable<Buffer>) parts.push(c);
    return Buffer.concat(parts);
  }

  /**
   * Drops the log's entries from Redis (allowed even when Redis is out of memory): for a build whose log Redis
   * refused, so it can still end. The object holds the whole log by then.
   */
  async dropStreamLog(buildId: string): Promise<void> {
    await this.redis.xtrim(this.keys.events(buildId), 'MAXLEN', 0);
  }

  /** The object's body (the complete log of a finished build). */
  openObject(logKey: string): Promise<Readable> {
    return this.objects.getStream(logKey);
  }

  /** A GET URL for the log object anyone holding it can use until it expires. */
  presign(logKey: string, ttlMs: number): Promise<string> {
    return this.objects.presignGet(logKey, ttlMs);
  }
}

/** Says that part of a log is gone, in place of those bytes. */
export function missingLine(bytes: number): Buffer {
  return Buffer.from(`[imgbuilder] ${bytes} bytes of this log are missing: they were kept only in the object store, which did not have them\n`);
}
