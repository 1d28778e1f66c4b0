import { readFileSync } from 'node:fs';
import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { ImageBuilderServer } from '@imgbuilder/proto';
import { imageBuilderDefinition } from './log-encoding.js';
import type { Env } from '@imgbuilder/common/config';
import { HealthService } from './health-service.js';

/** Creates the gRPC server with transport limits and keepalives; services are added by the caller. */
export function createGrpcServer(env: Env): Server {
  return new Server({
    'grpc.max_receive_message_length': env.IMGBUILDER_MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': env.IMGBUILDER_MAX_MESSAGE_BYTES,
    'grpc.max_concurrent_streams': env.IMGBUILDER_MAX_CONCURRENT_STREAMS,
    // HTTP/2 pings keep idle streams (quiet build steps) alive through proxies and detect dead peers.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  });
}

/** Plaintext, TLS, or mutual TLS (a CA makes client certificates mandatory). */
export function serverCredentials(env: Env): ServerCredentials {
  if (!env.IMGBUILDER_TLS_CERT && !env.IMGBUILDER_TLS_KEY) return ServerCredentials.createInsecure();
  if (!env.IMGBUILDER_TLS_CERT || !env.IMGBUILDER_TLS_KEY) throw new Error('IMGBUILDER_TLS_CERT and IMGBUILDER_TLS_KEY must be set together');
  const read = (name: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`${name}: cannot read ${path}: ${(err as Error).message}`);
    }
  };
  const ca = env.IMGBUILDER_TLS_CA ? read('IMGBUILDER_TLS_CA', env.IMGBUILDER_TLS_CA) : null;
  return ServerCredentials.createSsl(ca, [{ cert_chain: read('IMGBUILDER_TLS_CERT', env.IMGBUILDER_TLS_CERT), private_key: read('IMGBUILDER_TLS_KEY', env.IMGBUILDER_TLS_KEY) }], ca !== null);
}

/** A gRPC service implementation, possibly wrapped by access-token checks (auth.ts). */
export type Guard = (definition: ServiceDefinition, impl: UntypedServiceImplementation) => UntypedServiceImplementation;

export function addImageBuilder(server: Server, impl: ImageBuilderServer, guard: Guard = (_d, i) => i): void {
  server.addService(imageBuilderDefinition, guard(imageBuilderDefinition as unknown as ServiceDefinition, impl as unknown as UntypedServiceImplementation));
}

export function bind(server: Server, addr: string, creds: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(addr, creds, (err, port) => (err ? reject(err) : resolve(port))));
}

export { HealthService };
