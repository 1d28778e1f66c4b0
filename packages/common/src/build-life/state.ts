/** Lifecycle of a build as stored in Redis. `queued` is reported to clients as `running`. */
export type BuildState = 'queued' | 'running' | 'done_success' | 'done_failure';

/** The states a build never leaves. The Lua scripts get the same set (scripts.ts writes it into each one). */
export const TERMINAL_STATES = ['done_success', 'done_failure'] as const;
export type TerminalState = (typeof TERMINAL_STATES)[number];

export const isTerminal = (s: BuildState | string): s is TerminalState => (TERMINAL_STATES as readonly string[]).includes(s);

export interface BuildRecord {
  id: string;
  ref: string;
  baseRef: string;
  state: BuildState;
  /** Unix seconds. */
  startedAt: number;
  message: string;
  /** Object key of the build's log in the log bucket. */
  logKey: string;
  triggeredBy: string;
  finishedAt?: number;
  /** Unix ms: when a worker took the build, when its source was ready and the image build began, when pushing began. */
  runningAt?: number;
  buildAt?: number;
  pushAt?: number;
  /** The object store was down when the build ended: the log lives in Redis until the upload succeeds. */
  logPending: boolean;
  /** Fencing token: bumped by each pick-up and by the end, so only the newest attempt may write. */
  attempt: number;
  /** Unix ms past which the reaper ends the build (queue wait granted plus build timeout). */
  deadlineAt?: number;
  /** W3C traceparent of the span that created the build (absent without tracing): joiners link to it, the dashboard shows it. */
  traceparent?: string;
}

/** One entry of a build's event stream: a log chunk or a state change. */
export type BuildEvent =
  | { id: string; kind: 'log'; text: string; /** Byte offset of `text` in the whole log (Redis holds only a tail). */ offset?: number }
  | { id: string; kind: 'state'; state: BuildState; message: string; /** Read from the record: the stream had expired. */ streamGone?: true };

/** A build record from its Redis hash (HGETALL). */
export function toRecord(h: Record<string, string>): BuildRecord {
  return {
    id: h.id,
    ref: h.ref,
    baseRef: h.baseRef,
    state: h.state as BuildState,
    startedAt: Number(h.startedAt),
    message: h.message ?? '',
    logKey: h.logKey,
    triggeredBy: h.triggeredBy ?? '',
    finishedAt: h.finishedAt ? Number(h.finishedAt) : undefined,
    logPending: h.logPending === '1',
    runningAt: h.runningAt ? Number(h.runningAt) : undefined,
    buildAt: h.buildAt ? Number(h.buildAt) : undefined,
    pushAt: h.pushAt ? Number(h.pushAt) : undefined,
    attempt: Number(h.attempt ?? 0),
    deadlineAt: h.deadlineAt ? Number(h.deadlineAt) : undefined,
    traceparent: h.traceparent || undefined,
  };
}

/** An event from its stream entry: `l` (text) and `o` (offset) for a log chunk, `s` and `m` for a state change. */
export function parseEvent(id: string, fields: string[]): BuildEvent {
  const f = streamFields(fields);
  if (f.l !== undefined) return { id, kind: 'log', text: f.l, offset: f.o === undefined ? undefined : Number(f.o) };
  return { id, kind: 'state', state: f.s as BuildState, message: f.m ?? '' };
}

/** The fields of a build's event stream entry (XRANGE gives them as a flat name, value, … list). */
export function streamFields(fields: string[]): Record<string, string> {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i]] = fields[i + 1];
  return f;
}

/** Orders Redis stream ids (`ms-seq`). */
export function compareStreamIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(Number);
  const [bm, bs] = b.split('-').map(Number);
  return am !== bm ? am - bm : (as ?? 0) - (bs ?? 0);
}
