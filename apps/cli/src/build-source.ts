import { posix } from 'node:path';
import { BuildSource, CloneTargetMode } from '@imgbuilder/proto';
import { usageError } from './cli-error.js';

/**
 * `URL[#REF]` as a git source: REF of 40 hex digits is a commit (REMOTE_COMMIT), another REF a branch
 * (REMOTE_BRANCH), none the remote's HEAD (REMOTE_HEAD). `dockerfile` and `context` are relative to the repository
 * root; with a context and no Dockerfile, the context's `Dockerfile` is used.
 */
export function gitBuildSource(spec: string, opts: { dockerfile?: string; context?: string }): BuildSource {
  const hash = spec.lastIndexOf('#');
  const url = hash >= 0 ? spec.slice(0, hash) : spec;
  const ref = hash >= 0 ? spec.slice(hash + 1) : '';
  if (!url) throw usageError('--git needs a repository URL');
  const mode = !ref ? CloneTargetMode.REMOTE_HEAD : /^[0-9a-f]{40}$/i.test(ref) ? CloneTargetMode.REMOTE_COMMIT : CloneTargetMode.REMOTE_BRANCH;
  const context = opts.context ? posix.normalize(opts.context) : '';
  const dockerfile = opts.dockerfile ?? (context ? posix.join(context, 'Dockerfile') : 'Dockerfile');
  return BuildSource.fromPartial({
    from: {
      $case: 'file',
      file: {
        source: { spec: { $case: 'git', git: { remoteUri: url, targetMode: mode, cloneTaget: ref, checkoutLocation: '' } } },
        dockerfilePath: dockerfile,
        contextPath: context,
      },
    },
  });
}

/** A snapshot uploaded through the API (key in the installation's default bucket) as the build source. */
export function snapshotBuildSource(snapshot: string, dockerfilePath: string, contextPath: string): BuildSource {
  return BuildSource.fromPartial({
    from: { $case: 'file', file: { source: { spec: { $case: 'snapshot', snapshot: { snapshot } } }, dockerfilePath, contextPath } },
  });
}

/** An existing image as the build source (`resolve workspace --ref`). */
export function refBuildSource(ref: string): BuildSource {
  return BuildSource.fromPartial({ from: { $case: 'ref', ref: { ref } } });
}
