import http2 from 'node:http2';

/**
 * A gRPC server-streaming call over bare HTTP/2. Unlike @grpc/grpc-js, whose client keeps reading the transport
 * into memory while the application is paused, a paused bare stream stops granting flow-control window: the only
 * way to play a client that truly stops reading.
 */
export function rawServerStream(addr: string, path: string, request: Uint8Array, onData?: (d: Buffer) => void) {
  const session = http2.connect(`http://${addr}`);
  const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
  const frame = Buffer.alloc(5 + request.length);
  frame.writeUInt32BE(request.length, 1);
  Buffer.from(request).copy(frame, 5);
  req.end(frame);
  const trailers = new Promise<{ status: number; message: string; bytes: number }>((resolve, reject) => {
    let bytes = 0;
    let headers: http2.IncomingHttpHeaders = {};
    req.on('response', (h) => (headers = h));
    req.on('data', (d: Buffer) => {
      bytes += d.length;
      onData?.(d);
    });
    req.on('trailers', (t) => resolve({ status: Number(t['grpc-status']), message: decodeURIComponent(String(t['grpc-message'] ?? '')), bytes }));
    req.on('end', () => resolve({ status: Number(headers['grpc-status'] ?? -1), message: decodeURIComponent(String(headers['grpc-message'] ?? '')), bytes }));
    req.on('error', reject);
  });
  return {
    pause: () => req.pause(),
    resume: () => req.resume(),
    /** Resolves with the call's grpc-status and message once the stream ends. */
    trailers,
    close: () => session.close(),
  };
}
