import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CloneTargetMode, type GitInitializer } from '@imgbuilder/proto';
import { GitRemoteResolver } from '../../apps/api/src/plan/git-remote-resolver.js';
import { GitServer } from '../../testkit/git-server.js';
import { allowTestServers } from '../../testkit/fetch-allow.js';
import { manualClock, within } from '../support/clock.js';

// The ls-remote cache against a real `git daemon` (a child process), behind a proxy that counts its connections.
allowTestServers();

/**
 * A TCP proxy in front of the git daemon: counts connections (one per ls-remote) and, while closed, holds them, so a
 * test can keep an ls-remote in flight for as long as it needs.
 */
class GitProxy {
  connections = 0;
  private gate = Promise.resolve();
  private openGate = () => undefined as void;
  private readonly sockets = new Set<Socket>();
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<GitProxy> {
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const proxy = new GitProxy(server, (server.address() as { port: number }).port);
    server.on('connection', (client) => {
      proxy.connections++;
      proxy.sockets.add(client);
      server.emit('counted');
      void proxy.gate.then(() => {
        const upstream = connect(targetPort, '127.0.0.1');
        proxy.sockets.add(upstream);
        for (const s of [client, upstream]) s.on('error', () => undefined);
        client.pipe(upstream).pipe(client);
      });
    });
    return proxy;
  }

  close(): void {
    this.gate = new Promise((resolve) => (this.openGate = resolve));
  }

  open(): void {
    this.openGate();
    this.gate = Promise.resolve();
  }

  /** Resolves once `n` connections have arrived (bounded by the caller). */
  async connected(n: number): Promise<void> {
    while (this.connections < n) await once(this.server, 'counted');
  }

  stop(): void {
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }
}

describe('GitRemoteResolver (the ls-remote cache)', () => {
  let git: GitServer;
  let proxy: GitProxy;

  beforeAll(async () => {
    git = await GitServer.start();
    proxy = await GitProxy.start(git.port);
  });

  afterAll(() => {
    proxy?.stop();
    git?.stop();
  });

  const branch = (repo: string, name = 'main'): GitInitializer =>
    ({ remoteUri: `git://127.0.0.1:${proxy.port}/${repo}`, targetMode: CloneTargetMode.REMOTE_BRANCH, cloneTaget: name, config: undefined }) as unknown as GitInitializer;

  it('two concurrent lookups of one branch run one ls-remote', async () => {
    const first = git.commit('inflight', { a: '1' });
    const resolver = new GitRemoteResolver({ allowLocal: false, now: manualClock().now });
    proxy.close();
    const before = proxy.connections;
    const asks = [resolver.resolve(branch('inflight')), resolver.resolve(branch('inflight'))];
    await within(proxy.connected(before + 1));
    proxy.open();
    expect(await within(Promise.all(asks))).toEqual([first, first]);
    expect(proxy.connections).toBe(before + 1);
  });

  it('reuses an answer until its ttl ends, then asks the remote again', async () => {
    const first = git.commit('ttl', { a: '1' });
    const clock = manualClock();
    const resolver = new GitRemoteResolver({ allowLocal: false, cacheMs: 5_000, now: clock.now });
    const before = proxy.connections;
    expect(await within(resolver.resolve(branch('ttl')))).toBe(first);
    const second = git.commit('ttl', { a: '2' });
    clock.advance(4_999);
    expect(await within(resolver.resolve(branch('ttl')))).toBe(first);
    expect(proxy.connections).toBe(before + 1);
    clock.advance(2);
    expect(await within(resolver.resolve(branch('ttl')))).toBe(second);
    expect(proxy.connections).toBe(before + 2);
  });

  it('with IMGBUILDER_LS_REMOTE_CACHE=0 reuses no answer: a push is seen by the very next lookup', async () => {
    const first = git.commit('nocache', { a: '1' });
    const resolver = new GitRemoteResolver({ allowLocal: false, cacheMs: 0, now: manualClock().now });
    const before = proxy.connections;
    expect(await within(resolver.resolve(branch('nocache')))).toBe(first);
    const second = git.commit('nocache', { a: '2' });
    expect(await within(resolver.resolve(branch('nocache')))).toBe(second);
    expect(proxy.connections).toBe(before + 2);
  });

  it('keys by credentials: another caller’s answer is not reused', async () => {
    const commit = git.commit('creds', { a: '1' });
    const resolver = new GitRemoteResolver({ allowLocal: false, now: manualClock().now });
    const before = proxy.connections;
    const withUser = { ...branch('creds'), config: { authentication: 1, authUser: 'u', authPassword: 'p', customConfig: {} } } as unknown as GitInitializer;
    expect(await within(resolver.resolve(branch('creds')))).toBe(commit);
    expect(await within(resolver.resolve(withUser))).toBe(commit);
    expect(proxy.connections).toBe(before + 2);
  });

  it('does not remember a failure: the next lookup asks again', async () => {
    git.commit('late', { a: '1' });
    const resolver = new GitRemoteResolver({ allowLocal: false, now: manualClock().now });
    const before = proxy.connections;
    // Asserts the message only: the error's class and code belong to the errors refactor.
    await expect(within(resolver.resolve(branch('late', 'feature')))).rejects.toThrow(/no branch or tag "feature"/);
    const made = git.commit('late', { b: '1' }, 'feature');
    expect(await within(resolver.resolve(branch('late', 'feature')))).toBe(made);
    expect(proxy.connections).toBe(before + 2);
  });
});
