import { isTerminal } from '@imgbuilder/common/build-life';
import type { StreamEntry } from './stack.js';

/**
 * Splits one imgbuilder build into stages from the times Redis appended its events (the worker writes each log
 * line as it happens). Keyed on the worker's own `[imgbuilder]` lines; a stage whose marker is missing is NaN.
 * `callAt` is when the client called Build, `receivedAt` when it got the terminal status (both wall-clock ms).
 */
export function buildStages(events: StreamEntry[], callAt: number, receivedAt: number): Record<string, number> {
  const logAt = (re: RegExp, nth = 0) => events.filter(({ event: e }) => e.kind === 'log' && re.test(e.text))[nth]?.ms ?? NaN;
  const stateAt = (is: (state: string) => boolean) => events.find(({ event: e }) => e.kind === 'state' && is(e.state))?.ms ?? NaN;
  const running = stateAt((s) => s === 'running');
  const terminal = stateAt(isTerminal);
  const checkedOut = logAt(/\[imgbuilder\] checked out /);
  const context = logAt(/\[imgbuilder\] build context:/);
  const pushBase = logAt(/\[imgbuilder\] pushing /, 0);
  const pushWorkspace = logAt(/\[imgbuilder\] pushing /, 1);
  const done = logAt(/\[imgbuilder\] done: /);
  return {
    /** Request handling, queueing and the worker picking the job up. */
    apiAndQueue: running - callAt,
    clone: checkedOut - running,
    packContext: context - checkedOut,
    build: pushBase - context,
    pushBase: pushWorkspace - pushBase,
    /** Tag, push and the registry check that the workspace image exists. */
    pushWorkspace: done - pushWorkspace,
    /** Final log upload to S3 and the terminal state in Redis. */
    finish: terminal - done,
    /** Terminal state in Redis → the Build stream's client. */
    deliver: receivedAt - terminal,
  };
}
