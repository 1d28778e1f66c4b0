import { BuildStatus, type BuildInfo } from '@imgbuilder/proto';
import type { BuildRecord, BuildState } from '@imgbuilder/common/build-life';
import type { LogInfoIssuer } from '../logs/log-info.js';

/** The status a client sees for a build in `state`: queued builds are `running` too. */
export function buildStatus(state: BuildState): BuildStatus {
  return state === 'done_success' ? BuildStatus.done_success : state === 'done_failure' ? BuildStatus.done_failure : BuildStatus.running;
}

/** A build as BuildInfo: by default with the status of its record, and a fresh way to its log. */
export async function buildInfo(r: BuildRecord, logInfo: LogInfoIssuer, status = buildStatus(r.state)): Promise<BuildInfo> {
  return { ref: r.ref, baseRef: r.baseRef, status, startedAt: String(r.startedAt), buildId: r.id, logInfo: await logInfo.issue(r) };
}
