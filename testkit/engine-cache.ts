import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

// `docker system df -v` lists every cache record of the engine: on a long-used engine that passes Node's 1 MiB default.
const MAX_OUTPUT = 256 * 1024 * 1024;

const execFileP = promisify(execFile);

/**
 * One docker CLI call. Asynchronous on purpose: on a loaded engine a disk-usage query takes seconds, and a caller
 * sharing its process with running builds (the bench's other scenarios) must keep reading their streams meanwhile.
 */
const docker = async (dockerHost: string, args: string[]) => (await execFileP('docker', args, { env: { ...process.env, DOCKER_HOST: dockerHost }, encoding: 'utf8', maxBuffer: MAX_OUTPUT })).stdout;

/**
 * The engine's BuildKit cache records. The engine runs one disk-usage query at a time and refuses others meanwhile
 * (tests and benchmarks on one engine ask side by side): a refused query is asked again, bounded.
 */
async function buildCache(dockerHost: string): Promise<{ ID: string; Description: string }[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return JSON.parse(await docker(dockerHost, ['system', 'df', '-v', '--format', '{{json .BuildCache}}'])) as { ID: string; Description: string }[];
    } catch (err) {
      if (attempt >= 40 || !String((err as { stderr?: string }).stderr).includes('disk usage operation is already running')) throw err;
      await sleep(250);
    }
  }
}

/**
 * Empties the engine of what builds whose steps contain `marker` left there (their BuildKit cache records) and of
 * the images under `repositoryPrefixes`, as an engine that never ran them would be, without touching what other
 * builds on the shared engine keep (no `docker system prune`). Throws when a record survives.
 */
export async function forgetBuilds(dockerHost: string, marker: string, repositoryPrefixes: string[]): Promise<void> {
  const records = async () => (await buildCache(dockerHost)).filter((r) => r.Description.includes(marker));
  const images = (await docker(dockerHost, ['images', '--format', '{{.Repository}}:{{.Tag}}'])).split('\n').filter((r) => repositoryPrefixes.some((p) => r.startsWith(p)));
  if (images.length) await docker(dockerHost, ['rmi', '-f', ...images]);
  // The engine takes one id per prune; a record goes once no later step's record holds it, and a build that just
  // ended may hold its records for a moment: rounds until none is left, bounded (generously: on a loaded engine one
  // disk-usage query takes seconds).
  let left = await records();
  for (const deadline = Date.now() + 60_000; left.length && Date.now() < deadline; ) {
    for (const r of left.reverse()) await docker(dockerHost, ['builder', 'prune', '-f', '--filter', `id=${r.ID.replace(/\*$/, '')}`]);
    left = await records();
    if (left.length) await sleep(250);
  }
  if (left.length) throw new Error(`build cache records of ${marker} survived the prune: ${left.map((r) => r.ID).join(', ')}`);
}

/** How many BuildKit cache records of the engine mention `marker`. */
export async function cacheRecords(dockerHost: string, marker: string): Promise<number> {
  return (await buildCache(dockerHost)).filter((r) => r.Description.includes(marker)).length;
}
