import { randomBytes, timingSafeEqual } from 'node:crypto';
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
 * ProxyCommand, both with a small connector program that opens a CONNECT tunnel on its stdin/stdout. Child gits
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

/** node <connector> <scheme> <host> <port>: a CONNECT tunnel through the proxy, joined to stdin/stdout. */
const CONNECTOR = `'use strict';
const net = require('net');
const [scheme, host, port] = process.argv.slice(2);
const fail = (text) => { process.stderr.write(text + '\\n'); process.exit(1); };
const s = net.connect(Number(process.env.IMGBUILDER_FETCH_PROXY_PORT), '127.0.0.1', () => {
  const target = host.includes(':') ? '[' + host + ']:' + port : host + ':' + port;
  s.write('CONNECT ' + target + ' HTTP/1.1\\r\\nHost: ' + target + '\\r\\nProxy-Authorization: Basic ' + process.env.IMGBUILDER_FETCH_PROXY_AUTH + '\\r\\nX-Imgbuilder-Scheme: ' + scheme + '\\r\\n\\r\\n');
});
let head = Buffer.alloc(0);
const onHead = (d) => {
  head = Buffer.concat([head, d]);
  const end = head.indexOf('\\r\\n\\r\\n');
  if (end < 0) return;
  s.off('data', onHead);
  if (!/^HTTP\\/1\\.[01] 200/.test(head.toString('latin1', 0, 16))) fail('the fetch policy refused ' + scheme + '://' + host + ':' + port);
  if (head.length > end + 4) process.stdout.write(head.subarray(end + 4));
  s.pipe(process.stdout);
  process.stdin.pipe(s);
};
s.on('data', onHead);
s.on('error', (e) => fail('fetch proxy: ' + e.message));
s.on('close', () => process.exit(0));
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

  /** Shell wrappers for the connector: git runs core.gitProxy as `<program> <host> <port>`, without a shell. */
  private connectorPaths(): { git: string; ssh: string } {
    if (!this.connectors) {
      const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-fetch-proxy-'));
      writeFileSync(join(dir, 'connect.cjs'), CONNECTOR);
      const wrapper = (scheme: string) => {
        const path = join(dir, `${scheme}-connect`);
        writeFileSync(path, `#!/bin/sh\nexec '${process.execPath}' '${join(dir, 'connect.cjs')}' ${scheme} "$@"\n`);
        chmodSync(path, 0o700);
        return path;
      };
      this.connectors = { git: wrapper('git'), ssh: wrapper('ssh') };
    }
    return this.connectors;
  }

  private sessionOf(req: http.IncomingMessage): Session | undefined {
    const m = /^Basic (.+)$/i.exec(req.headers['proxy-authorization'] ?? '');
    const [user, token] = Buffer.from(m?.[1] ?? '', 'base64').toString().split(':');
    if (!token || user !== USER) return undefined;
    for (const [t, s] of this.sessions) if (t.length === token.length && timingSafeEqual(Buffer.from(t), Buffer.from(token))) return s;
    return undefined;
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
    const reply = (status: number, text: string) => socket.end(`HTTP/1.1 ${status} ${text}\r\n${status === 407 ? `Proxy-Authenticate: Basic realm="${USER}"\r\n` : ''}Content-Length: 0\r\n\r\n`);
    const s = this.sessionOf(req);
    if (!s) return void reply(407, 'Proxy Authentication Required');
    const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(req.url ?? '');
    if (!m) return void reply(400, 'Bad Request');
    const scheme = String(req.headers['x-imgbuilder-scheme'] ?? 'https').replace(/[^a-z]/g, '');
    const t = await this.target(s, m[1], Number(m[2]), `${scheme}://${m[1]}:${m[2]}`);
    if ('status' in t) return void reply(t.status, t.status === 403 ? 'Refused by the fetch policy' : 'Bad Gateway');
    const upstream = net.connect(Number(m[2]), t.address, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
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
