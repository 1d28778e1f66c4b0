import { status as GrpcStatus, type Server, type ServerUnaryCall, type sendUnaryData } from '@grpc/grpc-js';
import { BuildControlService, type BuildControlServer, type CancelBuildRequest, type CancelBuildResponse } from '@imgbuilder/proto';
import { InvalidRequest } from '@imgbuilder/common/errors';
import type { Logger } from '@imgbuilder/common/logger';
import type { BuildCanceller } from '../control/build-canceller.js';
import type { ApiMetrics } from '../metrics.js';
import { admittedCaller } from './auth.js';
import { toServiceError } from './grpc-status.js';
import { addService, type Guard } from './server.js';

/** `imgbuilder.control.v1.BuildControl`: what builder.ImageBuilder (Gitpod's, unchanged) has no rpc for. */
export class BuildControl {
  constructor(
    private readonly canceller: BuildCanceller,
    private readonly metrics: ApiMetrics,
    private readonly log: Logger,
  ) {}

  register(server: Server, guard?: Guard): void {
    const impl: BuildControlServer = { cancelBuild: (call, cb) => void this.cancelBuild(call, cb) };
    addService(server, BuildControlService, impl, guard);
  }

  private async cancelBuild(call: ServerUnaryCall<CancelBuildRequest, CancelBuildResponse>, cb: sendUnaryData<CancelBuildResponse>): Promise<void> {
    const end = this.metrics.callStarted('CancelBuild');
    try {
      const { buildId, requestedBy } = call.request;
      if (!buildId) throw new InvalidRequest('give build_id (`imgbuilder ls` lists running builds)');
      const res = await this.canceller.cancel(buildId, admittedCaller(call.request), requestedBy);
      end('OK');
      cb(null, res);
    } catch (err) {
      const e = toServiceError(err, this.log, 'CancelBuild');
      end(GrpcStatus[e.code]);
      cb(e);
    }
  }
}
