import { readFileSync } from 'node:fs';

/**
 * Manifest PUTs the local registry logged for `host/repository:tag`: one per push of that tag, so one per docker
 * build imgbuilder ran for it. Counts the access-log form of the line only (the registry also logs a JSON form).
 */
export function manifestPuts(logPath: string, ref: string): number {
  const i = ref.indexOf('/');
  const [path, tag] = ref.slice(i + 1).split(':');
  const needle = `"PUT /v2/${path}/manifests/${tag} `;
  let log: string;
  try {
    log = readFileSync(logPath, 'utf8');
  } catch {
    return NaN;
  }
  let n = 0;
  for (let at = log.indexOf(needle); at >= 0; at = log.indexOf(needle, at + needle.length)) n++;
  return n;
}

/** Waits (bounded) until the registry has logged at least one manifest PUT for `ref`, then returns the count. */
export async function settledManifestPuts(logPath: string, ref: string, timeoutMs = 5_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let n = manifestPuts(logPath, ref);
  while (!(n >= 1) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    n = manifestPuts(logPath, ref);
  }
  return n;
}
