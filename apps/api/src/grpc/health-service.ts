import type { Server, ServerUnaryCall, ServerWritableStream, sendUnaryData } from '@grpc/grpc-js';
import { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';
import { probe } from '@imgbuilder/common/health-server';
import { quote } from '@imgbuilder/common/client-text';
import { UnknownService } from '@imgbuilder/common/errors';
import { domainServiceError } from './grpc-status.js';

/** grpc.health.v1 serving status values. */
const SERVING = 1;
const NOT_SERVING = 2;
const SERVICE_UNKNOWN = 3;

interface CheckRequest {
  service: string;
}

// The health protocol is two tiny messages; encoding them by hand avoids vendoring health.proto.
const decodeRequest = (buf: Buffer): CheckRequest => {
  const r = new BinaryReader(buf);
  let service = '';
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag >>> 3 === 1) service = r.string();
    else r.skip(tag & 7);
  }
  return { service };
};
const encodeResponse = (s: number): Buffer => Buffer.from(new BinaryWriter().uint32(8).int32(s).finish());

/** The standard `grpc.health.v1.Health` service; readiness is decided by a probe (Redis reachable). */
export class HealthService {
  constructor(
    private readonly services: string[],
    private readonly probe: () => Promise<boolean>,
  ) {}

  register(server: Server): void {
    const passthrough = (x: Buffer) => x;
    server.addService(
      {
        Check: {
          path: '/grpc.health.v1.Health/Check',
          requestStream: false,
          responseStream: false,
          requestSerialize: passthrough,
          requestDeserialize: decodeRequest,
          responseSerialize: encodeResponse,
          responseDeserialize: passthrough,
        },
        Watch: {
          path: '/grpc.health.v1.Health/Watch',
          requestStream: false,
          responseStream: true,
          requestSerialize: passthrough,
          requestDeserialize: decodeRequest,
          responseSerialize: encodeResponse,
          responseDeserialize: passthrough,
        },
      },
      {
        Check: (call: ServerUnaryCall<CheckRequest, number>, cb: sendUnaryData<number>) => {
          if (call.request.service && !this.services.includes(call.request.service)) {
            cb(domainServiceError(new UnknownService(call.request.service, `unknown service ${quote(call.request.service)}`)));
            return;
          }
          // probe() never rejects: a failing or slow check answers NOT_SERVING.
          void probe(this.probe).then((ok) => cb(null, ok ? SERVING : NOT_SERVING));
        },
        Watch: (call: ServerWritableStream<CheckRequest, number>) => {
          if (call.request.service && !this.services.includes(call.request.service)) {
            call.write(SERVICE_UNKNOWN);
            return;
          }
          let last = -1;
          const tick = () =>
            probe(this.probe).then((ok) => {
                const s = ok ? SERVING : NOT_SERVING;
                if (s !== last) {
                  last = s;
                  call.write(s);
                }
              });
          void tick();
          const timer = setInterval(tick, 5_000);
          call.on('cancelled', () => clearInterval(timer));
          call.on('close', () => clearInterval(timer));
        },
      },
    );
  }
}
