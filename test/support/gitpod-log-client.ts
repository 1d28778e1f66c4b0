import grpcWeb from '@improbable-eng/grpc-web';
import type { Metadata } from '@improbable-eng/grpc-web/dist/typings/metadata';
import type { Transport, TransportFactory, TransportOptions } from '@improbable-eng/grpc-web/dist/typings/transports/Transport';
import WebSocket from 'ws';
import statusGrpc from '@gitpod/supervisor-api-grpc/lib/status_grpc_pb.js';
import statusPb from '@gitpod/supervisor-api-grpc/lib/status_pb.js';
import terminalGrpc from '@gitpod/supervisor-api-grpc/lib/terminal_grpc_pb.js';
import terminalPb from '@gitpod/supervisor-api-grpc/lib/terminal_pb.js';

const { grpc } = grpcWeb;

/**
 * What Gitpod's server does to stream an image build's log (HeadlessLogService.streamImageBuildLog), rebuilt
 * from the same parts: improbable-eng's gRPC-web client, a WebSocket transport on Node's `ws` that sends the
 * metadata both as upgrade headers and as the first message, supervisor's published message classes, the URL
 * with its path replaced by /_supervisor/v1, TasksStatus (no observe) and then Listen on the first task's terminal.
 */

/** A gRPC-web call's end: its status code and message. */
export interface CallEnd {
  code: number;
  message: string;
}

export class CallFailed extends Error {
  constructor(readonly end: CallEnd) {
    super(`upstream ended with status code: ${end.code} (${end.message})`);
  }
}

export function websocketTransport(): TransportFactory {
  return (opts: TransportOptions): Transport => {
    const url = opts.url.replace(/^http(s?):\/\//, 'ws$1://');
    const pending: (Uint8Array | 'finish')[] = [];
    let ws: WebSocket | undefined;
    const put = (item: Uint8Array | 'finish') => {
      if (!ws || ws.readyState !== WebSocket.OPEN) return void pending.push(item);
      ws.send(item === 'finish' ? Buffer.from([1]) : Buffer.concat([Buffer.from([0]), item]));
    };
    return {
      start(metadata: Metadata) {
        const headers: Record<string, string> = {};
        let lines = '';
        metadata.forEach((key, values) => {
          headers[key] = values.join(',');
          lines += `${key}: ${values.join(', ')}\r\n`;
        });
        ws = new WebSocket(url, ['grpc-websockets'], { headers });
        ws.binaryType = 'nodebuffer';
        ws.on('open', () => {
          ws!.send(Buffer.from(lines, 'latin1'));
          for (const item of pending.splice(0)) put(item);
        });
        ws.on('message', (data: Buffer) => opts.onChunk(new Uint8Array(data)));
        ws.on('close', () => opts.onEnd());
        ws.on('error', (err) => opts.onEnd(err));
      },
      sendMessage: (bytes: Uint8Array) => put(bytes),
      finishSend: () => put('finish'),
      cancel: () => ws?.close(),
    };
  };
}

/** improbable-eng method descriptors from the published service definitions (path `/<service>/<method>`) and message classes. */
function descriptor(path: string, requestType: unknown, responseType: unknown) {
  const [, serviceName, methodName] = path.split('/');
  return { methodName, service: { serviceName }, requestStream: false, responseStream: true, requestType, responseType } as never;
}

const TasksStatus = descriptor(statusGrpc.StatusServiceService.tasksStatus.path, statusPb.TasksStatusRequest, statusPb.TasksStatusResponse);
const Listen = descriptor(terminalGrpc.TerminalServiceService.listen.path, terminalPb.ListenTerminalRequest, terminalPb.ListenTerminalResponse);

export function toSupervisorUrl(logUrl: string): string {
  const u = new URL(logUrl);
  u.pathname = '/_supervisor/v1';
  // The client appends `/<service>/<method>` to the host it is given.
  return u.toString().replace(/\/$/, '');
}

/** A server-streaming call: messages until its end; rejects with CallFailed on a non-OK status. */
function serverStream<T>(
  method: never,
  host: string,
  request: unknown,
  headers: Record<string, string>,
  onMessage: (m: T, cancel: () => void) => void,
): { done: Promise<void>; cancel: () => void } {
  let cancel = () => {};
  const done = new Promise<void>((resolve, reject) => {
    const req = grpc.invoke(method, {
      request: request as never,
      host,
      metadata: new grpc.Metadata(headers),
      transport: websocketTransport(),
      onMessage: (m) => onMessage(m as T, cancel),
      onEnd: (code, message) => (code === grpc.Code.OK ? resolve() : reject(new CallFailed({ code, message }))),
    });
    cancel = () => {
      req.close();
      resolve();
    };
  });
  return { done, cancel: () => cancel() };
}

/** StatusService.TasksStatus without observe: the first answer, then the call is cancelled (as Gitpod does). */
export async function listTasks(logUrl: string, headers: Record<string, string>): Promise<statusPb.TaskStatus[]> {
  let tasks: statusPb.TaskStatus[] | undefined;
  const call = serverStream<statusPb.TasksStatusResponse>(TasksStatus, toSupervisorUrl(logUrl), new statusPb.TasksStatusRequest(), headers, (res, cancel) => {
    tasks ??= res.getTasksList();
    cancel();
  });
  await call.done;
  if (!tasks) throw new Error('TasksStatus ended without an answer');
  return tasks;
}

/**
 * The image build's log as Gitpod's server streams it: TasksStatus, then Listen on tasks[0].terminal until the stream
 * ends. `onData` sees every chunk as it arrives. Resolves with the whole text and how many exit codes came.
 */
export async function streamImageBuildLog(
  logInfo: { url: string; headers: Record<string, string> },
  onData: (chunk: string) => void = () => {},
): Promise<{ text: string; exitCodes: number[]; tasks: statusPb.TaskStatus[] }> {
  const tasks = await listTasks(logInfo.url, logInfo.headers);
  if (tasks.length === 0) throw new Error('imagebuild logs: no tasks');
  const req = new terminalPb.ListenTerminalRequest();
  req.setAlias(tasks[0].getTerminal());
  const decoder = new TextDecoder('utf-8');
  let text = '';
  const exitCodes: number[] = [];
  await serverStream<terminalPb.ListenTerminalResponse>(Listen, toSupervisorUrl(logInfo.url), req, logInfo.headers, (res) => {
    if (res.hasExitCode()) exitCodes.push(res.getExitCode());
    const raw = res.getData();
    const chunk = typeof raw === 'string' ? raw : decoder.decode(raw, { stream: true });
    text += chunk;
    onData(chunk);
  }).done;
  return { text, exitCodes, tasks };
}

/** Listen on an explicit alias (to show a token grants one build only). */
export function listen(logUrl: string, headers: Record<string, string>, alias: string): Promise<void> {
  const req = new terminalPb.ListenTerminalRequest();
  req.setAlias(alias);
  return serverStream(Listen, toSupervisorUrl(logUrl), req, headers, () => {}).done;
}
