import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A plain HTTP proxy in front of an S3-compatible store that counts the body bytes of every PUT (whole objects and
 * multipart parts alike) per object path: what a build's log costs in uploads. Loopback only.
 */
export class S3PutCounter {
  private constructor(
    private readonly server: Server,
    readonly endpoint: string,
    private readonly bytes: Map<string, number>,
  ) {}

  static async start(upstream: string): Promise<S3PutCounter> {
    const target = new URL(upstream);
    const counts = new Map<string, number>();
    const server = createServer((req, res) => {
      const path = decodeURIComponent((req.url ?? '/').split('?')[0]);
      if (req.method === 'PUT') req.on('data', (c: Buffer) => counts.set(path, (counts.get(path) ?? 0) + c.length));
      const up = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return new S3PutCounter(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`, counts);
  }

  /** Bytes PUT so far to objects whose path (`/bucket/key`) ends with `suffix`. */
  putBytes(suffix: string): number {
    let n = 0;
    for (const [path, b] of this.bytes) if (path.endsWith(suffix)) n += b;
    return n;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
