import { readFileSync } from 'node:fs';
import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { ImageBuilderServer } from '@imgbuilder/proto';
import { imageBuilderDefinition } from './log-encoding.js';
import { HealthService } from './health-service.js';

export interface TransportLimits {
  /** Largest message accepted or sent (IMGBUILDER_MAX_MESSAGE_BYTES, 16MiB). */
  maxMessageBytes: number;
  /** Concurrent streams one connection may open (IMGBUILDER_MAX_CONCURRENT_STREAMS, 4096). */
  maxConcurrentStreams: number;
}

/** Files (paths) of the gRPC port's TLS; with a CA, clients must present a certificate it signed. */
export interface TlsFiles {
  /** IMGBUILDER_TLS_CERT */
  cert?: string;
  /** IMGBUILDER_TLS_KEY */
  key?: string;
  /** IMGBUILDER_TLS_CA */
  ca?: string;
}

/** Creates the gRPC server with transport limits and keepalives; services are added by the caller. */
export function createGrpcServer(limits: TransportLimits): Server {
  return new Server({
    'grpc.max_receive_message_length': limits.maxMessageBytes,
    'grpc.max_send_message_length': limits.maxMessageBytes,
    'grpc.max_concurrent_streams': limits.maxConcurrentStreams,
    // HTTP/2 pings keep idle streams (quiet build steps) alive through proxies and detect dead peers.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  });
}

/** Plaintext, TLS, or mutual TLS (a CA makes client certificates mandatory). */
export function serverCredentials(tls: TlsFiles): ServerCredentials {
  if (!tls.cert && !tls.key) return ServerCredentials.createInsecure();
  if (!tls.cert || !tls.key) throw new Error('IMGBUILDER_TLS_CERT and IMGBUILDER_TLS_KEY must be set together');
  const read = (name: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`${name}: cannot read ${path}: ${(err as Error).message}`);
    }
  };
  const ca = tls.ca ? read('IMGBUILDER_TLS_CA', tls.ca) : null;
  return ServerCredentials.createSsl(ca, [{ cert_chain: read('IMGBUILDER_TLS_CERT', tls.cert), private_key: read('IMGBUILDER_TLS_KEY', tls.key) }], ca !== null);
}

/** A gRPC service implementation, possibly wrapped by access-token checks (auth.ts). */
export type Guard = (definition: ServiceDefinition, impl: UntypedServiceImplementation) => UntypedServiceImplementation;

/**
 * Adds a service to the server, its handlers passed through `guard` first (none: as they are). The generated
 * definitions and handler maps are typed per service; grpc-js and the guards see them untyped.
 */
export function addService(server: Server, definition: object, impl: object, guard: Guard = (_d, i) => i): void {
  const untyped = definition as ServiceDefinition;
  server.addService(untyped, guard(untyped, impl as UntypedServiceImplementation));
}

export function addImageBuilder(server: Server, impl: ImageBuilderServer, guard?: Guard): void {
  addService(server, imageBuilderDefinition, impl, guard);
}

export function bind(server: Server, addr: string, creds: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => server.bindAsync(addr, creds, (err, port) => (err ? reject(err) : resolve(port))));
}

export { HealthService };
