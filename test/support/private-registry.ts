import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { freePort } from '../../testkit/stack.js';

/**
 * Debian's `docker-registry` on a loopback port with htpasswd (bcrypt) auth and its own storage: a private registry
 * whose images nobody can pull or resolve without credentials.
 */
export class PrivateRegistry {
  private constructor(
    readonly host: string,
    readonly user: string,
    readonly password: string,
    private readonly proc: ChildProcess,
    private readonly dir: string,
  ) {}

  static async start(user: string, password: string): Promise<PrivateRegistry> {
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-private-registry-'));
    mkdirSync(join(dir, 'storage'));
    // -i reads the password from stdin: it never shows up in a process listing.
    const line = execFileSync('htpasswd', ['-Bin', user], { input: password, encoding: 'utf8' });
    writeFileSync(join(dir, 'htpasswd'), line);
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    writeFileSync(
      join(dir, 'config.yml'),
      [
        'version: 0.1',
        'log:',
        '  level: warn',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${join(dir, 'storage')}`,
        'http:',
        `  addr: ${host}`,
        `  secret: ${randomBytes(16).toString('hex')}`,
        'auth:',
        '  htpasswd:',
        '    realm: imgbuilder-test',
        `    path: ${join(dir, 'htpasswd')}`,
        '',
      ].join('\n'),
    );
    // REGISTRY_* variables would override the config file: the child gets PATH only.
    const proc = spawn('/usr/bin/docker-registry', ['serve', join(dir, 'config.yml')], { env: { PATH: process.env.PATH }, stdio: 'ignore' });
    const deadline = Date.now() + 15_000;
    for (;;) {
      const status = await fetch(`http://${host}/v2/`).then(
        (r) => r.status,
        () => 0,
      );
      if (status === 401) break;
      if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`private registry on ${host} did not start (last status ${status})`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return new PrivateRegistry(host, user, password, proc, dir);
  }

  /** base64 of `user:password`, the form BuildRegistryAuth.additional carries. */
  get additional(): string {
    return Buffer.from(`${this.user}:${this.password}`).toString('base64');
  }

  /**
   * Pushes the local image `source` as `<host>/<repository>:<tag>`, then drops that name from the engine, so a
   * build naming it must pull it (and authenticate) instead of using the engine's copy.
   */
  async push(docker: Docker, source: string, repository: string, tag: string): Promise<string> {
    const target = `${this.host}/${repository}`;
    await docker.getImage(source).tag({ repo: target, tag });
    const stream = await docker.getImage(`${target}:${tag}`).push({ tag, authconfig: { username: this.user, password: this.password, serveraddress: this.host } } as object);
    const out = await new Promise<{ error?: string; errorDetail?: { message?: string } }[]>((resolve, reject) =>
      docker.modem.followProgress(stream, (err: Error | null, res: { error?: string }[]) => (err ? reject(err) : resolve(res))),
    );
    const failed = out.find((p) => p.error || p.errorDetail);
    if (failed) throw new Error(`push of ${target}:${tag} failed: ${failed.errorDetail?.message ?? failed.error}`);
    await this.forget(docker, `${target}:${tag}`);
    return `${target}:${tag}`;
  }

  /** Removes a name from the engine (the layers stay), so the next use pulls it again. */
  async forget(docker: Docker, name: string): Promise<void> {
    await docker
      .getImage(name)
      .remove({ noprune: true })
      .catch(() => undefined);
  }

  stop(): void {
    this.proc.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Makes sure the test base image is in the engine (disk hygiene may have pruned it) and returns a dockerode client. */
export async function engineWithBaseImage(dockerHost: string, baseImage: string): Promise<Docker> {
  const docker = new Docker({ socketPath: dockerHost.replace(/^unix:\/\//, '') });
  const present = await docker
    .getImage(baseImage)
    .inspect()
    .then(
      () => true,
      () => false,
    );
  if (!present) {
    const stream = await docker.pull(baseImage, { authconfig: {} } as object);
    await new Promise((resolve, reject) => docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve(undefined))));
  }
  return docker;
}
