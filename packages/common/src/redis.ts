import { readFileSync } from 'node:fs';
import { Redis, Cluster, type RedisOptions } from 'ioredis';

export type RedisClient = Redis | Cluster;

/**
 * Opens a connection from REDIS_URL. `redis://` / `rediss://` name one server; `redis+cluster://h1:p1,h2:p2`
 * (or `rediss+cluster://`) names seed nodes of a Redis Cluster.
 * `blocking` connections (BullMQ workers) must not give up on a command while Redis is away.
 */
export function createRedis(url: string, opts: { blocking?: boolean; name?: string; ca?: Buffer } = {}): RedisClient {
  // rediss:// checks the server's certificate against the system CAs, or against `ca` (IMGBUILDER_REDIS_TLS_CA's PEM).
  const tls = opts.ca ? { ca: opts.ca } : {};
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
    const useTls = m[1] === 'rediss';
    const [user, pass] = m[2] ? decodeURIComponent(m[2]).split(':') : [];
    const nodes = m[3].split(',').map((hp) => {
      const i = hp.lastIndexOf(':');
      return { host: hp.slice(0, i), port: Number(hp.slice(i + 1)) };
    });
    return new Cluster(nodes, {
      redisOptions: { ...common, username: user || undefined, password: pass || undefined, tls: useTls ? tls : undefined },
      clusterRetryStrategy: (times) => Math.min(times * 200, 2000),
      enableOfflineQueue: true,
    });
  }
  return new Redis(url, url.startsWith('rediss://') ? { ...common, tls } : common);
}

/** Host:port of a REDIS_URL without credentials, for log lines and messages. */
export function describeRedisUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//');
}

/** How long a connection has been unusable; 0 while it is ready. */
export interface RedisOutage {
  downForMs(): number;
}

/** Watches a connection's state, so callers can give up once Redis has been away too long. */
export function watchOutage(client: RedisClient): RedisOutage {
  let downSince: number | undefined = client.status === 'ready' ? undefined : Date.now();
  const down = () => (downSince ??= Date.now());
  client.on('ready', () => (downSince = undefined));
  client.on('close', down);
  client.on('end', down);
  client.on('reconnecting', down);
  return {
    downForMs() {
      if (client.status === 'ready') downSince = undefined;
      else down();
      return downSince === undefined ? 0 : Date.now() - downSince;
    },
  };
}

/**
 * Opens every connection of a process with the same settings, so none of them can miss the CA of a `rediss://` URL
 * (IMGBUILDER_REDIS_TLS_CA) or any setting added later. The CA file is read once, here, not once per connection.
 */
export function redisConnector(url: string, tlsCa?: string): (name: string, opts?: { blocking?: boolean }) => RedisClient {
  const ca = tlsCa ? readFileSync(tlsCa) : undefined;
  return (name, opts = {}) => createRedis(url, { ...opts, name, ca });
}
