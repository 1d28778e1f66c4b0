import type { WorkspaceInitializer } from '@imgbuilder/proto';
import type { InitializerContext, RunState } from './initializer-context.js';

/** A composite initializer: its children in order, into the same context (`materialize` is the dispatcher). */
export async function materializeComposite(
  children: WorkspaceInitializer[],
  ctx: InitializerContext,
  state: RunState,
  materialize: (init: WorkspaceInitializer, ctx: InitializerContext, state: RunState) => Promise<void>,
): Promise<void> {
  for (const c of children) await materialize(c, ctx, state);
}
