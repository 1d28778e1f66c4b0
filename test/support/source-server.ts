import { spawn } from 'node:child_process';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SeenRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
}

/**
 * A loopback HTTP server for source tests: git over smart HTTP (`git http-backend`) behind Basic auth, one-time
 * secrets (the first GET answers, later ones 404), static files and redirects. It records every request.
 */
export class SourceServer {
  readonly requests: SeenRequest[] = [];
  private readonly files = new Map<string, Buffer>();
  private readonly redirects = new Map<string, string>();
  private readonly ots = new Map<string, { value: string; hits: number }>();

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  /** Serves the repositories under `gitRoot` at /git/<name>, for `user`/`password` only. */
  static async start(gitRoot: string, user: string, password: string): Promise<SourceServer> {
    let self: SourceServer | undefined;
    const expected = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://localhost');
      self!.requests.push({ method: req.method ?? '', path: url.pathname, headers: req.headers });
      if (url.pathname.startsWith('/git/')) {
        if (req.headers.authorization !== expected) {
          res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="imgbuilder-test"' }).end();
          return;
        }
        const child = spawn('git', ['http-backend'], {
          env: {
            PATH: process.env.PATH,
            GIT_PROJECT_ROOT: gitRoot,
            GIT_HTTP_EXPORT_ALL: '1',
            PATH_INFO: url.pathname.slice('/git'.length),
            QUERY_STRING: url.search.slice(1),
            REQUEST_METHOD: req.method,
            CONTENT_TYPE: req.headers['content-type'] ?? '',
            HTTP_CONTENT_ENCODING: req.headers['content-encoding'] ?? '',
            GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
            REMOTE_USER: user,
            REMOTE_ADDR: '127.0.0.1',
          },
          stdio: ['pipe', 'pipe', 'ignore'],
        });
        req.pipe(child.stdin);
        let head = Buffer.alloc(0);
        let headerDone = false;
        child.stdout.on('data', (chunk: Buffer) => {
          if (headerDone) return void res.write(chunk);
          head = Buffer.concat([head, chunk]);
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) return;
          headerDone = true;
          let status = 200;
          for (const line of head.subarray(0, end).toString().split('\r\n')) {
            const i = line.indexOf(':');
            const k = line.slice(0, i).trim();
            const v = line.slice(i + 1).trim();
            if (k.toLowerCase() === 'status') status = Number(v.split(' ')[0]);
            else res.setHeader(k, v);
          }
          res.writeHead(status);
          res.write(head.subarray(end + 4));
        });
        child.on('close', () => res.end());
        return;
      }
      const ots = self!.ots.get(url.pathname);
      if (ots) {
        ots.hits++;
        if (ots.hits > 1) return void res.writeHead(404).end('used');
        return void res.writeHead(200, { 'content-type': 'text/plain' }).end(ots.value);
      }
      const to = self!.redirects.get(url.pathname);
      if (to) return void res.writeHead(302, { location: to }).end();
      const file = self!.files.get(url.pathname);
      if (file) return void res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(file);
      res.writeHead(404).end('not found');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    self = new SourceServer(server, (server.address() as AddressInfo).port);
    return self;
  }

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  gitUrl(repo: string): string {
    return `${this.base}/git/${repo}`;
  }

  file(path: string, content: string | Buffer): string {
    this.files.set(path, Buffer.from(content));
    return this.base + path;
  }

  redirect(path: string, to: string): string {
    this.redirects.set(path, to);
    return this.base + path;
  }

  /** A one-time secret URL answering `value` once. */
  oneTimeSecret(path: string, value: string): string {
    this.ots.set(path, { value, hits: 0 });
    return this.base + path;
  }

  otsHits(path: string): number {
    return this.ots.get(path)?.hits ?? 0;
  }

  stop(): void {
    this.server.closeAllConnections();
    this.server.close();
  }
}
