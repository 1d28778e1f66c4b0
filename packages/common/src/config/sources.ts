import { z } from 'zod';
import { duration, bool, int, list, byteSize, fetchList } from './values.js';

/**
 * What a build may fetch and hold: the size of a request's source tree and context, git remote resolution, the
 * fetch policy, snapshot buckets, Dockerfile frontends.
 */
export const sourceFields = {
  /** Build contexts larger than this fail. */
  IMGBUILDER_MAX_CONTEXT_BYTES: byteSize('1GiB'),
  /** Build contexts with more files than this fail. */
  IMGBUILDER_MAX_CONTEXT_FILES: int(200_000, 1),
  /** Initializers (every node of the tree, composites and prebuild git targets included) one request may hold. */
  IMGBUILDER_MAX_INITIALIZERS: int(64, 1),
  /** How deep composite initializers may nest. */
  IMGBUILDER_MAX_COMPOSITE_DEPTH: int(8, 1),
  /** Files one download initializer may list. */
  IMGBUILDER_MAX_DOWNLOAD_FILES: int(1000, 1),
  /** `git ls-remote` runs (resolving branches and HEAD to commits) one API process runs at the same time. */
  IMGBUILDER_LS_REMOTE_CONCURRENCY: int(8, 1),
  /** One `git ls-remote` taking longer is stopped; the request answers UNAVAILABLE. */
  IMGBUILDER_LS_REMOTE_TIMEOUT: duration('30s'),
  /** How long an API process reuses what a branch or HEAD resolved to: a push is seen by Build within this window; 0 asks every time. */
  IMGBUILDER_LS_REMOTE_CACHE: duration('5s', undefined, { zero: true }),
  /**
   * Buckets snapshots may be read from besides the service's own `snapshots/` prefix: comma-separated `bucket` (any
   * key in it) or `bucket/prefix` (keys under that prefix only).
   */
  IMGBUILDER_SNAPSHOT_SOURCES: list,
  /**
   * The fetch policy (README "Security model"): CIDRs nothing fetched on a build's behalf may reach, besides the
   * refused-by-default loopback, link-local, metadata and unspecified addresses: the cluster's pod and service ranges.
   */
  IMGBUILDER_FETCH_DENY: fetchList('deny', 'comma-separated CIDRs (10.96.0.0/12)'),
  /** Re-allows what the fetch policy refuses: addresses, CIDRs, or host:port (127.0.0.1:8080, git.internal:22). */
  IMGBUILDER_FETCH_ALLOW: fetchList('allow', 'comma-separated CIDRs (10.1.0.0/16) or host:port (git.internal:22)'),
  /** Lets git remotes and downloads use file:// URLs and local paths (trusted single-user setups only). */
  IMGBUILDER_ALLOW_LOCAL_SOURCES: bool(false),
  /**
   * `# syntax=` frontends a Dockerfile may name: comma-separated image patterns, `repository` (any tag or digest) or
   * `repository:tag`, with `*` for any run of characters but `/`; Docker Hub names may be short. Empty: none.
   */
  IMGBUILDER_ALLOWED_FRONTENDS: z
    .string()
    .default('docker/dockerfile')
    .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean))
    .refine((entries) => entries.every((e) => /^[a-z0-9*][a-z0-9._*:/-]*(@sha256:[a-f0-9]{64})?$/.test(e)), 'expected image patterns like docker/dockerfile or registry.example.com/frontends/*:1.*'),
};
