import { BuildStatus, type BuildResponse } from '@imgbuilder/proto';
import { isTerminal, type BuildStore } from '@imgbuilder/common/build-life';
import { BuildStateUnavailable } from '@imgbuilder/common/errors';
import type { EventHub } from '../logs/event-hub.js';
import type { LogInfoIssuer } from '../logs/log-info.js';
import { buildInfo, buildStatus } from './build-info.js';

export interface FollowDeps {
  store: BuildStore;
  hub: EventHub;
  logInfo: LogInfoIssuer;
  /** Interval of `running` keepalive messages on quiet Build streams. */
  keepaliveMs: number;
}

/**
 * Streams one build to a Build caller through `send`: `running` (again every keepaliveMs while nothing else is
 * said), then how it ended; a build that has ended already gets only its ending.
 */
export async function followBuild(buildId: string, deps: FollowDeps, send: (message: BuildResponse) => Promise<void>, signal: AbortSignal): Promise<void> {
  const record = await deps.store.get(buildId);
  if (!record) throw new BuildStateUnavailable('the build record vanished; retry');
  const say = async (status: BuildStatus, message = '') =>
    send({ ref: record.ref, baseRef: record.baseRef, status, message, info: await buildInfo(record, deps.logInfo, status) });
  if (isTerminal(record.state)) return say(buildStatus(record.state), record.message);
  await say(BuildStatus.running);

  // Quiet builds still send `running` now and then, so proxies and clients see a live stream.
  const keepalive = setInterval(() => void say(BuildStatus.running).catch(() => undefined), deps.keepaliveMs);
  try {
    for await (const e of deps.hub.events(buildId, signal)) {
      if (e.kind === 'state' && isTerminal(e.state)) return await say(buildStatus(e.state), e.message);
    }
  } finally {
    clearInterval(keepalive);
  }
}
