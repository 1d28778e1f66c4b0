import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { StringDecoder } from 'node:string_decoder';
import { bearerToken, type AccessTokens, type Caller } from '@imgbuilder/common/access-tokens';
import type { BuildRecord } from '@imgbuilder/common/build-life';
import type { Logger } from '@imgbuilder/common/logger';
import type { ObjectStore } from '@imgbuilder/common/object-store';
import { readBuildLog, type BuildLogDeps } from '../logs/build-log.js';
import { traceIdOf, traceUrl } from '@imgbuilder/common/tracing';
import { toRow, type DashboardData } from './dashboard-data.js';
import { listenOn } from '@imgbuilder/common/listen';
import { DASHBOARD_ASSETS_DIR } from '../dashboard-assets.js';
import { SESSION_COOKIE, type DashboardSessions } from './session.js';
import { LoginLimiter } from './login-limiter.js';
import { HttpError, intParam, safeNext, textParam } from './request-input.js';
import { httpStatusOf } from './http-status.js';

const MAX_FORM_BYTES = 4096;
const MAX_LIST = 1000;
/** The largest piece of a log one "load earlier" request returns. */
const MAX_RANGE_BYTES = 4 * 1024 * 1024;
/** Byte offsets past this are no log's (IMGBUILDER_LOG_MAX_BYTES is far below). */
const MAX_LOG_OFFSET = 2 ** 40;
const SSE_HEARTBEAT_MS = 15_000;
const BUILD_ID = /^[0-9a-f-]{36}$/;

const ASSETS_DIR = DASHBOARD_ASSETS_DIR;
const ASSETS: Record<string, string> = {
  'app.js': 'text/javascript; charset=utf-8',
  'cancel-button.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};
const PAGES = ['builds.html', 'build.html', 'login.html'] as const;

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  // same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on the login form's POST.
  'referrer-policy': 'same-origin',
};

/** Where builds and their logs are read (the build store, log store and event hub), and how the dashboard serves them. */
export interface DashboardOptions extends BuildLogDeps {
  /** Where finished logs are read from and presigned. */
  objects: ObjectStore;
  data: DashboardData;
  log: Logger;
  /** Who may look: the tokens of IMGBUILDER_TOKENS_FILE, else IMGBUILDER_DASHBOARD_TOKEN as a viewer. */
  tokens: AccessTokens;
  /** What the login page exchanges a token for (the cookie). */
  sessions: DashboardSessions;
  /** How long a presigned link to a finished log stays valid (IMGBUILDER_LOG_URL_TTL, 1h). */
  logUrlTtlMs: number;
  /** Cancels a build for a caller (the Cancel button); rejects with the same errors as the CancelBuild rpc. */
  cancel: (buildId: string, caller: Caller) => Promise<{ cancelledBy: string; alreadyCancelled: boolean }>;
  /** A log stream that cannot send for this long is dropped, as gRPC drops a slow client (IMGBUILDER_SLOW_CLIENT_TIMEOUT). */
  slowClientTimeoutMs: number;
  /** Log streams one caller may hold open at once (IMGBUILDER_DASHBOARD_STREAMS_PER_CALLER). */
  maxStreamsPerCaller: number;
  /** IMGBUILDER_TRACE_URL: where a build's trace id links to (`{traceId}` filled in). */
  traceUrl?: string;
}

/**
 * The operators' dashboard: static pages shipped in apps/api/dashboard (no build step, nothing fetched from
 * elsewhere), a small JSON API over DashboardData, and each build's log over SSE (replayed from an offset, then
 * followed until the build ends). Every page and API call needs a token of role viewer or above, as a Bearer header
 * or the cookie the login page sets.
 */
export class DashboardServer {
  readonly http: Server;
  private readonly assets = new Map<string, Buffer>();

  private readonly deps: BuildLogDeps;
  private readonly objects: ObjectStore;
  private readonly data: DashboardData;
  private readonly log: Logger;
  private readonly logins = new LoginLimiter();
  /** Open log streams by caller name. */
  private readonly streams = new Map<string, number>();

  constructor(private readonly opts: DashboardOptions) {
    ({ objects: this.objects, data: this.data, log: this.log } = opts);
    this.deps = opts;
    for (const name of [...Object.keys(ASSETS), ...PAGES]) this.assets.set(name, readFileSync(new URL(name, ASSETS_DIR)));
    this.http = createServer((req, res) => {
      this.route(req, res).catch((err: Error) => {
        if (err instanceof HttpError) {
          if (!res.headersSent) json(res, err.status, { error: err.message }, err.headers);
          else res.destroy();
          return;
        }
        this.log.warn({ err: err.message, path: pathOf(req) }, 'dashboard request failed');
        if (!res.headersSent) json(res, 500, { error: 'internal error; see the API server log' });
        else res.destroy();
      });
    });
  }

  listen(addr: string): Promise<number> {
    return listenOn(this.http, addr);
  }

  close(): void {
    this.http.closeAllConnections();
    this.http.close();
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Only origin-form targets ("/path?query"); glued to a fixed origin so "//host/…" stays a path here.
    if (!req.url?.startsWith('/')) throw new HttpError(400, 'the request target must be a path');
    const url = new URL(`http://dashboard${req.url}`);
    const path = url.pathname;
    if (path.startsWith('/static/')) return this.asset(res, path.slice('/static/'.length));
    if (path === '/login' && req.method === 'GET') return this.page(res, 'login.html');
    if (path === '/login' && req.method === 'POST') return this.login(req, res);
    if (path === '/logout' && req.method === 'POST') {
      // Another site must not be able to end a session either.
      if (crossSite(req)) return json(res, 403, { error: 'cross-site logout refused' });
      res.writeHead(303, { ...SECURITY_HEADERS, location: '/login', 'set-cookie': this.opts.sessions.cookie('') }).end();
      return;
    }
    const cancel = /^\/api\/builds\/([^/]+)\/cancel$/.exec(path);
    if (req.method !== 'GET' && !(cancel && req.method === 'POST')) return json(res, 405, { error: 'method not allowed' });

    const caller = this.caller(req);
    const isApi = path.startsWith('/api/');
    if (!caller) {
      if (isApi) return json(res, 401, { error: 'send "authorization: Bearer <token>" or log in at /login' }, { 'www-authenticate': 'Bearer realm="imgbuilder"' });
      res.writeHead(302, { ...SECURITY_HEADERS, location: `/login?next=${encodeURIComponent(path + url.search)}` }).end();
      return;
    }

    if (cancel) return this.cancel(req, res, decodePathSegment(cancel[1]), caller);
    if (path === '/') return this.page(res, 'builds.html');
    const page = /^\/builds\/([^/]+)$/.exec(path);
    if (page) return this.page(res, 'build.html');
    if (path === '/api/whoami') return json(res, 200, caller);
    const q = url.searchParams;
    if (path === '/api/builds') {
      const limit = intParam(q, 'limit', 200, 1, MAX_LIST);
      return json(res, 200, await this.data.list({ status: textParam(q, 'status'), ref: textParam(q, 'ref'), id: textParam(q, 'id'), limit }));
    }
    if (path === '/api/charts') return json(res, 200, await this.data.charts());
    const m = /^\/api\/builds\/([^/]+)(\/log(\/range)?)?$/.exec(path);
    if (m) {
      const id = decodePathSegment(m[1]);
      const record = BUILD_ID.test(id) ? await this.deps.store.get(id) : undefined;
      if (!record) return json(res, 404, { error: `build ${id.slice(0, 64)} not found (finished builds are kept for IMGBUILDER_LOG_RETENTION)` });
      if (!m[2]) return this.buildDetail(res, record);
      if (!m[3]) return this.streamLog(req, res, record, intParam(q, 'from', 0, 0, MAX_LOG_OFFSET), caller);
      const start = intParam(q, 'start', 0, 0, MAX_LOG_OFFSET);
      return this.logRange(res, record, start, intParam(q, 'end', start, start, MAX_LOG_OFFSET));
    }
    json(res, 404, { error: 'not found' });
  }

  /** The Cancel button: same checks and outcome as the CancelBuild rpc, answered as JSON. */
  private async cancel(req: IncomingMessage, res: ServerResponse, id: string, caller: Caller): Promise<void> {
    // The session cookie is SameSite=Strict already; a request another site's page makes is refused outright as well.
    if (crossSite(req)) return json(res, 403, { error: 'cross-site request refused' });
    if (!BUILD_ID.test(id)) return json(res, 404, { error: `build ${id.slice(0, 64)} not found` });
    try {
      return json(res, 200, await this.opts.cancel(id, caller));
    } catch (err) {
      const code = httpStatusOf(err);
      if (code === undefined) throw err;
      return json(res, code, { error: (err as Error).message });
    }
  }

  /** The caller of a request: a Bearer header wins over the session cookie. */
  private caller(req: IncomingMessage): Caller | undefined {
    const token = bearerToken(req.headers.authorization);
    if (token) return this.opts.tokens.identify(token);
    return this.opts.sessions.verify(cookieValue(req.headers.cookie, SESSION_COOKIE));
  }

  /** Exchanges a token for a session cookie; the token itself is never stored in the browser, nor logged. */
  private async login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // A form posted from another site must not log this browser in (to the other site's token).
    if (crossSite(req)) return json(res, 403, { error: 'cross-site login refused' });
    const client = req.socket.remoteAddress ?? 'unknown';
    if (!this.logins.allows(client)) {
      this.log.warn({ client }, 'dashboard login refused: too many failed logins from this address');
      throw new HttpError(429, 'too many failed logins from this address; try again in a minute', { 'retry-after': String(this.logins.retryAfterS(client)) });
    }
    const form = new URLSearchParams(await readBody(req, MAX_FORM_BYTES));
    const token = (form.get('token') ?? '').trim();
    const next = safeNext(form.get('next'));
    const caller = token ? this.opts.tokens.identify(token) : undefined;
    if (!caller) {
      this.logins.failed(client);
      this.log.warn({ client }, 'dashboard login refused: the token is not valid here');
      const html = this.assets.get('login.html')!.toString('utf8').replace('<!--error-->', '<p class="error" role="alert">That token is not valid here.</p>');
      res.writeHead(401, { ...SECURITY_HEADERS, 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(html);
      return;
    }
    this.log.info({ caller: caller.name, client }, 'dashboard login');
    res.writeHead(303, { ...SECURITY_HEADERS, location: next, 'set-cookie': this.opts.sessions.cookie(this.opts.sessions.issue(caller)) }).end();
  }

  private page(res: ServerResponse, name: (typeof PAGES)[number]): void {
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(this.assets.get(name));
  }

  private asset(res: ServerResponse, name: string): void {
    const type = ASSETS[name];
    if (!type) return json(res, 404, { error: 'not found' });
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': type, 'cache-control': 'no-cache' }).end(this.assets.get(name));
  }

  private async buildDetail(res: ServerResponse, record: BuildRecord): Promise<void> {
    const [logUrl, logSize] = await Promise.all([
      this.objects.presignGet(record.logKey, this.opts.logUrlTtlMs).catch(() => ''),
      this.objects.size(record.logKey).catch(() => undefined),
    ]);
    const traceId = traceIdOf(record.traceparent);
    json(res, 200, { build: toRow(record), logUrl, logSize: logSize ?? 0, trace: traceId ? { id: traceId, url: traceUrl(this.opts.traceUrl, traceId) } : undefined });
  }

  /** Bytes [start, end) of the stored log, for "load earlier". */
  private async logRange(res: ServerResponse, record: BuildRecord, start: number, end: number): Promise<void> {
    start = Math.max(0, Math.floor(start));
    end = Math.min(Math.floor(end), start + MAX_RANGE_BYTES);
    const got = await this.objects.getRange(record.logKey, start, end);
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }).end(got.bytes);
  }

  /**
   * SSE: the log from byte `from` (the page asks for a tail window of a long log), followed until the build ends,
   * then an `end` event with the final state. Each `log` event is {t: text, n: its size in bytes}.
   */
  private async streamLog(req: IncomingMessage, res: ServerResponse, record: BuildRecord, from: number, caller: Caller): Promise<void> {
    const open = this.streams.get(caller.name) ?? 0;
    if (open >= this.opts.maxStreamsPerCaller) {
      throw new HttpError(429, `${caller.name} has ${open} log streams open, the most IMGBUILDER_DASHBOARD_STREAMS_PER_CALLER allows; close some`);
    }
    this.streams.set(caller.name, open + 1);
    const abort = new AbortController();
    req.once('close', () => abort.abort());
    res.once('close', () => abort.abort());
    abort.signal.addEventListener('abort', () => {
      const n = (this.streams.get(caller.name) ?? 1) - 1;
      if (n > 0) this.streams.set(caller.name, n);
      else this.streams.delete(caller.name);
    });
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
    res.write(': log\n\n');
    const heartbeat = setInterval(() => res.write(': keepalive\n\n'), SSE_HEARTBEAT_MS);
    const decoder = new StringDecoder('utf8');
    const send = async (bytes: Buffer) => {
      if (!bytes.length) return;
      const text = decoder.write(bytes);
      if (!res.write(`event: log\ndata: ${JSON.stringify({ t: text, n: bytes.length })}\n\n`)) await this.drained(res);
    };
    try {
      const log = readBuildLog(record, this.deps, abort.signal, Math.max(0, Math.floor(from)));
      for await (const piece of log) await send(Buffer.isBuffer(piece) ? piece : Buffer.from(piece.text));
      if (abort.signal.aborted) return;
      const ended = log.ended ?? (await this.deps.store.get(record.id)) ?? record;
      res.end(`event: end\ndata: ${JSON.stringify({ state: ended.state, message: ended.message })}\n\n`);
    } catch (err) {
      if (!abort.signal.aborted) res.end(`event: failure\ndata: ${JSON.stringify({ error: (err as Error).message })}\n\n`);
    } finally {
      clearInterval(heartbeat);
      // Ends the count of this stream too, however it ended.
      if (!abort.signal.aborted) abort.abort();
    }
  }

  /** Waits until `res` takes more; a client that reads nothing for the slow-client timeout is dropped. */
  private drained(res: ServerResponse): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.log.info({ timeoutMs: this.opts.slowClientTimeoutMs }, 'slow dashboard log client dropped');
        res.destroy();
      }, this.opts.slowClientTimeoutMs);
      const done = () => {
        clearTimeout(timer);
        res.off('drain', done);
        res.off('close', done);
        resolve();
      };
      res.once('drain', done);
      res.once('close', done);
    });
  }
}

function json(res: ServerResponse, code: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(code, { ...SECURITY_HEADERS, 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...headers }).end(JSON.stringify(body));
}

function readBody(req: IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size > max) {
        reject(new HttpError(413, `the form is larger than ${max} bytes`));
        req.destroy();
      } else parts.push(d);
    });
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) {
      try {
        return decodeURIComponent(part.slice(i + 1).trim()) || undefined;
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** A path segment, percent-decoded; malformed encoding (`%ff%fe`, a lone `%`) is the client's error. */
function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, 'malformed percent-encoding in the path');
  }
}

/** A request a browser sent from another site: its Origin is not this host, or Fetch Metadata says so. */
function crossSite(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin !== undefined && hostOf(origin) !== req.headers.host) return true;
  const site = req.headers['sec-fetch-site'];
  return site === 'cross-site' || site === 'same-site';
}

function hostOf(origin: string): string | undefined {
  try {
    return new URL(origin).host;
  } catch {
    return undefined;
  }
}

const pathOf = (req: IncomingMessage) => (req.url ?? '').split('?')[0];
