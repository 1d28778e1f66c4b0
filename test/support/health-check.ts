import { Client, credentials, type ChannelCredentials } from '@grpc/grpc-js';
import { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';

/**
 * grpc.health.v1.Health/Check as a probe asks it (service "" is the server as a whole): the HealthCheckResponse status
 * (1 SERVING, 2 NOT_SERVING), or the call's error. Encoded by hand so the check owes nothing to the server's code.
 */
export function healthCheck(addr: string, service = '', creds: ChannelCredentials = credentials.createInsecure()): Promise<number> {
  const client = new Client(addr, creds);
  return new Promise<number>((resolve, reject) => {
    client.makeUnaryRequest(
      '/grpc.health.v1.Health/Check',
      (s: string) => Buffer.from(new BinaryWriter().uint32(10).string(s).finish()),
      (buf: Buffer) => {
        const r = new BinaryReader(buf);
        let st = 0;
        while (r.pos < r.len) {
          const tag = r.uint32();
          if (tag >>> 3 === 1) st = r.int32();
          else r.skip(tag & 7);
        }
        return st;
      },
      service,
      { deadline: Date.now() + 10_000 },
      (err, res) => (err ? reject(err) : resolve(res!)),
    );
  }).finally(() => client.close());
}
