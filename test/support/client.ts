import { credentials, type ChannelCredentials, type ClientReadableStream } from '@grpc/grpc-js';
import { BuildRequest, ImageBuilderClient, LogsRequest, type BuildResponse, type LogsResponse } from '@imgbuilder/proto';

export function connect(addr: string, creds: ChannelCredentials = credentials.createInsecure()): ImageBuilderClient {
  return new ImageBuilderClient(addr, creds);
}

/** Collects a server stream until it ends; rejects with the gRPC error. Bounded by `timeoutMs`. */
export function collect<T>(stream: ClientReadableStream<T>, timeoutMs = 120_000): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const out: T[] = [];
    const timer = setTimeout(() => {
      stream.cancel();
      reject(new Error(`stream did not end within ${timeoutMs} ms; got ${out.length} messages`));
    }, timeoutMs);
    stream.on('data', (m: T) => out.push(m));
    stream.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    stream.on('end', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

export function build(client: ImageBuilderClient, req: Parameters<typeof BuildRequest.fromPartial>[0], timeoutMs?: number): Promise<BuildResponse[]> {
  return collect(client.build(BuildRequest.fromPartial(req)), timeoutMs);
}

export async function logs(client: ImageBuilderClient, req: Parameters<typeof LogsRequest.fromPartial>[0], timeoutMs?: number): Promise<string> {
  const msgs = await collect<LogsResponse>(client.logs(LogsRequest.fromPartial(req)), timeoutMs);
  return Buffer.concat(msgs.map((m) => Buffer.from(m.content))).toString('utf8');
}

export function unary<Req, Res>(fn: (req: Req, cb: (err: Error | null, res?: Res) => void) => unknown, req: Req): Promise<Res> {
  return new Promise((resolve, reject) => fn(req, (err, res) => (err ? reject(err) : resolve(res!))));
}
