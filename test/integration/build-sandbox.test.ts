import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuildStatus, type ImageBuilderClient } from '@imgbuilder/proto';
import { build, connect, logs } from '../support/client.js';
import { applyEgressPolicy, bridgeGateway } from '../../testkit/egress.js';
import { GitServer } from '../../testkit/git-server.js';
import { httpGet } from '../support/http.js';
import { NetnsHost } from '../support/netns-host.js';
import { BASE_IMAGE, dockerfile, gitSource } from '../../testkit/requests.js';
import { freePort, localEnv, ROOT, ServiceProcess, startStack, type Stack } from '../../testkit/stack.js';
import { buildIdOf, textOf, watchBuild, watchLogs } from '../support/streams.js';
import Docker from 'dockerode';
import { pack } from 'tar-stream';

const TOKEN = `egress-token-${randomBytes(4).toString('hex')}`;
const METADATA = '169.254.169.254';

let git: GitServer;
beforeAll(async () => {
  git = await GitServer.start();
});
afterAll(() => git?.stop());

/** An HTTP endpoint answering TOKEN; `host` 0.0.0.0 listens on every address of this machine. */
async function endpoint(host: string): Promise<{ server: Server; port: number }> {
  const server = createServer((_q, r) => r.end(TOKEN));
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return { server, port: (server.address() as { port: number }).port };
}

/** A RUN step that tries each `name=host:port` and prints whether it got TOKEN back. */
function probeStep(targets: Record<string, string>): string {
  return Object.entries(targets)
    .map(([name, hp]) => `if wget -T 3 -q -O - http://${hp}/ 2>/dev/null | grep -q ${TOKEN}; then echo "egress reached ${name}"; else echo "egress blocked ${name}"; fi`)
    .join('; ');
}

/** One of this machine's own addresses that is neither loopback nor the bridge gateway. */
function otherHostAddress(gateway: string): string | undefined {
  for (const [name, list] of Object.entries(networkInterfaces())) {
    if (name.startsWith('veth') || name.startsWith('ibt')) continue;
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal && a.address !== gateway) return a.address;
  }
  return undefined;
}

describe('egress policy for build steps', () => {
  let stack: Stack;
  let client: ImageBuilderClient;
  let ns: NetnsHost;
  const servers: Server[] = [];
  const gateway = bridgeGateway();

  beforeAll(async () => {
    [stack, ns] = await Promise.all([startStack({ apis: 1, workers: 1 }), NetnsHost.start({ extraAddresses: [METADATA], token: TOKEN })]);
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    for (const s of servers) s.close();
    ns?.stop();
    await applyEgressPolicy();
    await stack?.stop();
  });

  it('a RUN step reaches only the allow-listed address: not the bridge gateway, a host port, a private or a metadata address', async () => {
    const blockedGw = await endpoint(gateway);
    const allowedGw = await endpoint(gateway);
    const anyAddr = await endpoint('0.0.0.0');
    servers.push(blockedGw.server, allowedGw.server, anyAddr.server);
    // The machine itself reaches every one of them: what a build step cannot reach is the policy's doing.
    for (const url of [`http://${gateway}:${blockedGw.port}/`, `http://${ns.address}/`, `http://${METADATA}/`]) expect((await httpGet(url)).body).toBe(TOKEN);

    await applyEgressPolicy([`${gateway}:${allowedGw.port}`]);
    const targets: Record<string, string> = {
      allowed: `${gateway}:${allowedGw.port}`,
      gateway: `${gateway}:${blockedGw.port}`,
      'gateway-any': `${gateway}:${anyAddr.port}`,
      private: `${ns.address}:80`,
      metadata: `${METADATA}:80`,
    };
    const other = otherHostAddress(gateway);
    if (other) targets['host-address'] = `${other}:${anyAddr.port}`;
    git.commit('egress', { Dockerfile: dockerfile(probeStep(targets)) });
    const msgs = await build(client, { source: gitSource(git.url('egress')) });
    expect(msgs.at(-1)?.status).toBe(BuildStatus.done_success);
    const log = await logs(client, { buildId: buildIdOf(msgs)! });
    expect(log).toContain('egress reached allowed');
    for (const name of Object.keys(targets).filter((n) => n !== 'allowed')) expect(log).toContain(`egress blocked ${name}`);
  });
});

describe('the worker proves the egress policy and its limits at start', () => {
  let stack: Stack;
  let dir: string;
  beforeAll(async () => {
    stack = await startStack({ apis: 1, workers: 0 });
    dir = mkdtempSync(join(tmpdir(), 'imgbuilder-fake-cgroups-'));
  });
  afterAll(async () => {
    await applyEgressPolicy();
    await stack?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses to become ready when a build step can reach its host, and starts with a warning when the check is off', async () => {
    // An operator's too-broad exception lets build steps reach the engine's host again.
    await applyEgressPolicy([`${bridgeGateway()}/32`]);
    const addr = `127.0.0.1:${await freePort()}`;
    const refusing = await stack.startWorker({ IMGBUILDER_METRICS_ADDR: addr }, /worker not ready, taking no builds/);
    const line = await refusing.waitForLine(/worker not ready/);
    expect(line).toContain('egress policy for build steps is not installed');
    expect(await httpGet(`http://${addr}/readyz`)).toMatchObject({ status: 503 });
    expect(refusing.lines.some((l) => l.includes('imgbuilder worker started'))).toBe(false);

    const unchecked = await stack.startWorker({ IMGBUILDER_BUILD_EGRESS_CHECK: 'off' });
    expect(await unchecked.waitForLine(/IMGBUILDER_BUILD_EGRESS_CHECK=off/)).toContain('"level":40');

    await applyEgressPolicy();
    const checked = await stack.startWorker();
    expect(await checked.waitForLine(/egress check passed/)).toBeTruthy();
  });

  it('takes no builds where it cannot enforce the build limits, unless IMGBUILDER_BUILD_LIMITS=off', async () => {
    await Promise.all(stack.workers.map((w) => w.kill()));
    const addr = `127.0.0.1:${await freePort()}`;
    const missing = join(dir, 'no-such-cgroup-root');
    const [refusing, unlimited] = await Promise.all([
      stack.startWorker({ IMGBUILDER_METRICS_ADDR: addr, IMGBUILDER_BUILD_CGROUP_ROOT: missing }, /worker not ready, taking no builds/),
      stack.startWorker({ IMGBUILDER_BUILD_CGROUP_ROOT: missing, IMGBUILDER_BUILD_LIMITS: 'off' }, /IMGBUILDER_BUILD_LIMITS=off/),
    ]);
    expect(await refusing.waitForLine(/worker not ready/)).toContain(`build limits cannot be enforced: the engine's cgroup filesystem is not writable at ${missing}`);
    const ready = await httpGet(`http://${addr}/readyz`);
    expect(ready.status).toBe(503);
    expect(ready.body).toContain('build limits cannot be enforced');
    expect(refusing.lines.some((l) => l.includes('imgbuilder worker started'))).toBe(false);
    expect(await unlimited.waitForLine(/IMGBUILDER_BUILD_LIMITS=off/)).toContain('"level":40');
    await unlimited.kill();
  });

  it('fails a build whose BuildKit step cannot be moved into the build\'s cgroup, naming the reason', async () => {
    // A cgroup root where the engine's step cgroups are real (read through symlinks) but the build's are plain
    // directories: writing a pid there takes no effect, so the step never leaves the engine's cgroup.
    for (const c of ['memory', 'cpu', 'pids']) {
      mkdirSync(join(dir, 'fake', c), { recursive: true });
      symlinkSync(`/sys/fs/cgroup/${c}/docker`, join(dir, 'fake', c, 'docker'));
    }
    // The egress check has nothing to do with this: skipped to save its probe containers' time.
    await stack.startWorker({ IMGBUILDER_BUILD_CGROUP_ROOT: join(dir, 'fake'), IMGBUILDER_BUILD_EGRESS_CHECK: 'off' });
    const client = connect(stack.apiAddrs[0]);
    try {
      git.commit('limits-unadoptable', { Dockerfile: dockerfile('sleep 8') });
      const msgs = await build(client, { source: gitSource(git.url('limits-unadoptable')) });
      expect(msgs.at(-1)?.status).toBe(BuildStatus.done_failure);
      expect(msgs.at(-1)?.message).toMatch(/a BuildKit step \(\w+\) could not be moved into the build's cgroup, so its limits could not be enforced: its processes were still in \/docker\/buildkit\/\w+ after 3 s/);
    } finally {
      client.close();
    }
  });
});

describe('an engine the worker does not share a network with', () => {
  let stack: Stack;
  let engine: ChildProcess | undefined;
  let dir: string;
  beforeAll(async () => {
    stack = await startStack({ apis: 1, workers: 0 });
    // A second dockerd in a network namespace of its own (it must not touch the shared engine's docker0), with no
    // egress policy: the worker's port is out of its reach either way, so only a probe inside that engine tells.
    dir = mkdtempSync(join(tmpdir(), 'imgbuilder-netns-engine-'));
    engine = spawn('unshare', ['-n', '/bin/sh', '-c', 'ip link set lo up && exec dockerd "$@"', 'sh', `--host=unix://${dir}/docker.sock`, `--data-root=${dir}/data`, `--exec-root=${dir}/exec`, `--pidfile=${dir}/docker.pid`, '--storage-driver=vfs'], { stdio: 'ignore' });
    const deadline = Date.now() + 60_000;
    while (spawnSync('docker', ['-H', `unix://${dir}/docker.sock`, 'info'], { stdio: 'ignore', timeout: 10_000 }).status !== 0) {
      if (Date.now() > deadline || engine.exitCode !== null) throw new Error('the namespaced dockerd did not start');
      await new Promise((r) => setTimeout(r, 250));
    }
  });
  afterAll(async () => {
    await stack?.stop();
    if (engine && engine.exitCode === null) {
      engine.kill('SIGTERM');
      await new Promise((r) => engine!.once('exit', r));
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('is refused while its bridge lets one container reach another, and accepted once the policy is installed there', async () => {
    const env = { DOCKER_HOST: `unix://${dir}/docker.sock` };
    const refusing = await stack.startWorker(env, /worker not ready, taking no builds/);
    expect(await refusing.waitForLine(/worker not ready/)).toContain(':7777');
    await refusing.kill();
    const policy = spawnSync('nsenter', ['-t', String(engine!.pid), '-n', 'sh', join(ROOT, 'infra/engine/egress-policy.sh'), 'docker0'], { encoding: 'utf8', timeout: 30_000 });
    expect(policy.status, policy.stderr).toBe(0);
    const checked = await stack.startWorker(env);
    expect(await checked.waitForLine(/egress check passed/)).toBeTruthy();
  });
});

/**
 * The Kubernetes sidecar layout: the worker in a mount and PID namespace of its own, where neither the engine's
 * processes, nor its cgroup filesystem, nor its data directory (BuildKit's executor directory) can be seen, and the
 * limits agent in the engine's namespaces (here the host's, where the shared engine runs), reached over a Unix socket
 * as through a volume both containers mount. The worker reaches the engine's API as before.
 */
describe('resource limits per build, worker beside the engine (sidecar layout)', () => {
  let stack: Stack;
  let client: ImageBuilderClient;
  let agent: ServiceProcess;
  let dir: string;
  let socket: string;
  let metricsAddr: string;
  const startAgent = () => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'apps/worker/src/limits-agent-main.ts')], { cwd: ROOT, env: { PATH: process.env.PATH, ...localEnv(), IMGBUILDER_LIMITS_AGENT: socket }, stdio: ['ignore', 'pipe', 'pipe'] });
    agent = new ServiceProcess('limits-agent', child, join(dir, 'agent.log'));
  };
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'imgbuilder-limits-agent-'));
    socket = join(dir, 'agent.sock');
    metricsAddr = `127.0.0.1:${await freePort()}`;
    startAgent();
    [stack] = await Promise.all([
      startStack({
        apis: 1,
        workers: 0,
        env: { IMGBUILDER_BUILD_MEMORY: '64MiB', IMGBUILDER_BUILD_PIDS: '64', IMGBUILDER_BUILD_DISK: '64MiB', IMGBUILDER_BUILD_CPUS: '1', IMGBUILDER_WORKER_CONCURRENCY: '4' },
      }),
      agent.waitForLine(/limits agent listening/),
    ]);
    const hideEngineHost = 'mount -t tmpfs none /var/lib/docker && mount -t tmpfs none /sys/fs/cgroup && exec "$@"';
    await stack.startWorker({ IMGBUILDER_LIMITS_AGENT: socket, IMGBUILDER_METRICS_ADDR: metricsAddr }, undefined, ['unshare', '--mount', '--pid', '--fork', '--kill-child', '--mount-proc', '/bin/sh', '-c', hideEngineHost, 'sh']);
    client = connect(stack.apiAddrs[0]);
  });
  afterAll(async () => {
    client?.close();
    await stack?.stop();
    await agent?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const docker = (...args: string[]) => execFileSync('docker', args, { env: { ...process.env, DOCKER_HOST: stack.env.DOCKER_HOST }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

  it('memory, fork and disk bombs each end done_failure naming their limit, while a plain build beside them succeeds', async () => {
    const sources = {
      memory: dockerfile('dd if=/dev/zero of=/dev/null bs=300M count=1'),
      fork: dockerfile('i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); done; wait'),
      disk: dockerfile('dd if=/dev/zero of=/fill bs=1M count=160 && sleep 60'),
      // BuildKit steps start in a cgroup of the engine's and are moved into the build's as they start: wait for it, bounded.
      plain: dockerfile(
        'for i in $(seq 1 100); do grep -q memory:/imgbuilder/ /proc/self/cgroup && grep -q pids:/imgbuilder/ /proc/self/cgroup && break; sleep 0.05; done; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; cat /proc/self/cgroup',
        'echo plain-build-done',
      ),
    };
    for (const [name, df] of Object.entries(sources)) git.commit(`limits-${name}`, { Dockerfile: df });
    const [memory, fork, disk, plain] = await Promise.all(Object.keys(sources).map((name) => build(client, { source: gitSource(git.url(`limits-${name}`)) })));

    expect(memory.at(-1)).toMatchObject({ status: BuildStatus.done_failure });
    expect(memory.at(-1)?.message).toContain('build exceeded its memory limit (IMGBUILDER_BUILD_MEMORY=64MiB)');
    expect(fork.at(-1)?.status).toBe(BuildStatus.done_failure);
    expect(fork.at(-1)?.message).toContain('build exceeded its process limit (IMGBUILDER_BUILD_PIDS=64)');
    expect(disk.at(-1)?.status).toBe(BuildStatus.done_failure);
    expect(disk.at(-1)?.message).toContain('build exceeded its disk limit (IMGBUILDER_BUILD_DISK=64MiB)');

    expect(plain.at(-1)?.status).toBe(BuildStatus.done_success);
    const plainId = buildIdOf(plain)!;
    const plainLog = await logs(client, { buildId: plainId });
    expect(plainLog).toContain('plain-build-done');
    // The step runs below the build's own cgroup (the memory and pids controllers included), and its memory limit is
    // the build's. A BuildKit step is moved there after it starts, so the cgroup file system mounted into it still
    // shows its first cgroup's (unlimited) value: there the memory bomb above is what shows the limit.
    expect(plainLog).toMatch(new RegExp(`memory:/imgbuilder/${plainId}/`));
    expect(plainLog).toMatch(new RegExp(`pids:/imgbuilder/${plainId}/`));
    if (/^Step 1\//m.test(plainLog)) expect(plainLog).toContain(String(64 * 1024 * 1024));

    // What the bombs wrote is gone: no image of the disk bomb, no cgroup of any build left behind.
    expect(() => docker('image', 'inspect', disk[0].baseRef)).toThrow();
    for (const msgs of [memory, fork, disk, plain]) {
      for (const c of ['memory', 'pids', 'cpu']) expect(existsSync(`/sys/fs/cgroup/${c}/imgbuilder/${buildIdOf(msgs)}`)).toBe(false);
    }

    // The worker carries on: the next build on it succeeds.
    git.commit('limits-after', { Dockerfile: dockerfile('echo after-the-bombs') });
    const after = await build(client, { source: gitSource(git.url('limits-after')) });
    expect(after.at(-1)?.status).toBe(BuildStatus.done_success);
    expect(stack.workers[0].child.exitCode).toBeNull();
  });

  it('a BuildKit process carrying no build\'s marker fails the builds running beside it', async () => {
    git.commit('limits-beside-unmarked', { Dockerfile: dockerfile('echo step-started && sleep 30') });
    const running = watchBuild(client, { source: gitSource(git.url('limits-beside-unmarked')) });
    await running.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const log = watchLogs(client, { buildId: buildIdOf(running.messages)! });
    await log.until((m) => textOf(m).includes('step-started'), 'the step to start');
    // Another client of the engine: a BuildKit build posted by hand, without the marker the worker gives its builds.
    const tar = pack();
    tar.entry({ name: 'Dockerfile' }, `FROM ${BASE_IMAGE}\nRUN echo unmarked-${Date.now()} && sleep 1\n`);
    tar.finalize();
    const engine = new Docker({ socketPath: stack.env.DOCKER_HOST.replace(/^unix:\/\//, '') });
    const stream = await engine.buildImage(tar as unknown as NodeJS.ReadableStream, { version: '2' } as object);
    await new Promise((resolve) => engine.modem.followProgress(stream, resolve));
    const { messages } = await running.ended;
    log.cancel();
    expect(messages.at(-1)?.status).toBe(BuildStatus.done_failure);
    expect(messages.at(-1)?.message).toContain('a BuildKit process without any build\'s marker');
    expect(messages.at(-1)?.message).toContain('could not be held to any build\'s limits');
  });

  it('fails the running build and turns unready when the limits agent goes away, and takes builds again once it is back', async () => {
    git.commit('limits-agent-lost', { Dockerfile: dockerfile('echo step-started && sleep 30') });
    const running = watchBuild(client, { source: gitSource(git.url('limits-agent-lost')) });
    await running.until((m) => Boolean(buildIdOf(m)), 'the build id');
    const log = watchLogs(client, { buildId: buildIdOf(running.messages)! });
    await log.until((m) => textOf(m).includes('step-started'), 'the step to start');
    log.cancel();
    await agent.kill('SIGKILL');
    const { messages } = await running.ended;
    expect(messages.at(-1)?.status).toBe(BuildStatus.done_failure);
    expect(messages.at(-1)?.message).toContain('build limits could not be enforced: the limits agent closed its stream of BuildKit executions');
    const unready = await httpGet(`http://${metricsAddr}/readyz`);
    expect(unready.status).toBe(503);
    expect(unready.body).toContain('limits agent');
    startAgent();
    await stack.workers[0].waitForLine(/the limits agent is back/);
    expect((await httpGet(`http://${metricsAddr}/readyz`)).status).toBe(200);
  });
});

