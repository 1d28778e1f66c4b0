import { credentials, InterceptingCall, status, type ChannelCredentials, type ClientReadableStream, type Interceptor } from '@grpc/grpc-js';
import { expect } from 'vitest';
import {
  BuildRequest,
  ImageBuilderClient,
  LogsRequest,
  ResolveBaseImageRequest,
  ResolveWorkspaceImageRequest,
  type BuildResponse,
  type BuildSource,
  type ListBuildsResponse,
  type LogsResponse,
  type ResolveBaseImageResponse,
  type ResolveWorkspaceImageResponse,
} from '@imgbuilder/proto';

export function connect(addr: string, creds: ChannelCredentials = credentials.createInsecure()): ImageBuilderClient {
  return new ImageBuilderClient(addr, creds);
}

/** A client that sends `authorization` (e.g. `Bearer <token>`) on every call, as callers of a token-protected API do. */
export function connectAs(addr: string, authorization?: string): ImageBuilderClient {
  const interceptors: Interceptor[] = authorization
    ? [(options, next) => new InterceptingCall(next(options), { start: (md, listener, go) => (md.set('authorization', authorization), go(md, listener)) })]
    : [];
  return new ImageBuilderClient(addr, credentials.createInsecure(), { interceptors });
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


type Cb<T> = (err: Error | null, res?: T) => void;
const call = <T>(fn: (cb: Cb<T>) => unknown): Promise<T> => new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res as T))));

export const resolveWorkspace = (c: ImageBuilderClient, req: Parameters<typeof ResolveWorkspaceImageRequest.fromPartial>[0]) =>
  call<ResolveWorkspaceImageResponse>((cb) => c.resolveWorkspaceImage(ResolveWorkspaceImageRequest.fromPartial(req), cb));
export const resolveBase = (c: ImageBuilderClient, req: Parameters<typeof ResolveBaseImageRequest.fromPartial>[0]) =>
  call<ResolveBaseImageResponse>((cb) => c.resolveBaseImage(ResolveBaseImageRequest.fromPartial(req), cb));
export const listBuilds = (c: ImageBuilderClient) => call<ListBuildsResponse>((cb) => c.listBuilds({}, cb));

/** Expects INVALID_ARGUMENT from Build and from ResolveWorkspaceImage for `source`, with a message matching `text`. */
export async function refusedByApi(c: ImageBuilderClient, source: BuildSource, text: string | RegExp): Promise<void> {
  const match = { code: status.INVALID_ARGUMENT, details: expect.stringMatching(text) };
  await expect(build(c, { source })).rejects.toMatchObject(match);
  await expect(resolveWorkspace(c, { source })).rejects.toMatchObject(match);
}
