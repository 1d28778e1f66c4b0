import type { WorkspaceInitializer } from '@imgbuilder/proto';

/**
 * The one walk over an initializer tree: depth-first, each initializer before its composite children, children in
 * order — the order the worker runs them. Git and download positions (refs, sealed secrets) depend on this order.
 * `depth` is the composite nesting of `init` (0 for the root).
 */
export function forEachInitializer(init: WorkspaceInitializer | undefined, fn: (init: WorkspaceInitializer, depth: number) => void): void {
  const visit = (i: WorkspaceInitializer, depth: number): void => {
    fn(i, depth);
    const spec = i.spec;
    if (spec?.$case === 'composite') for (const c of spec.composite.initializer) visit(c, depth + 1);
  };
  if (init) visit(init, 0);
}
