import { activeContext, recordSpan, tracingEnabled } from '@imgbuilder/common/tracing';
import type { StepEnd } from './buildkit-progress.js';

/**
 * Makes each BuildKit step that ends a span under the span active now (the image build), from the progress
 * stream's own start and end times and named as the log's `#N` line names the step; none without tracing.
 */
export function stepSpans(): ((step: StepEnd) => void) | undefined {
  if (!tracingEnabled()) return undefined;
  const parent = activeContext();
  return (s) =>
    recordSpan(s.name, s.started ?? s.completed, s.completed, {
      parent,
      attributes: { 'imgbuilder.step': s.index, 'imgbuilder.step.cached': s.cached },
      error: s.error,
    });
}
