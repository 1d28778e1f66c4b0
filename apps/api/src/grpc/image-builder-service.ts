import type { ServerWritableStream } from '@grpc/grpc-js';
import {
  BuildStatus,
  type BuildRequest,
  type BuildResponse,
  type ImageBuilderServer,
  type ListBuildsRequest,
  type ListBuildsResponse,
  type LogsRequest,
  type LogsResponse,
  type ResolveBaseImageRequest,
  type ResolveBaseImageResponse,
  type ResolveWorkspaceImageRequest,
  type ResolveWorkspaceImageResponse,
} from '@imgbuilder/proto';
import { type BuildStore, isTerminal, type LogStore } from '@imgbuilder/common/build-life';
import type { Logger } from '@imgbuilder/common/logger';
import type { ApiMetrics } from '../metrics.js';
import type { BuildPlanner } from '../plan/build-plan.js';
import type { BuildStarter } from '../queue/start-or-join.js';
import type { EventHub } from '../logs/event-hub.js';
import type { BuildLogDeps } from '../logs/build-log.js';
import type { LogInfoIssuer } from '../logs/log-info.js';
import { admittedCaller } from './auth.js';
import { buildInfo } from './build-info.js';
import { followBuild, type FollowDeps } from './build-follow.js';
import { requestedBuild, sendBuildLog } from './logs-stream.js';
import { serveStream, serveUnary, type CallContext } from './rpc-call.js';
import { writeMessage } from './stream-writer.js';
import { attributeBuild } from './caller.js';
import { inSpan } from '@imgbuilder/common/tracing';

export interface ServiceConfig {
  workspaceRepository: string;
  baseRepository: string;
  /** A stream client that reads nothing this long is dropped (RESOURCE_EXHAUSTED). */
  slowClientTimeoutMs: number;
  /** Interval of `running` keepalive messages on quiet Build streams. */
  keepaliveMs: number;
}

/** What the service works with, made once per process (main.ts). */
export interface ServiceDeps {
  planner: BuildPlanner;
  starter: BuildStarter;
  store: BuildStore;
  hub: EventHub;
  logStore: LogStore;
  logInfo: LogInfoIssuer;
  metrics: ApiMetrics;
  log: Logger;
}

/**
 * The `builder.ImageBuilder` rpcs. Holds no build state: everything lives in Redis. Each rpc hands its request from
 * one room to the next: plan/ (what to build), queue/ (start or join it), then follows it (build-follow.ts, logs/).
 */
export class ImageBuilderService {
  private readonly ctx: CallContext;
  private readonly follow: FollowDeps;
  private readonly logDeps: BuildLogDeps;

  constructor(
    private readonly cfg: ServiceConfig,
    private readonly deps: ServiceDeps,
  ) {
    const { metrics, log, store, hub, logStore, logInfo } = deps;
    this.ctx = { metrics, log };
    this.follow = { store, hub, logInfo, keepaliveMs: cfg.keepaliveMs };
    this.logDeps = { store, logStore, hub };
  }

  handlers(): ImageBuilderServer {
    return {
      resolveBaseImage: (call, cb) => serveUnary(this.ctx, 'ResolveBaseImage', call, cb, (r) => this.resolveBaseImage(r)),
      resolveWorkspaceImage: (call, cb) => serveUnary(this.ctx, 'ResolveWorkspaceImage', call, cb, (r) => this.resolveWorkspaceImage(r)),
      listBuilds: (call, cb) => serveUnary(this.ctx, 'ListBuilds', call, cb, (r) => this.listBuilds(r)),
      build: (call) => void serveStream(this.ctx, 'Build', call, (signal) => this.build(call, signal)),
      logs: (call) => void serveStream(this.ctx, 'Logs', call, (signal) => this.logs(call, signal)),
    };
  }

  async resolveBaseImage(req: ResolveBaseImageRequest): Promise<ResolveBaseImageResponse> {
    const { planner } = this.deps;
    return { ref: await planner.resolveImage(req.ref, planner.policyFor(req.auth), req.useRetryClient) };
  }

  async resolveWorkspaceImage(req: ResolveWorkspaceImageRequest): Promise<ResolveWorkspaceImageResponse> {
    const { planner, store } = this.deps;
    const plan = await planner.plan(req.source, req.auth, req.useRetryClient);
    if (await planner.workspaceImageExists(plan.ref)) return { ref: plan.ref, baseRef: plan.baseRef, status: BuildStatus.done_success };
    const active = await store.activeIdForRef(plan.ref);
    const record = active ? await store.get(active) : undefined;
    const status = record && !isTerminal(record.state) ? BuildStatus.running : BuildStatus.unknown;
    return { ref: plan.ref, baseRef: plan.baseRef, status };
  }

  async listBuilds(_req: ListBuildsRequest): Promise<ListBuildsResponse> {
    const records = await this.deps.store.listLive();
    return { builds: await Promise.all(records.map((r) => buildInfo(r, this.deps.logInfo))) };
  }

  /** Plan, start or join, follow: an image that exists already is answered at once. */
  private async build(call: ServerWritableStream<BuildRequest, BuildResponse>, signal: AbortSignal): Promise<void> {
    const req = call.request;
    attributeBuild(req);
    const send = (message: BuildResponse) => this.write(call, message, signal);
    const { plan, built } = await inSpan('plan', () => this.deps.planner.planBuild(req));
    const log = this.deps.log.child({ ref: plan.ref, triggeredBy: req.triggeredBy || undefined });
    if (built) {
      log.debug('workspace image exists');
      return send({ ref: plan.ref, baseRef: plan.baseRef, status: BuildStatus.done_success, message: '', info: undefined });
    }
    if (plan.fallbackNote) log.info({ reason: plan.fallbackNote }, 'base_image_name_resolved unusable; building from the source');
    const buildId = await this.deps.starter.startOrJoin({ plan, req, tokenName: admittedCaller(req)?.name }, log);
    await followBuild(buildId, this.follow, send, signal);
  }

  private async logs(call: ServerWritableStream<LogsRequest, LogsResponse>, signal: AbortSignal): Promise<void> {
    const req = call.request;
    const record = await requestedBuild(req, this.deps.store);
    const censored = req.censored ? [record.ref, record.baseRef, this.cfg.baseRepository, this.cfg.workspaceRepository] : undefined;
    await sendBuildLog(record, this.logDeps, censored, (message) => this.write(call, message, signal), signal);
  }

  private write<T>(call: ServerWritableStream<unknown, T>, message: T, signal: AbortSignal): Promise<void> {
    return writeMessage(call, message, signal, this.cfg.slowClientTimeoutMs);
  }
}
