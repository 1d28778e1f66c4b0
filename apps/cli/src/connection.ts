import { readFileSync } from 'node:fs';
import { credentials, InterceptingCall, Metadata, type CallOptions, type Interceptor, type ChannelCredentials, type ChannelOptions } from '@grpc/grpc-js';
import { BuildCacheClient, BuildControlClient, ImageBuilderClient, SnapshotUploadClient } from '@imgbuilder/proto';
import { usageError } from './cli-error.js';

/** Connection options every command takes (flags or environment variables). */
export interface ConnectionOptions {
  server: string;
  tls?: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
  /** Access token sent as `authorization: Bearer` on every call (APIs started with IMGBUILDER_TOKENS_FILE). */
  token?: string;
}

/** The services of one API, over one channel (one connection, one TLS session). */
export interface Connection {
  server: string;
  builder: ImageBuilderClient;
  uploads: SnapshotUploadClient;
  control: BuildControlClient;
  cache: BuildCacheClient;
  /** A token is sent: the server knows the caller, so builds leave triggered_by to it (the token's name). */
  authenticated: boolean;
  close(): void;
}

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^:\s/]+):\d{1,5}$/;

export function connect(opts: ConnectionOptions): Connection {
  if (!HOST_PORT.test(opts.server)) throw usageError(`--server "${opts.server}" is not HOST:PORT`);
  const channelOptions: ChannelOptions = {
    // Quiet build steps leave Logs streams idle for minutes: pings keep them alive through proxies.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
  };
  if (opts.tlsServerName) {
    channelOptions['grpc.ssl_target_name_override'] = opts.tlsServerName;
    channelOptions['grpc.default_authority'] = opts.tlsServerName;
  }
  // An interceptor rather than call credentials: grpc-js refuses call credentials on plaintext channels, and a
  // token behind a TLS-terminating proxy is a legitimate setup.
  const interceptors = opts.token ? [bearerInterceptor(opts.token)] : [];
  const builder = new ImageBuilderClient(opts.server, channelCredentials(opts), { ...channelOptions, interceptors });
  const uploads = new SnapshotUploadClient(opts.server, credentials.createInsecure(), { channelOverride: builder.getChannel(), interceptors });
  const control = new BuildControlClient(opts.server, credentials.createInsecure(), { channelOverride: builder.getChannel(), interceptors });
  const cache = new BuildCacheClient(opts.server, credentials.createInsecure(), { channelOverride: builder.getChannel(), interceptors });
  return {
    server: opts.server,
    builder,
    uploads,
    control,
    cache,
    authenticated: Boolean(opts.token),
    close: () => builder.close(),
  };
}

function bearerInterceptor(token: string): Interceptor {
  if (!/^[\x21-\x7e]+$/.test(token)) throw usageError('--token / IMGBUILDER_TOKEN must be printable ASCII without spaces');
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/** Plaintext unless a TLS option is given; a CA alone means TLS, a certificate and key add mutual TLS. */
function channelCredentials(opts: ConnectionOptions): ChannelCredentials {
  const wantsTls = Boolean(opts.tls || opts.tlsCa || opts.tlsCert || opts.tlsKey || opts.tlsServerName);
  if (!wantsTls) return credentials.createInsecure();
  if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) throw usageError('--tls-cert and --tls-key must be given together');
  const read = (flag: string, path: string | undefined) => {
    if (!path) return null;
    try {
      return readFileSync(path);
    } catch (err) {
      throw usageError(`${flag}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  return credentials.createSsl(read('--tls-ca', opts.tlsCa), read('--tls-key', opts.tlsKey), read('--tls-cert', opts.tlsCert));
}

/** Resolves a callback-style unary call; rejects with the gRPC error. Bounded by a deadline. */
export function unary<Req, Res>(
  fn: (req: Req, md: Metadata, opts: Partial<CallOptions>, cb: (err: Error | null, res?: Res) => void) => unknown,
  req: Req,
  timeoutMs = 120_000,
): Promise<Res> {
  return new Promise((resolve, reject) => fn(req, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res!))));
}
