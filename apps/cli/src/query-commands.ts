import { BuildStatus, type BuildInfo } from '@imgbuilder/proto';
import { gitBuildSource, refBuildSource } from './build-source.js';
import { EXIT, usageError } from './cli-error.js';
import { unary, type Connection } from './connection.js';
import { writeTable } from './output.js';

/** `imgbuilder ls`: running (and queued) builds as a table, or JSON. */
export async function lsCommand(opts: { json?: boolean }, conn: Connection): Promise<number> {
  const { builds } = await unary(conn.builder.listBuilds.bind(conn.builder), {});
  const sorted = [...builds].sort((a, b) => Number(a.startedAt) - Number(b.startedAt));
  if (opts.json) {
    for (const b of sorted) process.stdout.write(`${JSON.stringify(buildJson(b))}\n`);
    return EXIT.ok;
  }
  writeTable([['BUILD ID', 'REF', 'STATUS', 'STARTED'], ...sorted.map((b) => [b.buildId, b.ref, BuildStatus[b.status] ?? String(b.status), startedAt(b)])]);
  return EXIT.ok;
}

/** `imgbuilder resolve base REF`: the digest form of an image. */
export async function resolveBaseCommand(ref: string, conn: Connection): Promise<number> {
  const res = await unary(conn.builder.resolveBaseImage.bind(conn.builder), { ref, auth: undefined, useRetryClient: false });
  process.stdout.write(`${res.ref}\n`);
  return EXIT.ok;
}

/** `imgbuilder resolve workspace`: the workspace ref a source builds to, its base ref, and whether it exists. */
export async function resolveWorkspaceCommand(opts: { git?: string; ref?: string; file?: string; context?: string; json?: boolean }, conn: Connection): Promise<number> {
  if (Boolean(opts.git) === Boolean(opts.ref)) throw usageError('resolve workspace needs exactly one of --git URL[#REF] or --ref IMAGE');
  if (opts.ref && (opts.file || opts.context)) throw usageError('-f and --context apply to --git sources');
  const source = opts.git ? gitBuildSource(opts.git, { dockerfile: opts.file, context: opts.context }) : refBuildSource(opts.ref!);
  const res = await unary(conn.builder.resolveWorkspaceImage.bind(conn.builder), { source, auth: undefined, useRetryClient: false });
  const status = BuildStatus[res.status] ?? String(res.status);
  if (opts.json) process.stdout.write(`${JSON.stringify({ ref: res.ref, base_ref: res.baseRef, status })}\n`);
  else process.stdout.write(`ref       ${res.ref}\nbase_ref  ${res.baseRef}\nstatus    ${status}\n`);
  return EXIT.ok;
}

function buildJson(b: BuildInfo) {
  return { build_id: b.buildId, ref: b.ref, base_ref: b.baseRef, status: BuildStatus[b.status], started_at: Number(b.startedAt) };
}

function startedAt(b: BuildInfo): string {
  const s = Number(b.startedAt);
  return s > 0 ? new Date(s * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z') : '-';
}
