import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildDist } from '../../testkit/dist.js';
import { ROOT, ServiceProcess } from '../../testkit/stack.js';
import { createDocker, DockerEngine } from '../../apps/worker/src/docker-engine.js';
import { checkStepLogs } from '../../apps/worker/src/engine-log-check.js';

/**
 * infra/engine/engine-start.sh, which the worker's engine sidecar and compose's `docker` service run, against a real
 * dockerd: the engine reports started (the marker the startup probe / healthcheck require) only once the egress
 * policy is installed in its network namespace, a policy that fails stops the engine, and SIGTERM stops both.
 * Each engine runs in a network namespace of its own (a second dockerd must not touch the shared one's docker0);
 * its sockets, data and state live in a temporary directory. No traffic is sent anywhere.
 */

const SCRIPT = join(ROOT, 'infra/engine/engine-start.sh');
const dirs: string[] = [];
const engines: ServiceProcess[] = [];

afterAll(async () => {
  await Promise.all(engines.map((e) => e.kill('SIGKILL')));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function startEngine(env: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-engine-start-'));
  dirs.push(dir);
  const sock = `unix://${dir}/docker.sock`;
  const marker = join(dir, 'ready');
  const child = spawn(
    'unshare',
    ['-n', '/bin/sh', '-c', 'ip link set lo up && exec /bin/sh "$0" "$@"', SCRIPT, 'dockerd', `--host=${sock}`, `--data-root=${dir}/data`, `--exec-root=${dir}/exec`, `--pidfile=${dir}/docker.pid`, '--storage-driver=vfs'],
    { env: { PATH: process.env.PATH, DOCKER_HOST: sock, IMGBUILDER_ENGINE_READY_MARKER: marker, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const engine = new ServiceProcess('engine-start', child, join(dir, 'engine.log'));
  engines.push(engine);
  // unshare and both shells exec: the child's pid is engine-start.sh's, in the engine's network namespace.
  const inNetns = (...cmd: string[]) => spawnSync('nsenter', ['-t', String(child.pid), '-n', ...cmd], { encoding: 'utf8', timeout: 10_000 }).stdout;
  const dockerdPid = () => Number(readFileSync(join(dir, 'docker.pid'), 'utf8'));
  return { engine, dir, marker, inNetns, dockerdPid };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('engine-start.sh with a real dockerd', () => {
  it('writes the ready marker only with the egress policy in place, allow list included, and the limits agent listening; SIGTERM stops the engine', async () => {
    buildDist();
    const socket = join(mkdtempSync(join(tmpdir(), 'imgbuilder-engine-agent-')), 'agent.sock');
    dirs.push(dirname(socket));
    // 203.0.113.0/24 is TEST-NET-3: a documentation address, only written into a rule.
    const { engine, marker, inNetns, dockerdPid } = startEngine({ IMGBUILDER_BUILD_EGRESS_ALLOW: '203.0.113.7:443', IMGBUILDER_LIMITS_AGENT: socket, IMGBUILDER_APP_DIR: ROOT });
    await engine.waitForLine(/^engine-start: engine up/, 90_000);
    expect(existsSync(marker)).toBe(true);
    // The agent (the shipped bundle) answers on its socket, in the engine's namespaces, before the engine counts as up.
    expect(engine.lines.findIndex((l) => l.includes('limits agent listening'))).toBeLessThan(engine.lines.findIndex((l) => l.startsWith('engine-start: engine up')));
    expect(statSync(socket).isSocket()).toBe(true);
    const policyLine = engine.lines.findIndex((l) => l.startsWith('egress-policy: installed on docker0'));
    expect(policyLine, engine.lines.join('\n')).toBeGreaterThanOrEqual(0);
    expect(policyLine).toBeLessThan(engine.lines.findIndex((l) => l.startsWith('engine-start: engine up')));
    // The rules are in the engine's own network namespace (in a pod, the pod's), where its docker0 lives.
    expect(inNetns('iptables', '-w', '-S', 'DOCKER-USER')).toContain('-A DOCKER-USER -i docker0 -j IMGBUILDER-EGRESS');
    expect(inNetns('iptables', '-w', '-S', 'INPUT')).toContain('-A INPUT -i docker0 -j IMGBUILDER-INPUT');
    const egress = inNetns('iptables', '-w', '-S', 'IMGBUILDER-EGRESS');
    expect(egress).toContain('-A IMGBUILDER-EGRESS -d 203.0.113.7/32 -p tcp -m tcp --dport 443 -j RETURN');
    expect(egress).toContain('-A IMGBUILDER-EGRESS -d 10.0.0.0/8 -p tcp -j REJECT --reject-with tcp-reset');
    expect(egress).toContain('-A IMGBUILDER-EGRESS -d 169.254.0.0/16 -p tcp -j REJECT --reject-with tcp-reset');

    const dockerd = dockerdPid();
    expect(alive(dockerd)).toBe(true);
    // BuildKit's step-log limits raised, so the engine never clips a build's log below IMGBUILDER_LOG_MAX_BYTES.
    const environ = readFileSync(`/proc/${dockerd}/environ`, 'utf8').split('\0');
    expect(environ).toEqual(expect.arrayContaining(['BUILDKIT_STEP_LOG_MAX_SIZE=1073741824', 'BUILDKIT_STEP_LOG_MAX_SPEED=1073741824']));
    // As PID 1 the script would ignore an untrapped SIGTERM: it hands it to the engine and exits with it.
    expect(await engine.kill('SIGTERM')).toBe(0);
    expect(alive(dockerd)).toBe(false);
  });

  it('an engine whose BuildKit still clips step output is found out by the worker\'s start-up probe', async () => {
    // An operator's own, lower limit (the script keeps a value it is given): BuildKit keeps 1 MiB of a step.
    const { engine, dir } = startEngine({ BUILDKIT_STEP_LOG_MAX_SIZE: '1048576' });
    await engine.waitForLine(/^engine-start: engine up/, 90_000);
    const verdict = await checkStepLogs(new DockerEngine(createDocker(`unix://${dir}/docker.sock`), 'the test engine'));
    expect(verdict).toMatchObject({ stepLogs: 'clipped' });
    expect(verdict.received).toBeLessThan(2 * 1024 * 1024);
    expect(await engine.kill('SIGTERM')).toBe(0);
  });

  it('stops the engine and exits non-zero without the marker when the policy cannot be installed', async () => {
    // An allow entry iptables rejects (prefix /99) makes egress-policy.sh fail part-way.
    const { engine, dir, marker } = startEngine({ IMGBUILDER_BUILD_EGRESS_ALLOW: '10.1.0.0/99' });
    expect(await engine.exited).toBe(1);
    expect(engine.lines.join('\n')).toContain('engine-start: installing the egress policy on docker0 failed: stopping the engine');
    expect(existsSync(marker)).toBe(false);
    // The engine is gone: no process runs with this engine's data directory.
    expect(spawnSync('pgrep', ['-f', `data-root=${dir}/data`]).status).toBe(1);
  });
});
