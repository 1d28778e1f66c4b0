import { execFileSync } from 'node:child_process';

// `docker system df -v` lists every cache record of the engine: on a long-used engine that passes Node's 1 MiB default.
const MAX_OUTPUT = 256 * 1024 * 1024;

/**
 * Empties the engine of what builds whose steps contain `marker` left there (their BuildKit cache records) and of
 * the images under `repositoryPrefixes`, as an engine that never ran them would be, without touching what other
 * builds on the shared engine keep (no `docker system prune`). Throws when a record survives.
 */
export async function forgetBuilds(dockerHost: string, marker: string, repositoryPrefixes: string[]): Promise<void> {
  const docker = (...args: string[]) => execFileSync('docker', args, { env: { ...process.env, DOCKER_HOST: dockerHost }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: MAX_OUTPUT });
  const records = () => (JSON.parse(docker('system', 'df', '-v', '--format', '{{json .BuildCache}}')) as { ID: string; Description: string }[]).filter((r) => r.Description.includes(marker));
  const images = docker('images', '--format', '{{.Repository}}:{{.Tag}}')
    .split('\n')
    .filter((r) => repositoryPrefixes.some((p) => r.startsWith(p)));
  if (images.length) docker('rmi', '-f', ...images);
  // The engine takes one id per prune; a record goes once no later step's record holds it, and a build that just
  // ended may hold its records for a moment: rounds until none is left, bounded.
  for (const deadline = Date.now() + 15_000; records().length && Date.now() < deadline; ) {
    for (const r of records().reverse()) docker('builder', 'prune', '-f', '--filter', `id=${r.ID.replace(/\*$/, '')}`);
    if (records().length) await new Promise((r) => setTimeout(r, 250));
  }
  const left = records();
  if (left.length) throw new Error(`build cache records of ${marker} survived the prune: ${left.map((r) => r.ID).join(', ')}`);
}

/** How many BuildKit cache records of the engine mention `marker`. */
export function cacheRecords(dockerHost: string, marker: string): number {
  const out = execFileSync('docker', ['system', 'df', '-v', '--format', '{{json .BuildCache}}'], { env: { ...process.env, DOCKER_HOST: dockerHost }, encoding: 'utf8', maxBuffer: MAX_OUTPUT });
  return (JSON.parse(out) as { Description: string }[]).filter((r) => r.Description.includes(marker)).length;
}
