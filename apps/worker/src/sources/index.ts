import type { WorkspaceInitializer } from '@imgbuilder/proto';
import { materializeComposite } from './composite.js';
import { download } from './download.js';
import { gitClone } from './git.js';
import type { InitializerContext, RunState } from './initializer-context.js';
import { materializePrebuild } from './prebuild.js';
import { restoreSnapshot } from './snapshot.js';
import { SourceError } from '../errors.js';

/** Materialises a WorkspaceInitializer into ctx.root (contentservice semantics). */
export async function runInitializer(init: WorkspaceInitializer, ctx: InitializerContext): Promise<void> {
  await run(init, ctx, { git: 0, credentials: new Map(), bytes: 0, files: 0, download: 0 });
}

async function run(init: WorkspaceInitializer, ctx: InitializerContext, state: RunState): Promise<void> {
  const spec = init.spec;
  if (!spec) throw new SourceError('build source is missing: an initializer is empty');
  switch (spec.$case) {
    case 'empty':
      return;
    case 'git':
      return gitClone(spec.git, ctx, state, state.git++);
    case 'download':
      return download(spec.download.files, spec.download.targetLocation, ctx, state);
    case 'composite':
      return materializeComposite(spec.composite.initializer, ctx, state, run);
    case 'snapshot':
      return restoreSnapshot(spec.snapshot.snapshot, spec.snapshot.fromVolumeSnapshot, ctx, state, false);
    case 'prebuild':
      return materializePrebuild(spec.prebuild, ctx, state);
    case 'backup':
      throw new SourceError('the backup initializer is not supported: imgbuilder has no workspace backups');
  }
}
