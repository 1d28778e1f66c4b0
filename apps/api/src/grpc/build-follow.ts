import { BuildStatus, type BuildResponse } from '@imgbuilder/proto';
import { isTerminal, type BuildStore } from '@imgbuilder/common/build-life';
import { BuildStateUnavailable } from '@imgbuilder/common/errors';
import type { EventHub } from '../logs/event-hub.js';
import type { LogInfoIssuer } from '../logs/log-info.js';
import { buildInfo, buildStatus } from './build-info.js';
import type { KeepaliveRounds } from './keepalive-rounds.js';

export interface FollowDeps {
  store: BuildStore;
  hub: EventHub;
  logInfo: LogInfoIssuer;
  /** The one timer of `running` keepalive messages on quiet Build streams, shared by every stream of this process. */
  keepalive: KeepaliveRounds;
}

/**
 * Streams one build to a Build caller through `send`: `running` (again every keepalive round while nothing else is
 * said), then how it ended; a build that has ended already gets only its ending.
 */
export async function followBuild(buildId: string, deps: FollowDeps, send: (message: BuildResponse) => Promise<void>, signal: AbortSignal): Promise<void> {
  const record = await deps.store.get(buildId);
  if (!record) throw new BuildStateUnavailable('the build record vanished; retry');
  const message = async (status: BuildStatus, text = ''): Promise<BuildResponse> =>
    ({ ref: record.ref, baseRef: record.baseRef, status, message: text, info: await buildInfo(record, deps.logInfo, status) });
  if (isTerminal(record.state)) return send(await message(buildStatus(record.state), record.message));
  await send(await message(BuildStatus.running));

  // Quiet builds still send `running` now and then, so proxies and clients see a live stream; the message is made
  // once per build per round, not once per stream.
  const stopKeepalive = deps.keepalive.add((round) =>
    void round
      .once(buildId, () => message(BuildStatus.running))
      .then(send)
      .catch(() => undefined),
  );
  try {
    for await (const e of deps.hub.events(buildId, signal)) {
      if (e.kind === 'state' && isTerminal(e.state)) return await send(await message(buildStatus(e.state), e.message));
    }
  } finally {
    stopKeepalive();
  }
}
