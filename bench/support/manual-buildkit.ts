import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import tarFs from 'tar-fs';
import { probeMarker } from '../../apps/worker/src/builder/build-sandbox.js';

/**
 * A BuildKit build by hand: `git clone`, then what `docker buildx build --build-arg BUILDKIT_INLINE_CACHE=1
 * [--cache-from REF]` posts to the engine (a tar context to /build with version=2; the CLI here has no buildx), then
 * `docker push`. Resolves with the wall time in ms.
 */
export async function manualBuildkit(opts: { remote: string; branch: string; tag: string; cacheFrom?: string | string[]; push: boolean; dockerHost: string }): Promise<number> {
  const t0 = Date.now();
  const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-bench-bk-'));
  try {
    execFileSync('git', ['clone', '-q', '--depth', '1', '--branch', opts.branch, opts.remote, join(dir, 'src')]);
    const m = /^unix:\/\/(.+)$/.exec(opts.dockerHost);
    const docker = new Docker(m ? { socketPath: m[1] } : {});
    const stream = await docker.buildImage(tarFs.pack(join(dir, 'src'), { ignore: (n) => n.includes('/.git') }) as unknown as NodeJS.ReadableStream, {
      t: opts.tag,
      version: '2',
      // Marked as no worker's build: the workers of the bench's other scenarios on this engine let it be, where an
      // unmarked BuildKit step would fail every build they run (the build limits fail closed).
      buildargs: { BUILDKIT_INLINE_CACHE: '1', no_proxy: probeMarker('bench-by-hand') },
      ...(opts.cacheFrom?.length ? { cachefrom: JSON.stringify([opts.cacheFrom].flat()) } : {}),
    } as unknown as Docker.ImageBuildOptions);
    const out = await new Promise<{ error?: string }[]>((resolve, reject) => docker.modem.followProgress(stream, (err: Error | null, res: { error?: string }[]) => (err ? reject(err) : resolve(res))));
    const failed = out.find((p) => p.error);
    if (failed) throw new Error(`manual BuildKit build failed: ${failed.error}`);
    if (opts.push) execFileSync('docker', ['push', '-q', opts.tag], { env: { ...process.env, DOCKER_HOST: opts.dockerHost }, stdio: 'ignore' });
    return Date.now() - t0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
