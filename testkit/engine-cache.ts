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
type CacheRecord = { ID: string; Description: string; Parent?: string };

async function buildCache(dockerHost: string): Promise<CacheRecord[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return JSON.parse(await docker(dockerHost, ['system', 'df', '-v', '--format', '{{json .BuildCache}}'])) as CacheRecord[];
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
  // An image whose tag moved on keeps its repository digest (`repo:<none>`): it goes by that digest.
  const images = (await docker(dockerHost, ['images', '--digests', '--format', '{{.Repository}} {{.Tag}} {{.Digest}}']))
    .split('\n')
    .map((l) => l.split(' '))
    .filter(([repo]) => repo && repositoryPrefixes.some((p) => repo.startsWith(p)))
    .map(([repo, tag, digest]) => (tag !== '<none>' ? `${repo}:${tag}` : digest !== '<none>' ? `${repo}@${digest}` : ''))
    .filter(Boolean);
  if (images.length) await docker(dockerHost, ['rmi', '-f', ...images]);
  // The engine takes one id per prune, and a record goes only once no later step's record holds it: children are
  // pruned before their parents. A build that just ended may hold its records for a moment: rounds until none is
  // left, bounded. On a long-used shared engine one listing takes seconds, so the bound counts rounds, not time.
  const id = (r: { ID: string }) => r.ID.replace(/\*$/, '');
  let left = await records();
  for (let round = 0; left.length && round < 6; round++) {
    if (round) await sleep(500);
    const pending = new Set(left.map(id));
    while (pending.size) {
      // Those no pending record names as its parent (a cycle cannot happen; all are taken if it did).
      const parents = new Set(left.filter((r) => pending.has(id(r))).map((r) => r.Parent ?? ''));
      const leaves = [...pending].filter((i) => !parents.has(i));
      for (const i of leaves.length ? leaves : [...pending]) {
        await docker(dockerHost, ['builder', 'prune', '-f', '--filter', `id=${i}`]);
        pending.delete(i);
      }
    }
    left = await records();
  }
  if (left.length) throw new Error(`build cache records of ${marker} survived the prune: ${left.map((r) => r.ID).join(', ')}`);
}

/** How many BuildKit cache records of the engine mention `marker`. */
export async function cacheRecords(dockerHost: string, marker: string): Promise<number> {
  return (await buildCache(dockerHost)).filter((r) => r.Description.includes(marker)).length;
}
