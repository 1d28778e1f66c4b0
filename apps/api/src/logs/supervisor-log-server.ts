import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import statusGrpc from '@gitpod/supervisor-api-grpc/lib/status_grpc_pb.js';
import statusPb from '@gitpod/supervisor-api-grpc/lib/status_pb.js';
import terminalGrpc from '@gitpod/supervisor-api-grpc/lib/terminal_grpc_pb.js';
import terminalPb from '@gitpod/supervisor-api-grpc/lib/terminal_pb.js';
import { isTerminal } from '@imgbuilder/common/build-life';
import { AccessTokenRejected, BuildNotFound, TerminalNotFound } from '@imgbuilder/common/errors';
import type { Logger } from '@imgbuilder/common/logger';
import { readBuildLog, type BuildLogDeps } from './build-log.js';
import { toServiceError } from '../grpc/grpc-status.js';
import type { LogTokens } from './log-token.js';
import { LOG_TOKEN_HEADER, SUPERVISOR_API_PATH } from './log-info.js';
import { listenOn } from '@imgbuilder/common/listen';

/** The one task a build has; its terminal alias is the build id. */
const TASK_ID = 'image-build';
const WEBSOCKET_PROTOCOL = 'grpc-websockets';
/** A client that opens a socket and sends no request within this is dropped. */
const REQUEST_TIMEOUT_MS = 30_000;
const MAX_REQUEST_BYTES = 64 * 1024;
const CONTENT_TYPE = 'content-type: application/grpc-web+proto\r\n';

/** One gRPC-web call over a WebSocket, server side (the improbable-eng "grpc-websockets" framing). */
class WebSocketCall {
  private headersSent = false;
  private ended = false;
  private readonly abort = new AbortController();
  readonly signal = this.abort.signal;

  constructor(
    private readonly ws: WebSocket,
    private readonly slowClientTimeoutMs: number,
  ) {
    ws.once('close', () => this.abort.abort());
  }

  /** Sends one response message; resolves once the socket took it (back-pressure), drops a client that stalls. */
  send(message: Buffer): Promise<void> {
    if (this.ended || this.signal.aborted) return Promise.reject(new Error('call ended'));
    const frames = [this.headerFrame(), frame(0x00, message)].filter((f): f is Buffer => Boolean(f));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.ws.terminate();
        reject(new Error(`client read nothing for ${this.slowClientTimeoutMs / 1000}s; dropped`));
      }, this.slowClientTimeoutMs);
      this.ws.send(Buffer.concat(frames), (err) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      });
    });
  }

  /** Trailers (or, before any message, headers carrying the status), then the socket closes. */
  end(code: GrpcStatus, message = ''): void {
    if (this.ended) return;
    this.ended = true;
    if (this.signal.aborted) return;
    const trailer = `grpc-status: ${code}\r\ngrpc-message: ${encodeURIComponent(message)}\r\n`;
    // Nothing sent yet: one frame is both headers and status ("trailers-only"), as gRPC-web clients expect.
    const trailersOnly = !this.headersSent;
    this.headersSent = true;
    this.ws.send(frame(0x80, Buffer.from(trailersOnly ? `${CONTENT_TYPE}${trailer}` : trailer)), () => this.ws.close(1000));
  }

  /** The client reads the first 0x80 frame as response headers, a later one as trailers. */
  private headerFrame(): Buffer | undefined {
    if (this.headersSent) return undefined;
    this.headersSent = true;
    return frame(0x80, Buffer.from(CONTENT_TYPE));
  }
}

interface Route {
  method: string;
  deserialize: (payload: Buffer) => unknown;
  run: (request: unknown, buildId: string, call: WebSocketCall) => Promise<void>;
}

/** Where builds and their logs are read (the build store, log store and event hub), and how the endpoint serves them. */
export interface SupervisorLogServerOptions extends BuildLogDeps {
  /** Verifies the per-build token that log_info.headers carries (IMGBUILDER_LOG_INFO=supervisor). */
  tokens: LogTokens;
  log: Logger;
  /** A client that reads nothing this long is dropped (IMGBUILDER_SLOW_CLIENT_TIMEOUT, 2m). */
  slowClientTimeoutMs: number;
  /**
   * The dashboard's HTTP server when both listen on one address (IMGBUILDER_SUPERVISOR_ADDR equal to
   * IMGBUILDER_HTTP_ADDR, both 0.0.0.0:8081 by default): the WebSocket upgrades are served there; absent, the
   * endpoint listens on its own.
   */
  shared?: Server;
}

/**
 * The slice of Gitpod's workspace supervisor API that Gitpod's server uses to stream an image build's log into its
 * dashboard (HeadlessLogService.streamImageBuildLog): `StatusService.TasksStatus` lists one task whose terminal is
 * the build, `TerminalService.Listen` streams that build's log — replayed from the start, followed live, ending
 * with the build — over gRPC-web on WebSocket. The per-build token from log_info.headers authenticates each call;
 * everything else lives in Redis and the object store, so any API pod serves any build.
 */
export class SupervisorLogServer {
  private readonly http: Server;
  private readonly wss: WebSocketServer;
  private readonly routes: Map<string, Route>;

  private readonly deps: BuildLogDeps;
  private readonly tokens: LogTokens;
  private readonly slowClientTimeoutMs: number;
  private readonly log: Logger;
  private readonly shared?: Server;

  constructor(opts: SupervisorLogServerOptions) {
    ({ tokens: this.tokens, slowClientTimeoutMs: this.slowClientTimeoutMs, log: this.log, shared: this.shared } = opts);
    this.deps = opts;
    const tasksStatus = statusGrpc.StatusServiceService.tasksStatus;
    const listen = terminalGrpc.TerminalServiceService.listen;
    this.routes = new Map<string, Route>([
      [
        `${SUPERVISOR_API_PATH}${tasksStatus.path}`,
        {
          method: tasksStatus.path,
          deserialize: (b) => tasksStatus.requestDeserialize(b),
          run: (req, id, call) => this.tasksStatus(req as statusPb.TasksStatusRequest, id, call, (r) => tasksStatus.responseSerialize(r)),
        },
      ],
      [
        `${SUPERVISOR_API_PATH}${listen.path}`,
        {
          method: listen.path,
          deserialize: (b) => listen.requestDeserialize(b),
          run: (req, id, call) => this.listenTerminal(req as terminalPb.ListenTerminalRequest, id, call, (r) => listen.responseSerialize(r)),
        },
      ],
    ]);
    this.http = this.shared ?? createServer((_req, res) => {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`imgbuilder: only Gitpod's supervisor API over gRPC-web WebSockets is served here (${SUPERVISOR_API_PATH})\n`);
    });
    this.wss = new WebSocketServer({
      server: this.http,
      maxPayload: MAX_REQUEST_BYTES,
      handleProtocols: (protocols) => (protocols.has(WEBSOCKET_PROTOCOL) ? WEBSOCKET_PROTOCOL : false),
    });
    this.wss.on('connection', (ws, req) => this.accept(ws, req));
    this.wss.on('error', (err) => this.log.warn({ err: err.message }, 'supervisor endpoint error'));
  }

  /** Listens on `host:port`; resolves with the port. */
  listen(addr: string): Promise<number> {
    return listenOn(this.http, addr);
  }

  close(): void {
    for (const ws of this.wss.clients) ws.terminate();
    this.wss.close();
    if (!this.shared) this.http.close();
  }

  private accept(ws: WebSocket, req: IncomingMessage): void {
    const call = new WebSocketCall(ws, this.slowClientTimeoutMs);
    const route = this.routes.get((req.url ?? '').split('?')[0]);
    let headers: Record<string, string> | undefined;
    let body = Buffer.alloc(0);
    let started = false;
    const idle = setTimeout(() => call.end(GrpcStatus.DEADLINE_EXCEEDED, 'no request received'), REQUEST_TIMEOUT_MS);
    ws.on('close', () => clearTimeout(idle));
    ws.on('error', (err) => this.log.debug({ err: err.message }, 'supervisor endpoint: socket error'));
    ws.on('message', (data: RawData) => {
      if (started) return;
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      // The first message carries the call's metadata as HTTP/1 header lines; then 0x00 + gRPC frame, 0x01 = end of request.
      if (!headers) {
        headers = parseHeaderLines(buf.toString('latin1'));
        return;
      }
      if (buf[0] !== 0x00) return;
      body = Buffer.concat([body, buf.subarray(1)]);
      if (body.length < 5) return;
      const length = body.readUInt32BE(1);
      if (length > MAX_REQUEST_BYTES) return call.end(GrpcStatus.RESOURCE_EXHAUSTED, 'request too large');
      if (body.length < 5 + length) return;
      started = true;
      clearTimeout(idle);
      if (body[0] & 0x01) return call.end(GrpcStatus.UNIMPLEMENTED, 'compressed requests are not supported');
      void this.serve(route, body.subarray(5, 5 + length), { ...flatten(req.headers), ...headers }, call);
    });
  }

  private async serve(route: Route | undefined, payload: Buffer, headers: Record<string, string>, call: WebSocketCall): Promise<void> {
    if (!route) return call.end(GrpcStatus.UNIMPLEMENTED, `only ${[...this.routes.values()].map((r) => r.method).join(' and ')} are served here`);
    const buildId = this.tokens.verify(headers[LOG_TOKEN_HEADER]);
    // A finished build's tokens lapse IMGBUILDER_LOG_TOKEN_TTL_AFTER_END after its end, whatever their own expiry.
    const record = buildId ? await this.deps.store.get(buildId).catch(() => undefined) : undefined;
    const finishedAt = record?.finishedAt === undefined ? undefined : record.finishedAt * 1000;
    if (!buildId || this.tokens.endedTooLongAgo(finishedAt)) {
      const e = toServiceError(new AccessTokenRejected(`the log token (${LOG_TOKEN_HEADER}) is missing, invalid or expired: take a fresh one from BuildInfo.log_info.headers`), this.log, route.method);
      return call.end(e.code, e.details);
    }
    try {
      await route.run(route.deserialize(payload), buildId, call);
      call.end(GrpcStatus.OK);
    } catch (err) {
      if (call.signal.aborted) return;
      const e = toServiceError(err, this.log, route.method);
      call.end(e.code, e.details);
    }
  }

  private async tasksStatus(req: statusPb.TasksStatusRequest, buildId: string, call: WebSocketCall, encode: (r: statusPb.TasksStatusResponse) => Buffer): Promise<void> {
    // The stream's end, read before the record: an end the record does not show yet comes after it.
    const seen = req.getObserve() ? await this.deps.store.lastEventId(buildId) : undefined;
    const record = await this.deps.store.get(buildId);
    if (!record) throw new BuildNotFound(buildId);
    const response = (closed: boolean) => {
      const task = new statusPb.TaskStatus();
      task.setId(TASK_ID);
      task.setState(closed ? statusPb.TaskState.CLOSED : statusPb.TaskState.RUNNING);
      task.setTerminal(buildId);
      const presentation = new statusPb.TaskPresentation();
      presentation.setName('image build');
      task.setPresentation(presentation);
      const res = new statusPb.TasksStatusResponse();
      res.setTasksList([task]);
      return encode(res);
    };
    await call.send(response(isTerminal(record.state)));
    if (!req.getObserve() || isTerminal(record.state)) return;
    // Observers hear once more: when the build (the task) ends.
    for await (const e of this.deps.hub.events(buildId, call.signal, seen)) {
      if (e.kind === 'state' && isTerminal(e.state)) return call.send(response(true));
    }
  }

  private async listenTerminal(req: terminalPb.ListenTerminalRequest, buildId: string, call: WebSocketCall, encode: (r: terminalPb.ListenTerminalResponse) => Buffer): Promise<void> {
    if (req.getAlias() !== buildId) throw new TerminalNotFound(req.getAlias(), `terminal ${req.getAlias()} not found: the token grants build ${buildId}'s terminal`);
    const record = await this.deps.store.get(buildId);
    if (!record) throw new BuildNotFound(buildId);
    const log = readBuildLog(record, this.deps, call.signal);
    for await (const piece of log) {
      const res = new terminalPb.ListenTerminalResponse();
      res.setData(Buffer.isBuffer(piece) ? piece : Buffer.from(piece.text));
      await call.send(encode(res));
    }
    if (call.signal.aborted) return;
    // Like a task's terminal whose process exited: 0 when the build succeeded.
    const ended = log.ended ?? (await this.deps.store.get(buildId));
    const exit = new terminalPb.ListenTerminalResponse();
    exit.setExitCode(ended?.state === 'done_success' ? 0 : 1);
    await call.send(encode(exit));
  }
}

function frame(flags: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

function parseHeaderLines(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return out;
}

function flatten(h: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}
