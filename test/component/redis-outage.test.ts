import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis, type RedisClient } from '@imgbuilder/common/redis';
import { isRedisUnavailable } from '@imgbuilder/common/errors';
import { toServiceError } from '../../apps/api/src/grpc/grpc-status.js';
import { RedisServer } from '../../testkit/redis-server.js';
import { freePort } from '../../testkit/stack.js';

// The errors a service's own Redis client raises, from a real private redis-server, told apart: Redis away or not.
let server: RedisServer;
let client: RedisClient;

beforeAll(async () => {
  server = await RedisServer.start();
  client = createRedis(server.url, { name: 'outage-test' });
  client.on('error', () => undefined);
});

afterAll(async () => {
  client?.disconnect();
  await server?.stop();
});

/** The error a command ends with; a command that succeeds fails the test. */
async function errorOf(command: Promise<unknown>): Promise<Error> {
  return command.then(
    (v) => expect.fail(`expected the command to fail, it answered ${JSON.stringify(v)}`),
    (err: Error) => err,
  );
}

describe('isRedisUnavailable: a Redis client error that means Redis is away', () => {
  it('is false for an error Redis answers while it is up', async () => {
    const err = await errorOf(client.call('NO-SUCH-COMMAND'));
    expect(err.message).toMatch(/unknown command/i);
    expect(isRedisUnavailable(err)).toBe(false);
  });

  it('is true for a write to a replica (READONLY, as during a failover)', async () => {
    // A replica of a master that is not there: reads still answer, writes are refused.
    await client.call('REPLICAOF', '127.0.0.1', String(await freePort()));
    const err = await errorOf(client.set('k', 'v'));
    expect(err.message).toMatch(/^READONLY/);
    expect(isRedisUnavailable(err)).toBe(true);
  }, 20_000);

  it('is true once the server is gone, and the API answers it UNAVAILABLE', async () => {
    await server.kill();
    const err = await errorOf(client.get('k'));
    expect(isRedisUnavailable(err)).toBe(true);
    const e = toServiceError(err, pino({ level: 'silent' }), 'Build');
    expect({ code: status[e.code], details: e.details }).toEqual({ code: 'UNAVAILABLE', details: 'the build queue (Redis) is unreachable; retry shortly' });
  }, 20_000);
});
