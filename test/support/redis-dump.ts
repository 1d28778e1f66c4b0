import { Redis } from 'ioredis';

/**
 * Every key of a stack's Redis namespace (`{<namespace>}*`) with its value, as one text to search for secrets:
 * build records, event streams, BullMQ's job hashes (job data included) and everything else.
 */
export async function dumpNamespace(redisUrl: string, namespace: string): Promise<string> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await redis.connect();
  try {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `{${namespace}}*`, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    const parts: string[] = [];
    for (const key of keys) {
      const type = await redis.type(key);
      let value: unknown;
      if (type === 'string') value = await redis.get(key);
      else if (type === 'hash') value = await redis.hgetall(key);
      else if (type === 'list') value = await redis.lrange(key, 0, -1);
      else if (type === 'set') value = await redis.smembers(key);
      else if (type === 'zset') value = await redis.zrange(key, 0, -1, 'WITHSCORES');
      else if (type === 'stream') value = await redis.xrange(key, '-', '+');
      parts.push(`${key} ${type} ${JSON.stringify(value)}`);
    }
    return parts.join('\n');
  } finally {
    redis.disconnect();
  }
}
