import { Redis, Cluster, type RedisOptions } from 'ioredis';

export type RedisClient = Redis | Cluster;

/**
 * Opens a connection from REDIS_URL. `redis://` / `rediss://` name one server; `redis+cluster://h1:p1,h2:p2`
 * (or `rediss+cluster://`) names seed nodes of a Redis Cluster.
 * `blocking` connections (BullMQ workers) must not give up on a command while Redis is away.
 */
export function createRedis(url: string, opts: { blocking?: boolean; name?: string } = {}): RedisClient {
  const common: RedisOptions = {
    connectionName: opts.name,
    // null: commands wait for a reconnect instead of failing after N retries (BullMQ requires it for workers).
    maxRetriesPerRequest: opts.blocking ? null : 3,
    enableReadyCheck: true,
    retryStrategy: (times) => Math.min(times * 200, 2000),
    reconnectOnError: (err) => err.message.startsWith('READONLY') || err.message.startsWith('LOADING'),
  };
  const m = /^(rediss?)\+cluster:\/\/(?:([^@/]*)@)?([^/?#]+)/.exec(url);
  if (m) {
    const tls = m[1] === 'rediss';
    const [user, pass] = m[2] ? decodeURIComponent(m[2]).split(':') : [];
    const nodes = m[3].split(',').map((hp) => {
      const i = hp.lastIndexOf(':');
      return { host: hp.slice(0, i), port: Number(hp.slice(i + 1)) };
    });
    return new Cluster(nodes, {
      redisOptions: { ...common, username: user || undefined, password: pass || undefined, tls: tls ? {} : undefined },
      clusterRetryStrategy: (times) => Math.min(times * 200, 2000),
      enableOfflineQueue: true,
    });
  }
  return new Redis(url, common);
}

/** Host:port of a REDIS_URL without credentials, for log lines and messages. */
export function describeRedisUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//');
}
