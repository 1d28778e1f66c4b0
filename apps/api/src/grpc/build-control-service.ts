import type { Server } from '@grpc/grpc-js';
import { BuildControlService, type BuildControlServer, type CancelBuildRequest, type CancelBuildResponse } from '@imgbuilder/proto';
import { InvalidRequest } from '@imgbuilder/common/errors';
import type { BuildCanceller } from '../control/build-canceller.js';
import { admittedCaller } from './auth.js';
import { callerOf } from './caller.js';
import { serveUnary, type CallContext } from './rpc-call.js';
import { addService, type Guard } from './server.js';

/** `imgbuilder.control.v1.BuildControl`: what builder.ImageBuilder (Gitpod's, unchanged) has no rpc for. */
export class BuildControl {
  constructor(
    private readonly canceller: BuildCanceller,
    private readonly ctx: CallContext,
  ) {}

  register(server: Server, guard?: Guard): void {
    const impl: BuildControlServer = { cancelBuild: (call, cb) => serveUnary(this.ctx, 'CancelBuild', call, cb, (r) => this.cancelBuild(r)) };
    addService(server, BuildControlService, impl, guard);
  }

  /** requested_by names who asks as triggered_by names a Build's caller: the same identity (caller.ts). */
  private async cancelBuild(req: CancelBuildRequest): Promise<CancelBuildResponse> {
    if (!req.buildId) throw new InvalidRequest('give build_id (`imgbuilder ls` lists running builds)');
    return this.canceller.cancel(req.buildId, admittedCaller(req), callerOf(req, req.requestedBy));
  }
}
