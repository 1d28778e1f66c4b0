import type { CacheRef } from '@imgbuilder/proto';
import { formatBytes } from '@imgbuilder/common/byte-size';
import { formatDuration, parseDuration } from '@imgbuilder/common/duration';
import { EXIT, usageError } from './cli-error.js';
import { unary, type Connection } from './connection.js';
import { writeTable } from './output.js';

/** `imgbuilder cache ls`: the installation's layer cache refs, least recently used first (role admin). */
export async function cacheLsCommand(opts: { json?: boolean }, conn: Connection): Promise<number> {
  const res = await unary(conn.cache.listCacheRefs.bind(conn.cache), {});
  process.stderr.write(`${res.refs.length} cache refs in ${res.repository}\n`);
  if (opts.json) {
    for (const r of res.refs) process.stdout.write(`${JSON.stringify(refJson(r))}\n`);
    return EXIT.ok;
  }
  if (res.refs.length) writeTable([['REF', 'SIZE', 'LAST USED'], ...res.refs.map((r) => [r.ref, formatBytes(Number(r.size), 'rounded'), lastUsed(r)])]);
  return EXIT.ok;
}

/** `imgbuilder cache prune [--older-than AGE]`: deletes the refs unused for longer (default: the retention). */
export async function cachePruneCommand(opts: { olderThan?: string; json?: boolean }, conn: Connection): Promise<number> {
  let seconds = 0;
  if (opts.olderThan !== undefined) {
    const ms = parseDuration(opts.olderThan);
    if (ms === undefined || ms < 1000) throw usageError(`--older-than "${opts.olderThan}" is not an age: use seconds (86400) or a unit (36h, 7d)`);
    seconds = Math.round(ms / 1000);
  }
  const res = await unary(conn.cache.pruneCache.bind(conn.cache), { olderThanSeconds: String(seconds) });
  for (const r of res.deleted) process.stdout.write(opts.json ? `${JSON.stringify(refJson(r))}\n` : `deleted ${r.ref} (${formatBytes(Number(r.size), 'rounded')}, last used ${lastUsed(r)})\n`);
  process.stderr.write(`${res.deleted.length} cache refs unused for over ${formatDuration(Number(res.olderThanSeconds) * 1000)} deleted; the registry's garbage collection frees their blobs\n`);
  return EXIT.ok;
}

function refJson(r: CacheRef) {
  return { ref: r.ref, digest: r.digest, size: Number(r.size), last_used: r.lastUsed?.toISOString() };
}

function lastUsed(r: CacheRef): string {
  return r.lastUsed ? r.lastUsed.toISOString().replace(/\.\d{3}Z$/, 'Z') : '-';
}
