import type { Readable } from 'node:stream';
import type { ObjectStore } from './object-store.js';
import type { RedisClient } from './redis.js';
import { redisChannels, redisKeys } from './redis-keys.js';

// Appends a log chunk for the attempt holding the fencing token ARGV[1] ('' for an unfenced writer such as the
// reaper). A stale attempt, or any writer after the build ended, writes nothing: 0.
const APPEND = `
local h = redis.call('HMGET', KEYS[1], 'state', 'attempt')
if h[1] == false or h[1] == 'done_success' or h[1] == 'done_failure' then return 0 end
if ARGV[1] ~= '' and (h[2] or '0') ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], '*', 'l', ARGV[2])
redis.call('PUBLISH', KEYS[3], 'l')
return 1
`;

// Whether the attempt holding token ARGV[1] may still write the log object: it holds the current token, and the
// build is live or ended by that very attempt with its upload pending.
const MAY_REWRITE = `
local h = redis.call('HMGET', KEYS[1], 'state', 'attempt', 'logPending')
if h[1] == false then return 0 end
if ARGV[1] ~= '' and (h[2] or '0') ~= ARGV[1] then return 0 end
if (h[1] == 'done_success' or h[1] == 'done_failure') and h[3] ~= '1' then return 0 end
return 1
`;

/**
 * A build's log, the one module touching its Redis entries and its object: log chunks go to the build's event
 * stream (live readers on every API pod), the object in S3 holds the whole log (rewritten while the build runs,
 * complete once it ends). Writes carry the attempt's fencing token so a frozen attempt that comes back writes
 * nothing.
 */
export class LogStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly objects: ObjectStore,
  ) {}

  /** Object key of a build's log in the log bucket. */
  static objectKey(buildId: string): string {
    return `logs/${buildId}.log`;
  }

  /** Creates the empty object, so a presigned URL handed out before the first upload never answers 404. */
  async create(buildId: string): Promise<void> {
    await this.objects.put(LogStore.objectKey(buildId), '');
  }

  /** Appends text for the attempt holding `token`; false when that attempt is stale or the build has ended. */
  async append(buildId: string, text: string, token = ''): Promise<boolean> {
    const res = await this.redis.eval(APPEND, 3, redisKeys.build(buildId), redisKeys.events(buildId), redisChannels.events(buildId), token, text);
    return res === 1;
  }

  /**
   * Replaces the object with the whole log so far; false (and nothing written) when the attempt holding `token` may
   * no longer write it. The check and the PUT are two steps: a writer frozen in between can still land one stale
   * PUT, which is as far as a store without conditional writes allows.
   */
  async rewrite(buildId: string, body: Buffer, token = ''): Promise<boolean> {
    if ((await this.redis.eval(MAY_REWRITE, 1, redisKeys.build(buildId), token)) !== 1) return false;
    await this.objects.put(LogStore.objectKey(buildId), body);
    return true;
  }

  /** Every log chunk still in the build's event stream, in order (an earlier attempt's output, on a restart). */
  async readStream(buildId: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    let after = '-';
    for (;;) {
      const rows = await this.redis.xrange(redisKeys.events(buildId), after, '+', 'COUNT', 1000);
      for (const [id, fields] of rows) {
        for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'l') parts.push(Buffer.from(fields[i + 1]));
        after = `(${id}`;
      }
      if (rows.length < 1000) break;
    }
    return Buffer.concat(parts);
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
