/**
 * A client process of the `streams` scenario (forked by it, so thousands of client streams do not share one event
 * loop with the bench): opens the Build and Logs streams it is told to over a few connections, reports once every
 * stream has its first message, and reports again once every stream has ended.
 */
import { BuildRequest, BuildStatus, LogsRequest, type BuildResponse, type BuildSource, type ImageBuilderClient, type LogsResponse } from '@imgbuilder/proto';
import { clients, isTerminal } from './grpc.js';

export interface StreamClientOrder {
  addr: string;
  connections: number;
  /**
   * Per build: its source (for Build calls that join it), its id (for Logs calls), the line its log ends with, and
   * how many Build and Logs streams this process opens on it.
   */
  builds: { source: BuildSource; buildId: string; lastLine: string; buildStreams: number; logsStreams: number }[];
}

export type StreamClientReport =
  | { type: 'open'; build: number; logs: number }
  | { type: 'done'; buildOk: number; logsOk: number; failures: number; failureSamples: string[]; pending: number; logsMessages: number; logsBytes: number }
  | { type: 'error'; message: string };

/** One stream's outcome: undefined when it completed as it should, else why not. */
type Outcome = Promise<string | undefined>;

function buildStream(c: ImageBuilderClient, source: BuildSource, opened: () => void): Outcome {
  return new Promise((resolve) => {
    const stream = c.build(BuildRequest.fromPartial({ source, triggeredBy: 'bench-streams' }));
    let first = true;
    let terminal: BuildResponse | undefined;
    stream.on('data', (m: BuildResponse) => {
      if (first) {
        first = false;
        opened();
      }
      if (isTerminal(m.status)) terminal = m;
    });
    stream.on('error', (e: Error) => resolve(`Build: ${e.message}`));
    stream.on('end', () => {
      if (!terminal) resolve('Build: ended without a terminal status');
      else resolve(terminal.status === BuildStatus.done_success ? undefined : `Build: ${BuildStatus[terminal.status]} ${terminal.message}`);
    });
  });
}

/** Messages and bytes every Logs stream of this process received. */
const received = { messages: 0, bytes: 0 };

function logsStream(c: ImageBuilderClient, buildId: string, lastLine: string, opened: () => void): Outcome {
  return new Promise((resolve) => {
    const stream = c.logs(LogsRequest.fromPartial({ buildId }));
    let first = true;
    // Only the tail is kept: the last line may straddle two messages.
    let tail = '';
    stream.on('data', (m: LogsResponse) => {
      if (first) {
        first = false;
        opened();
      }
      received.messages++;
      received.bytes += m.content.length;
      tail = (tail + Buffer.from(m.content).toString('utf8')).slice(-4096);
    });
    stream.on('error', (e: Error) => resolve(`Logs: ${e.message}`));
    stream.on('end', () => resolve(tail.includes(lastLine) ? undefined : `Logs: ended without the build's last line (${JSON.stringify(tail.slice(-120))})`));
  });
}

/** Streams opened at a time, and how long a wave may take before the next starts anyway. */
const WAVE = 250;
const WAVE_WAIT_MS = 20_000;

/** The items of `rare` spread evenly among those of `common`. */
function interleave<T>(rare: T[], common: T[]): T[] {
  const every = Math.ceil(common.length / Math.max(1, rare.length));
  const out: T[] = [];
  for (let i = 0; i < Math.max(rare.length, Math.ceil(common.length / every)); i++) {
    if (i < rare.length) out.push(rare[i]);
    out.push(...common.slice(i * every, (i + 1) * every));
  }
  return out;
}

async function run(order: StreamClientOrder): Promise<void> {
  const send = (r: StreamClientReport) => process.send!(r);
  const cs = await clients([order.addr], order.connections);
  const total = order.builds.reduce((n, b) => n + b.buildStreams + b.logsStreams, 0);
  let open = { build: 0, logs: 0 };
  const opened = (kind: 'build' | 'logs') => () => {
    open = { ...open, [kind]: open[kind] + 1 };
    if (open.build + open.logs === total) send({ type: 'open', ...open });
  };
  const starts: { kind: 'build' | 'logs'; start: (c: ImageBuilderClient, opened: () => void) => Outcome }[] = [];
  for (const b of order.builds) {
    for (let i = 0; i < b.buildStreams; i++) starts.push({ kind: 'build', start: (c, o) => buildStream(c, b.source, o) });
    for (let i = 0; i < b.logsStreams; i++) starts.push({ kind: 'logs', start: (c, o) => logsStream(c, b.buildId, b.lastLine, o) });
  }
  // Interleaved (Build and Logs, every build) and in waves, each opened before the next starts: on a loaded machine
  // a burst of thousands of calls keeps this process from reading what the first ones receive for minutes.
  const mixed = interleave(
    starts.filter((x) => x.kind === 'build'),
    starts.filter((x) => x.kind === 'logs'),
  );
  const outcomes: Outcome[] = [];
  const kinds = mixed.map((x) => x.kind);
  for (let from = 0; from < mixed.length; from += WAVE) {
    const wave = mixed.slice(from, from + WAVE).map((x, i) => {
      let first!: () => void;
      const firstOrEnd = new Promise<void>((r) => (first = r));
      const outcome = x.start(cs[(from + i) % cs.length], () => {
        first();
        opened(x.kind)();
      });
      void outcome.then(first);
      outcomes.push(outcome);
      return firstOrEnd;
    });
    // Bounded: one call that hangs must not hold back every later one (the bench reports it as never opened).
    await Promise.race([Promise.all(wave), new Promise((r) => setTimeout(r, WAVE_WAIT_MS).unref())]);
  }
  // Settled outcomes by index; 'pending' until a stream ends.
  const results: (string | undefined | 'pending')[] = outcomes.map(() => 'pending');
  outcomes.forEach((o, i) => void o.then((r) => (results[i] = r)));
  const report = (): StreamClientReport => {
    const failures = results.filter((r): r is string => r !== undefined && r !== 'pending');
    return {
      type: 'done',
      buildOk: results.filter((r, i) => r === undefined && kinds[i] === 'build').length,
      logsOk: results.filter((r, i) => r === undefined && kinds[i] === 'logs').length,
      failures: failures.length,
      failureSamples: [...new Set(failures)].slice(0, 5),
      pending: results.filter((r) => r === 'pending').length,
      logsMessages: received.messages,
      logsBytes: received.bytes,
    };
  };
  // Asked before every stream ended (the bench's wait ran out): what it has so far.
  process.on('message', (m: unknown) => m === 'report' && send(report()));
  await Promise.all(outcomes);
  send(report());
  for (const c of cs) c.close();
}

process.once('message', (order: StreamClientOrder) => {
  run(order).then(
    () => process.disconnect(),
    (err: unknown) => {
      process.send!({ type: 'error', message: (err as Error).message } satisfies StreamClientReport);
      process.disconnect();
    },
  );
});
