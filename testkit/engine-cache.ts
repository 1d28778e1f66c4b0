import { execFileSync } from 'node:child_process';

// `docker system df -v` lists every cache record of the engine: on a long-used engine that passes Node's 1 MiB default.
const MAX_OUTPUT = 256 * 1024 * 1024;

const docker = (dockerHost: string, args: string[]) => execFileSync('docker', args, { env: { ...process.env, DOCKER_HOST: dockerHost }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: MAX_OUTPUT });

/**
 * The engine's BuildKit cache records. The engine runs one disk-usage query at a time and refuses others meanwhile
 * (tests and benchmarks on one engine ask side by side): a refused query is asked again, bounded.
 */
function buildCache(dockerHost: string): { ID: string; Description: string }[] {
  for (let attempt = 1; ; attempt++) {
    try {
      return JSON.parse(docker(dockerHost, ['system', 'df', '-v', '--format', '{{json .BuildCache}}'])) as { ID: string; Description: string }[];
    } catch (err) {
      if (attempt >= 40 || !String((err as { stderr?: string }).stderr).includes('disk usage operation is already running')) throw err;
      execFileSync('sleep', ['0.25']);
    }
  }
}

/**
 * Empties the engine of what builds whose steps contain `marker` left there (their BuildKit cache records) and of
 * the images under `repositoryPrefixes`, as an engine that never ran them would be, without touching what other
 * builds on the shared engine keep (no `docker system prune`). Throws when a record survives.
 */
export async function forgetBuilds(dockerHost: string, marker: string, repositoryPrefixes: string[]): Promise<void> {
  const records = () => buildCache(dockerHost).filter((r) => r.Description.includes(marker));
  const images = docker(dockerHost, ['images', '--format', '{{.Repository}}:{{.Tag}}'])
    .split('\n')
    .filter((r) => repositoryPrefixes.some((p) => r.startsWith(p)));
  if (images.length) docker(dockerHost, ['rmi', '-f', ...images]);
  // The engine takes one id per prune; a record goes once no later step's record holds it, and a build that just
  // ended may hold its records for a moment: rounds until none is left, bounded (generously: on a loaded engine one
  // disk-usage query takes seconds).
  for (const deadline = Date.now() + 60_000; records().length && Date.now() < deadline; ) {
    for (const r of records().reverse()) docker(dockerHost, ['builder', 'prune', '-f', '--filter', `id=${r.ID.replace(/\*$/, '')}`]);
    if (records().length) await new Promise((r) => setTimeout(r, 250));
  }
  const left = records();
  if (left.length) throw new Error(`build cache records of ${marker} survived the prune: ${left.map((r) => r.ID).join(', ')}`);
}

/** How many BuildKit cache records of the engine mention `marker`. */
export function cacheRecords(dockerHost: string, marker: string): number {
  return buildCache(dockerHost).filter((r) => r.Description.includes(marker)).length;
}
