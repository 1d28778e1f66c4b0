import type { ContextLimits } from '@imgbuilder/common/context-walker';
import { ContextLimitExceeded } from '@imgbuilder/common/errors';
import type { GitCredentials } from '@imgbuilder/common/git';
import type { ObjectStore } from '@imgbuilder/common/object-store';
import { contextLimitMessage } from '../errors.js';

/** Git secrets of one git initializer, unsealed from the job. */
export interface GitSecrets {
  password: string;
  ots: string;
  /** custom_config travels sealed: http.extraHeader values are tokens. */
  config?: Record<string, string>;
}

export interface InitializerContext {
  /** Root of the build context on disk. */
  root: string;
  /** Git secrets by position of the git initializer (depth-first, see forEachGit in refs.ts). */
  gitSecrets: GitSecrets[];
  allowLocal: boolean;
  objects: ObjectStore;
  signal: AbortSignal;
  log: (line: string) => void;
  /** Register more strings to redact from the log (OTS answers). */
  addSecrets: (s: string[]) => void;
  /** Commits the API resolved mutable targets to: the clone must check out exactly those. */
  resolvedCommits: Record<string, string>;
  /** Caps on what downloads and snapshots may write (git checkouts are measured afterwards, with the context). */
  limits?: ContextLimits;
  /** Download URLs by position (depth-first, see forEachDownload), unsealed from the job: they often carry tokens. */
  downloadUrls?: string[];
  /** IMGBUILDER_SNAPSHOT_SOURCES: buckets (or bucket/prefix) snapshots may come from besides our own snapshots/. */
  snapshotSources?: readonly string[];
}

/** What one run over an initializer tree shares: git positions, fetched credentials, the write budget. */
export interface RunState {
  git: number;
  /** One-time secrets are fetched once per git initializer, even when a prebuild falls back to a clone. */
  credentials: Map<number, Promise<GitCredentials | undefined>>;
  bytes: number;
  files: number;
  /** Position of the next download file (keys ctx.downloadUrls). */
  download: number;
}

/** The first cap the run's writes so far exceed, as the failure's wording. */
export function overBudget(ctx: InitializerContext, state: RunState): string | undefined {
  if (!ctx.limits) return undefined;
  if (state.files > ctx.limits.maxFiles) return contextLimitMessage(new ContextLimitExceeded('files', ctx.limits.maxFiles));
  if (state.bytes > ctx.limits.maxBytes) return contextLimitMessage(new ContextLimitExceeded('bytes', ctx.limits.maxBytes));
  return undefined;
}
