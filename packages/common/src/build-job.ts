import { createHash } from 'node:crypto';
import type { BuildRegistryAuth, BuildSource, FileDownloadInitializer_FileInfo, WorkspaceInitializer } from '@imgbuilder/proto';
import { forEachInitializer } from './initializers.js';

/**
 * What the API hands a worker through BullMQ. Credentials never sit here in plain text: they travel sealed in
 * `sealed` (see SecretBox) and the job is removed when it ends.
 */
export interface BuildJobData {
  buildId: string;
  ref: string;
  baseRef: string;
  /** BuildSource.toJSON() with git passwords, OTS URLs and download URLs blanked. */
  source: unknown;
  /** What to do: build the Dockerfile, or copy an existing image (ref source / resolved base) to `ref`. */
  plan: 'dockerfile' | 'copy';
  /** For `copy`: the digest-form image to copy. */
  copyFrom?: string;
  /** BuildRegistryAuth.toJSON() without `additional`. */
  auth: unknown;
  /** SecretBox-sealed JobSecrets. */
  sealed: string;
  triggeredBy: string;
  /** Name of the access token the Build came with (IMGBUILDER_TOKENS_FILE); absent without tokens. */
  tokenName?: string;
  /** Commit mutable git targets were resolved to when the ref was computed. */
  resolvedCommits?: Record<string, string>;
  /** Lines the API wants at the top of the build log (why the build differs from what was asked). */
  notes?: string[];
}

/**
 * Who a build runs for, as far as keeping callers apart on one engine goes (cache mounts): the token's name plus
 * triggered_by, or triggered_by alone without tokens.
 */
export function callerOf(job: Pick<BuildJobData, 'tokenName' | 'triggeredBy'>): string {
  return JSON.stringify([job.tokenName ?? '', job.triggeredBy ?? '']);
}

/** The parts of a caller made by callerOf; empty strings for text that is not one. */
export function parseCaller(caller: string): { tokenName: string; triggeredBy: string } {
  try {
    const parsed = JSON.parse(caller) as unknown;
    if (Array.isArray(parsed) && typeof parsed[0] === 'string' && typeof parsed[1] === 'string') return { tokenName: parsed[0], triggeredBy: parsed[1] };
  } catch {
    // Not made by callerOf.
  }
  return { tokenName: '', triggeredBy: '' };
}

/** A caller (callerOf) as people read it: the token's name, with triggered_by when that differs. */
export function describeCaller(caller: string): string {
  const { tokenName, triggeredBy } = parseCaller(caller);
  if (tokenName && triggeredBy && tokenName !== triggeredBy) return `${tokenName} (triggered_by ${triggeredBy})`;
  return tokenName || triggeredBy || 'anonymous';
}

/**
 * What a job's sealed credentials are bound to (the AES-GCM additional data): the build id, the workspace ref and the
 * plan — what is built from which source with which auth. A sealed blob moved into another job, or a job whose
 * source was changed to send the credentials elsewhere, does not open.
 */
export function sealBinding(job: Omit<BuildJobData, 'sealed' | 'triggeredBy'>): string {
  const digest = (v: unknown) => createHash('sha256').update(JSON.stringify(v ?? null)).digest('hex');
  return ['imgbuilder-job-v1', job.buildId, job.ref, job.baseRef, job.plan, job.copyFrom ?? '', digest(job.source), digest(job.auth), digest(job.resolvedCommits ?? {})].join('\n');
}

/** The credentials a build needs, sealed inside the job. */
export interface JobSecrets {
  /** BuildRegistryAuth.additional. */
  additional: Record<string, string>;
  /** Git credentials by position of the git initializer in the source (depth-first); custom_config rides along (tokens in http.extraHeader). */
  git: { password: string; ots: string; config?: Record<string, string> }[];
  /** Download URLs by position (see forEachDownload): presigned and token-bearing URLs are credentials too. */
  downloads?: string[];
}

/** Visits every file of every download initializer depth-first, in the order the worker downloads them. */
export function forEachDownload(init: WorkspaceInitializer | undefined, fn: (file: FileDownloadInitializer_FileInfo, index: number) => void): void {
  let n = 0;
  forEachInitializer(init, (i) => {
    const spec = i.spec;
    if (spec?.$case === 'download') for (const f of spec.download.files) fn(f, n++);
  });
}

export type { BuildRegistryAuth, BuildSource };
