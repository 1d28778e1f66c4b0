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
  /**
   * Who the build is attributed to: the caller's id of apps/api/src/grpc/caller.ts (`<token>/<triggered_by>` with
   * tokens). The one caller string the worker and common know: cache mounts and fair share key on it.
   */
  triggeredBy: string;
  /** Name of the access token the Build came with (IMGBUILDER_TOKENS_FILE); absent without tokens. */
  tokenName?: string;
  /** Commit mutable git targets were resolved to when the ref was computed. */
  resolvedCommits?: Record<string, string>;
  /** force_rebuild: every step runs again, no cache reused (the engine's or the registry's); the result is kept as cache. */
  noCache?: boolean;
  /** Lines the API wants at the top of the build log (why the build differs from what was asked). */
  notes?: string[];
  /** W3C trace headers of the API's enqueue span (tracing.ts): the worker's spans join the caller's trace. */
  trace?: Record<string, string>;
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
