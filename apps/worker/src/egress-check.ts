import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { networkInterfaces } from 'node:os';
import type Docker from 'dockerode';
import { pack } from 'tar-stream';
import { EgressPolicyError } from './errors.js';

/** Where a static busybox usually lives (Debian's busybox-static); the probe image is made from it. */
const BUSYBOX_PATHS = ['/bin/busybox', '/usr/bin/busybox'];
const PROBE_REPOSITORY = 'imgbuilder/egress-probe';
const GREETING = 'imgbuilder-egress-probe';
/** Port the listener container answers on, inside its own network namespace. */
const LISTENER_PORT = 7777;
/** Bound on one probe run: image import, container start, the connection attempts, removal. */
const PROBE_TIMEOUT_MS = 60_000;

export interface EgressVerdict {
  ok: boolean;
  /** The engine could not be reached, so nothing could be checked (and nothing can be built). */
  engineDown?: boolean;
  /** Why the policy does not hold, or why it could not be checked. */
  reason?: string;
  /** The addresses the probe tried. */
  targets: string[];
}

/**
 * Proves that build steps cannot reach the engine's host: a probe container on the engine's default bridge (where
 * RUN steps run) tries to connect to a port this worker listens on, at the bridge gateway and at each of the
 * worker's own addresses. Any connection that gets through means the egress policy is missing.
 */
export async function checkEgress(docker: Docker, opts: EgressProbeOptions): Promise<EgressVerdict> {
  if (!(await docker.ping().then(() => true, () => false))) return { ok: false, engineDown: true, reason: 'the Docker engine is unreachable', targets: [] };
  const seen: string[] = [];
  const server = createServer((sock) => {
    seen.push(sock.remoteAddress ?? '?');
    sock.end(`${GREETING}\n`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '0.0.0.0', () => resolve());
  });
  const port = (server.address() as { port: number }).port;
  const targets = (await probeTargets(docker)).map((t) => `${t}:${port}`);
  let listener: { container: Docker.Container; address?: string } | undefined;
  try {
    const { image, shell } = await probeImage(docker, opts.probeImage);
    const bin = (tool: string) => (shell[0] === '/busybox' ? `/busybox ${tool}` : tool);
    // A second container on the same bridge: reaching it proves the private ranges are open there, wherever this
    // worker runs relative to the engine (another host, another network namespace).
    const started = await startListener(docker, image, [...shell, '-c', `while true; do echo ${GREETING} | ${bin('nc')} -l -p ${LISTENER_PORT}; done`], opts.labels ?? {});
    listener = started;
    // Probing before it listens would pass for the wrong reason: wait until it answers inside its own container.
    await untilListening(started.container, [...shell, '-c', `${bin('nc')} -w 1 127.0.0.1 ${LISTENER_PORT} </dev/null`]);
    if (started.address) targets.push(`${started.address}:${LISTENER_PORT}`);
    const script = `for t in ${targets.join(' ')}; do if ${bin('nc')} -w 2 "\${t%:*}" "\${t##*:}" </dev/null 2>/dev/null | ${bin('grep')} -q ${GREETING}; then echo "reached $t"; fi; done; echo probe-done`;
    const output = await runProbe(docker, image, [...shell, '-c', script], opts.labels ?? {});
    const reached = [...output.matchAll(/^reached (\S+)$/gm)].map((m) => m[1]);
    if (!output.includes('probe-done')) return { ok: false, reason: `the egress probe did not complete (output: ${output.trim().slice(0, 200) || 'none'})`, targets };
    if (reached.length || seen.length) {
      const where = reached.length ? reached : seen.map((a) => `${a} (seen by this worker)`);
      return { ok: false, reason: `a build step reached ${[...new Set(where)].join(', ')}: the egress policy for build steps is not installed on the engine (run infra/engine/egress-policy.sh where the engine runs)`, targets };
    }
    return { ok: true, targets };
  } catch (err) {
    return { ok: false, reason: `the egress probe could not run: ${(err as Error).message}`, targets };
  } finally {
    server.close();
    await listener?.container.remove({ force: true }).catch(() => undefined);
  }
}

export interface EgressProbeOptions {
  probeImage?: string;
  labels?: Record<string, string>;
}

/**
 * The worker's standing answer to "may build steps run on this engine?": proven once, and proven again lazily when
 * the engine was unreachable at the last check (an engine restarted without its rules must not run a build).
 */
export class EgressGate {
  private verified = false;
  private running?: Promise<EgressVerdict>;

  constructor(
    private readonly docker: Docker,
    private readonly opts: EgressProbeOptions,
  ) {}

  get ok(): boolean {
    return this.verified;
  }

  check(): Promise<EgressVerdict> {
    this.running ??= checkEgress(this.docker, this.opts)
      .then((v) => {
        this.verified = v.ok;
        return v;
      })
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  /** Before a build's steps run: passes when verified, or when the engine is down (the build then fails on that). */
  async ensure(): Promise<void> {
    if (this.verified) return;
    const v = await this.check();
    if (!v.ok && !v.engineDown) throw new EgressPolicyError(`this worker does not run build steps: ${v.reason}`);
  }
}

/** The bridge gateway and every non-loopback IPv4 address of this process' host. */
async function probeTargets(docker: Docker): Promise<string[]> {
  const out = new Set<string>();
  const bridge = (await docker
    .getNetwork('bridge')
    .inspect()
    .catch(() => undefined)) as { IPAM?: { Config?: { Gateway?: string; Subnet?: string }[] } } | undefined;
  for (const c of bridge?.IPAM?.Config ?? []) {
    const gw = c.Gateway || firstHost(c.Subnet);
    if (gw && /^\d+(\.\d+){3}$/.test(gw)) out.add(gw);
  }
  // Interfaces that are down (docker0 with no container attached) are not listed here; the gateway is added above.
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) out.add(a.address);
  }
  return [...out];
}

/** The engine's default gateway of a subnet it does not name one for: the subnet's first host address. */
function firstHost(subnet: string | undefined): string | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(subnet ?? '');
  if (!m) return undefined;
  const n = ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
  const bits = Number(m[5]);
  const base = bits === 0 ? 0 : (n & (~0 << (32 - bits))) >>> 0;
  const gw = base + 1;
  return [gw >>> 24, (gw >>> 16) & 255, (gw >>> 8) & 255, gw & 255].join('.');
}

/**
 * The image the worker's probes run (`sh` and busybox's tools) and how to start its shell: the configured one
 * (IMGBUILDER_BUILD_EGRESS_PROBE_IMAGE), else one made here from this host's static busybox.
 */
export async function probeImage(docker: Docker, configured?: string): Promise<{ image: string; shell: string[] }> {
  return configured ? { image: configured, shell: ['sh'] } : { image: await ensureProbeImage(docker), shell: ['/busybox', 'sh'] };
}

/** A FROM-scratch image holding only a static busybox, imported (not pulled: no registry is needed). */
async function ensureProbeImage(docker: Docker): Promise<string> {
  let binary: Buffer | undefined;
  for (const p of BUSYBOX_PATHS) {
    binary = await readFile(p).catch(() => undefined);
    if (binary) break;
  }
  if (!binary) throw new Error(`no static busybox at ${BUSYBOX_PATHS.join(' or ')} (Debian package busybox-static) to make the probe image from; install it or set IMGBUILDER_BUILD_EGRESS_PROBE_IMAGE`);
  const tag = createHash('sha256').update(binary).digest('hex').slice(0, 16);
  const name = `${PROBE_REPOSITORY}:${tag}`;
  const exists = await docker
    .getImage(name)
    .inspect()
    .then(() => true, () => false);
  if (exists) return name;
  const tar = pack();
  tar.entry({ name: 'busybox', mode: 0o755 }, binary);
  tar.finalize();
  const stream = await docker.importImage(tar as unknown as NodeJS.ReadableStream, { repo: PROBE_REPOSITORY, tag });
  await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve())));
  return name;
}

/** A container of the egress check on the engine's default bridge, where build steps run. */
function createProbeContainer(docker: Docker, role: 'probe' | 'listener', image: string, cmd: string[], labels: Record<string, string>): Promise<Docker.Container> {
  return docker.createContainer({
    name: `imgbuilder-egress-${role}-${randomBytes(4).toString('hex')}`,
    Image: image,
    Cmd: cmd,
    Labels: labels,
    HostConfig: { NetworkMode: 'bridge' },
  });
}

/** Starts a container answering GREETING on LISTENER_PORT; its bridge address, once the engine has given it one. */
async function startListener(docker: Docker, image: string, cmd: string[], labels: Record<string, string>): Promise<{ container: Docker.Container; address?: string }> {
  const container = await createProbeContainer(docker, 'listener', image, cmd, labels);
  try {
    await container.start();
    const info = (await container.inspect()) as { NetworkSettings?: { IPAddress?: string } };
    const address = info.NetworkSettings?.IPAddress;
    return { container, address: address && /^\d+(\.\d+){3}$/.test(address) ? address : undefined };
  } catch (err) {
    await container.remove({ force: true }).catch(() => undefined);
    throw err;
  }
}

async function untilListening(container: Docker.Container, cmd: string[]): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const exec = await container.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({ hijack: true, stdin: false });
    const chunks: Buffer[] = [];
    await new Promise<void>((resolve) => {
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => resolve());
      stream.on('error', () => resolve());
    });
    if (demux(Buffer.concat(chunks)).includes(GREETING)) return;
    if (Date.now() > deadline) throw new Error('the probe\'s listener container did not answer within 10 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function runProbe(docker: Docker, image: string, cmd: string[], labels: Record<string, string>): Promise<string> {
  const container = await createProbeContainer(docker, 'probe', image, cmd, labels);
  try {
    await container.start();
    const waited = container.wait();
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`probe container still running after ${PROBE_TIMEOUT_MS / 1000}s`)), PROBE_TIMEOUT_MS).unref());
    await Promise.race([waited, timeout]);
    const logs = (await container.logs({ stdout: true, stderr: true, follow: false })) as Buffer;
    return demux(logs);
  } finally {
    await container.remove({ force: true }).catch(() => undefined);
  }
}

/** The engine's multiplexed log format: 8-byte frame headers before each chunk. */
function demux(buf: Buffer): string {
  let out = '';
  let i = 0;
  while (i + 8 <= buf.length) {
    const len = buf.readUInt32BE(i + 4);
    out += buf.subarray(i + 8, i + 8 + len).toString('utf8');
    i += 8 + len;
  }
  return out;
}
