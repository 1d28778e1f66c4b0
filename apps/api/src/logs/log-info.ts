import type { LogInfo } from '@imgbuilder/proto';
import { type BuildRecord, type LogStore } from '@imgbuilder/common/build-life';
import type { LogTokens } from './log-token.js';

/** Gitpod's server replaces log_info.url's path with this (HeadlessLogService.SUPERVISOR_API_PATH). */
export const SUPERVISOR_API_PATH = '/_supervisor/v1';
/** The header Gitpod's server sends an owner token in; log_info.headers names it, so either way it arrives here. */
export const LOG_TOKEN_HEADER = 'x-gitpod-owner-token';

export interface LogInfoConfig {
  /** How long a presigned log URL stays valid (IMGBUILDER_LOG_URL_TTL). */
  logUrlTtlMs: number;
  /** IMGBUILDER_LOG_INFO=supervisor: log_info names the supervisor endpoint at this origin, with a per-build token. */
  supervisorLogs?: { publicUrl: string; tokens: LogTokens };
}

/**
 * Where BuildInfo.log_info sends a client for a build's log: a fresh presigned URL of the log object, or the API's
 * supervisor endpoint (supervisor-log-server.ts) with a token for that build.
 */
export class LogInfoIssuer {
  constructor(
    private readonly cfg: LogInfoConfig,
    private readonly logStore: LogStore,
  ) {}

  async issue(r: BuildRecord): Promise<LogInfo> {
    const sup = this.cfg.supervisorLogs;
    if (sup) return { url: `${sup.publicUrl.replace(/\/$/, '')}${SUPERVISOR_API_PATH}`, headers: { [LOG_TOKEN_HEADER]: sup.tokens.issue(r.id) } };
    return { url: await this.logStore.presign(r.logKey, this.cfg.logUrlTtlMs).catch(() => ''), headers: {} };
  }
}
