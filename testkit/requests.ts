import { createHash, randomBytes } from 'node:crypto';
import { CloneTargetMode, GitInitializer, type BuildSource, type WorkspaceInitializer } from '@imgbuilder/proto';

export const BASE_IMAGE = '127.0.0.1:5000/imgbuilder/busybox:latest';

export function gitSource(remoteUri: string, opts: { dockerfilePath?: string; contextPath?: string; mode?: CloneTargetMode; target?: string; checkoutLocation?: string } = {}): BuildSource {
  return {
    from: {
      $case: 'file',
      file: {
        source: {
          spec: {
            $case: 'git',
            git: {
              remoteUri,
              upstreamRemoteUri: '',
              targetMode: opts.mode ?? CloneTargetMode.REMOTE_HEAD,
              cloneTaget: opts.target ?? '',
              checkoutLocation: opts.checkoutLocation ?? '',
              config: undefined,
              fullClone: false,
            },
          },
        },
        dockerfileVersion: '',
        dockerfilePath: opts.dockerfilePath ?? 'Dockerfile',
        contextPath: opts.contextPath ?? '',
      },
    },
  };
}

/** A short random name part, so each test's commits, refs and objects are its own. */
export const rand = () => randomBytes(4).toString('hex');

/** The digest string a download initializer names: `sha256:<hex>`. */
export const sha256 = (b: string | Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A build from any initializer (composite, download, snapshot, prebuild …), its Dockerfile and context inside it. */
export function fileSource(source: WorkspaceInitializer, opts: { dockerfilePath?: string; contextPath?: string } = {}): BuildSource {
  return { from: { $case: 'file', file: { source, dockerfileVersion: '', dockerfilePath: opts.dockerfilePath ?? 'Dockerfile', contextPath: opts.contextPath ?? '' } } };
}

/** A download initializer: each file fetched from its URL to `filePath` under `targetLocation`, checked against its digest. */
export const downloadInit = (files: { url: string; filePath: string; digest: string }[], targetLocation = ''): WorkspaceInitializer => ({
  spec: { $case: 'download', download: { files, targetLocation } },
});
/** A composite initializer: its initializers run in order into one context. */
export const composite = (...initializer: WorkspaceInitializer[]): WorkspaceInitializer => ({ spec: { $case: 'composite', composite: { initializer } } });
export const snapshotInit = (snapshot: string, fromVolumeSnapshot = false): WorkspaceInitializer => ({ spec: { $case: 'snapshot', snapshot: { snapshot, fromVolumeSnapshot } } });
export const emptyInit: WorkspaceInitializer = { spec: { $case: 'empty', empty: {} } };

/** A git initializer, unset fields at their protobuf defaults. */
export const gitInit = (g: Parameters<typeof GitInitializer.fromPartial>[0]): WorkspaceInitializer => ({ spec: { $case: 'git', git: GitInitializer.fromPartial(g) } });

/** A Dockerfile FROM the test base image; a nonce step keeps the engine's cache from skipping the work. */
export function dockerfile(...runs: string[]): string {
  const nonce = Math.random().toString(36).slice(2);
  return `FROM ${BASE_IMAGE}\nRUN echo nonce-${nonce}\n${runs.map((r) => `RUN ${r}\n`).join('')}`;
}
