import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** An OTLP/HTTP endpoint that takes every export and keeps only counts: the collector side of a traced stack. */
export interface OtlpSink {
  endpoint: string;
  /** Export requests and body bytes received so far. */
  requests: number;
  bytes: number;
  close(): void;
}

export async function startOtlpSink(): Promise<OtlpSink> {
  const sink = { endpoint: '', requests: 0, bytes: 0, close: () => server.close() };
  const server = createServer((req, res) => {
    req.on('data', (c: Buffer) => (sink.bytes += c.length));
    req.on('end', () => {
      sink.requests++;
      res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  sink.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return sink;
}
