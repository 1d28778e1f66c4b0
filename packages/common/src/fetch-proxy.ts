import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { FetchRefused } from './errors.js';
import { fetchPolicy } from './fetch-policy.js';

/**
 * Git connects by itself (curl for http(s), its own sockets for git://, ssh), so it cannot be handed a checked
 * address the way node:http can. Every git run goes through this proxy in the same process instead, which resolves,
 * checks and connects to the checked address: http(s) through `http.proxy` (CONNECT tunnels and forwarded plain
 * requests, so every redirect git follows comes back here), git:// through `core.gitProxy` and ssh through
 * ProxyCommand, both with a small connector script that opens a CONNECT tunnel on its stdin/stdout. Child gits
 * (submodules) inherit the settings through the environment. Each run has its own token (the proxy's
 * credentials): nothing but this process's runs can use the proxy, and a refusal is told to the run that met it.
 */

/** One git run's use of the proxy. */
export interface ProxySession {
  /** Environment for git: proxy settings as GIT_CONFIG_* entries (GIT_CONFIG_COUNT is set), connector variables. */
  env: Record<string, string>;
  /** Settings git must get through the environment; the caller appends its own GIT_CONFIG_* entries after these. */
  config: [string, string][];
  /** The first connection the fetch policy refused during the run. */
  refusal(): FetchRefused | undefined;
  end(): void;
}

interface Session {
  what: string;
  refused?: FetchRefused;
}

/**
 * `<scheme>-connect HOST PORT` (git's core.gitProxy, ssh's ProxyCommand): a CONNECT tunnel on stdin/stdout, through
 * busybox's nc (the image and the local stack install busybox-static; a node process per connection cost ~0.1 s
 * of CPU). The proxy answers such tunnels with no status line, so nc needs to parse nothing; a refused one is closed.
 * The host is an argument, never evaluated by the shell. The script ends with nc, keeping none of its caller's pipes:
 * otherwise, on a refused tunnel, ssh would wait for its output while cat waited for ssh's input.
 */
const connector = (scheme: string) => `#!/bin/sh
case "$1" in *:*) t="[$1]:$2" ;; *) t="$1:$2" ;; esac
exec 3<&0
{ printf 'CONNECT %s HTTP/1.1\\r\\nHost: %s\\r\\nProxy-Authorization: Basic %s\\r\\nX-Imgbuilder-Connector: ${scheme}\\r\\n\\r\\n' "$t" "$t" "$IMGBUILDER_FETCH_PROXY_AUTH"; exec cat <&3 3<&-; } |
  busybox nc 127.0.0.1 "$IMGBUILDER_FETCH_PROXY_PORT" 3<&- &
exec 0<&- 1>&- 3<&-
wait $!
`;

const USER = 'imgbuilder';

class FetchProxy {
  private readonly sessions = new Map<string, Session>();
  private connectors?: { git: string; ssh: string };
  private readonly server: http.Server;
  port = 0;

  constructor() {
    this.server = http.createServer((req, res) => void this.forward(req, res));
    this.server.on('connect', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void this.tunnel(req, socket, head));
    this.server.on('clientError', (_err, socket) => socket.destroy());
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve, reject) => this.server.once('error', reject).listen(0, '127.0.0.1', resolve));
    this.server.unref();
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  session(what: string): ProxySession {
    const token = randomBytes(18).toString('base64url');
    const s: Session = { what };
    this.sessions.set(token, s);
    const c = this.connectorPaths();
    return {
      env: {
        IMGBUILDER_FETCH_PROXY_PORT: String(this.port),
        IMGBUILDER_FETCH_PROXY_AUTH: Buffer.from(`${USER}:${token}`).toString('base64'),
        GIT_SSH_COMMAND: `ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o 'ProxyCommand=${c.ssh} %h %p'`,
      },
      config: [
        ['http.proxy', `http://${USER}:${token}@127.0.0.1:${this.port}`],
        ['http.proxyAuthMethod', 'basic'],
        ['core.gitProxy', c.git],
      ],
      refusal: () => s.refused,
      end: () => this.sessions.delete(token),
    };
  }

  /** The connector programs, written once per process: git runs core.gitProxy as `<program> <host> <port>`. */
  private connectorPaths(): { git: string; ssh: string } {
    if (!this.connectors) {
      const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-fetch-proxy-'));
      const write = (scheme: string) => {
        const path = join(dir, `${scheme}-connect`);
        writeFileSync(path, connector(scheme));
        chmodSync(path, 0o700);
        return path;
      };
      this.connectors = { git: write('git'), ssh: write('ssh') };
    }
    return this.connectors;
  }

  private sessionOf(req: http.IncomingMessage): Session | undefined {
    const m = /^Basic (.+)$/i.exec(req.headers['proxy-authorization'] ?? '');
    const [user, token] = Buffer.from(m?.[1] ?? '', 'base64').toString().split(':');
    return token && user === USER ? this.sessions.get(token) : undefined;
  }

  /** Resolves and checks; a refusal is remembered for the run and answered 403. */
  private async target(s: Session, host: string, port: number, shown: string): Promise<{ address: string } | { status: number }> {
    try {
      return await fetchPolicy().resolve({ host, port, what: s.what, shown });
    } catch (err) {
      if (!(err instanceof FetchRefused)) return { status: 502 };
      s.refused ??= err;
      return { status: 403 };
    }
  }

  private async tunnel(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    // A connector's tunnel carries git's or ssh's bytes from the first: no status line, and a refusal just closes it.
    const connectorScheme = req.headers['x-imgbuilder-connector'];
    const reply = (status: number, text: string) =>
      connectorScheme ? socket.destroy() : socket.end(`HTTP/1.1 ${status} ${text}\r\n${status === 407 ? `Proxy-Authenticate: Basic realm="${USER}"\r\n` : ''}Content-Length: 0\r\n\r\n`);
    const s = this.sessionOf(req);
    if (!s) return void reply(407, 'Proxy Authentication Required');
    const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(req.url ?? '');
    if (!m) return void reply(400, 'Bad Request');
    const scheme = String(connectorScheme ?? 'https').replace(/[^a-z]/g, '');
    const t = await this.target(s, m[1], Number(m[2]), `${scheme}://${m[1]}:${m[2]}`);
    if ('status' in t) return void reply(t.status, t.status === 403 ? 'Refused by the fetch policy' : 'Bad Gateway');
    const upstream = net.connect(Number(m[2]), t.address, () => {
      if (!connectorScheme) socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', () => (upstream.connecting ? reply(502, 'Bad Gateway') : socket.destroy()));
    socket.on('close', () => upstream.destroy());
  }

  /** A plain http:// request git sends to the proxy (absolute URL): forwarded to the checked address. */
  private async forward(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const s = this.sessionOf(req);
    if (!s) return void res.writeHead(407, { 'proxy-authenticate': `Basic realm="${USER}"` }).end();
    let url: URL;
    try {
      url = new URL(req.url ?? '');
      if (url.protocol !== 'http:') throw new Error('not http');
    } catch {
      return void res.writeHead(400).end();
    }
    const port = Number(url.port || 80);
    const t = await this.target(s, url.hostname, port, `http://${url.host}${url.pathname}`);
    if ('status' in t) return void res.writeHead(t.status).end();
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    delete headers['proxy-connection'];
    const up = http.request({ host: t.address, port, method: req.method, path: url.pathname + url.search, headers, setHost: false }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    req.pipe(up);
  }
}

let shared: Promise<FetchProxy> | undefined;

/** A session of this process's fetch proxy (started on first use). */
export async function fetchProxySession(what: string): Promise<ProxySession> {
  shared ??= new FetchProxy().listen();
  return (await shared).session(what);
}
