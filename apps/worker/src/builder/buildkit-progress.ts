import { StatusResponse, type Vertex } from '@imgbuilder/proto/gen/buildkit/control';

/** Aux id under which a Docker engine sends BuildKit's progress (base64 StatusResponse) on `/build?version=2`. */
export const BUILDKIT_TRACE_ID = 'moby.buildkit.trace';

const CACHE_IMPORT = 'importing cache manifest from ';

/**
 * Empty trace messages in a row after which the engine's progress stream counts as stuck. Docker 20.10's BuildKit,
 * once one batch of a step's output passes 1 MiB (a fast step with the step-log limits raised, on a busy engine),
 * sends empty StatusResponses in a loop, about 90,000 a second, and nothing else ever again; a sound engine sends none.
 */
const STALLED_RUN = 10_000;

/** Why a build whose progress stream got stuck was stopped. */
export const BUILDKIT_STALLED =
  "the engine's BuildKit stopped reporting the build's progress (Docker 20.10 does so once a step prints over 1 MiB at once with its step-log limits raised); the build was stopped. Use a newer engine, or IMGBUILDER_BUILDER=classic";

/** The log's line when such a build runs again on the classic builder. */
export const BUILDKIT_STALLED_RETRY =
  "the engine's BuildKit stopped reporting the build's progress (Docker 20.10 does so now and then when a step prints fast); building again with the classic builder, which passes every line through";

/** The step a BuildKit build failed in, as `docker build` names it, and BuildKit's error text. */
export interface FailedStep {
  step: string;
  error: string;
}

/** A step that ended, with BuildKit's own times: what its trace span is made of (step-spans.ts). */
export interface StepEnd {
  /** `#N` in the log. */
  index: number;
  /** The step as the log names it after `#N`. */
  name: string;
  started?: Date;
  completed: Date;
  cached: boolean;
  /** BuildKit's error, for the step that failed the build. */
  error?: string;
}

interface VertexState {
  name: string;
  /** `#N` in the log: numbered when first printed, like `docker build --progress=plain`. */
  index?: number;
  started?: Date;
  announced: boolean;
  ended: boolean;
  /** Output not yet ended by a newline, per stream (1 stdout, 2 stderr). */
  partial: Map<number, string>;
  statuses: Set<string>;
}

/**
 * Turns BuildKit's progress stream into the text `docker build --progress=plain` prints: `#N <step>` when a step
 * starts, `#N <seconds> <line>` for each line it writes, then `#N CACHED`, `#N DONE 0.3s` or `#N ERROR: …`.
 * Steps running at once (independent stages) interleave line by line; every line names its step.
 */
export class BuildkitProgress {
  private readonly vertexes = new Map<string, VertexState>();
  private next = 1;
  private failedStep?: FailedStep;
  private emptyRun = 0;

  /** `onStepEnd` hears of every step that ends (cached, done or failed), once. */
  constructor(private readonly onStepEnd?: (step: StepEnd) => void) {}

  /** Decodes one `moby.buildkit.trace` aux payload (base64, or the engine's already-decoded bytes). */
  static decode(aux: unknown): StatusResponse | undefined {
    if (typeof aux !== 'string' || !aux) return undefined;
    try {
      return StatusResponse.decode(Buffer.from(aux, 'base64'));
    } catch {
      // A payload this decoder cannot read is progress only; the build's outcome arrives separately.
      return undefined;
    }
  }

  /** Decodes one trace payload (see decode), counting the empty ones in a row: `stalled` once they are too many. */
  trace(aux: unknown): StatusResponse | undefined {
    this.emptyRun = aux === '' ? this.emptyRun + 1 : 0;
    return BuildkitProgress.decode(aux);
  }

  /** The engine's progress stream is stuck (see STALLED_RUN): nothing more will come. */
  get stalled(): boolean {
    return this.emptyRun >= STALLED_RUN;
  }

  /** The log text for one StatusResponse (possibly empty). */
  feed(status: StatusResponse): string {
    let out = '';
    for (const v of status.vertexes) out += this.onVertex(v);
    for (const s of status.statuses) {
      const v = this.vertexes.get(s.vertex);
      if (!v || !s.completed || v.statuses.has(s.ID)) continue;
      v.statuses.add(s.ID);
      const size = s.total && s.total !== '0' ? ` ${bytes(Number(s.current))} / ${bytes(Number(s.total))}` : '';
      const took = s.started ? ` ${seconds(s.completed.getTime() - s.started.getTime())}` : '';
      out += `${this.announce(s.vertex, v)}#${v.index} ${s.ID}${size}${took} done\n`;
    }
    for (const l of status.logs) {
      const v = this.vertexes.get(l.vertex) ?? this.remember(l.vertex, '');
      out += this.announce(l.vertex, v);
      const stream = Number(l.stream);
      const text = (v.partial.get(stream) ?? '') + Buffer.from(l.msg).toString('utf8');
      const lines = text.split(/\r?\n/);
      v.partial.set(stream, lines.pop() ?? '');
      const at = v.started && l.timestamp ? `${(Math.max(0, l.timestamp.getTime() - v.started.getTime()) / 1000).toFixed(3)} ` : '';
      for (const line of lines) out += `#${v.index} ${at}${line}\n`;
    }
    return out;
  }

  /** Output left without a final newline by steps that have ended (flushed at the end of the stream). */
  flush(): string {
    let out = '';
    for (const v of this.vertexes.values()) out += this.flushOne(v);
    return out;
  }

  /** The step whose error ended the build, if BuildKit reported one. */
  get failure(): FailedStep | undefined {
    return this.failedStep;
  }

  private remember(digest: string, name: string): VertexState {
    const v: VertexState = { name, announced: false, ended: false, partial: new Map(), statuses: new Set() };
    this.vertexes.set(digest, v);
    return v;
  }

  private announce(digest: string, v: VertexState): string {
    if (v.announced) return '';
    v.announced = true;
    v.index = this.next++;
    return `\n#${v.index} ${v.name || digest}\n`;
  }

  private onVertex(x: Vertex): string {
    const v = this.vertexes.get(x.digest) ?? this.remember(x.digest, x.name);
    if (x.name) v.name = x.name;
    if (x.started && !v.started) v.started = x.started;
    // Listed but not started: BuildKit announces the whole graph up front; a step appears once it runs.
    if (!x.started && !x.cached && !x.error) return '';
    let out = this.announce(x.digest, v);
    if (v.ended && !x.error) return out;
    if (x.cached) {
      v.ended = true;
      this.ended(x, v, { cached: true });
      return `${out}#${v.index} CACHED\n`;
    }
    if (x.error) {
      v.ended = true;
      out += this.flushOne(v);
      // A cache that cannot be imported only makes the build slower: BuildKit goes on without it.
      if (v.name.startsWith(CACHE_IMPORT)) {
        this.ended(x, v, {});
        return `${out}#${v.index} cache not imported, building without it: ${x.error}\n`;
      }
      this.failedStep ??= { step: stepName(v.name), error: x.error };
      this.ended(x, v, { error: `step "${stepName(v.name)}": ${x.error}` });
      return `${out}#${v.index} ERROR: ${x.error}\n`;
    }
    if (x.completed) {
      v.ended = true;
      this.ended(x, v, {});
      out += this.flushOne(v);
      const took = x.started ? seconds(x.completed.getTime() - x.started.getTime()) : '0.0s';
      return `${out}#${v.index} DONE ${took}\n`;
    }
    return out;
  }

  private ended(x: Vertex, v: VertexState, how: { cached?: boolean; error?: string }): void {
    if (!this.onStepEnd || v.index === undefined) return;
    // A cached step did not run: the times BuildKit sends with it are the cache record's, from an earlier build.
    const at = how.cached ? { completed: new Date() } : { started: v.started ?? x.started, completed: x.completed ?? new Date() };
    this.onStepEnd({ index: v.index, name: v.name || x.digest, ...at, cached: how.cached ?? false, error: how.error });
  }

  private flushOne(v: VertexState): string {
    let out = '';
    for (const rest of v.partial.values()) if (rest) out += `#${v.index} ${rest}\n`;
    v.partial.clear();
    return out;
  }
}

/**
 * The Dockerfile step a vertex stands for. A base image that cannot be resolved fails in the vertex that loads its
 * metadata, before BuildKit numbers the steps: it is named as the FROM it comes from.
 */
function stepName(vertex: string): string {
  const m = /^\[internal\] load metadata for (.+)$/.exec(vertex);
  return m ? `FROM ${m[1]}` : vertex;
}

function seconds(ms: number): string {
  return `${(Math.max(0, ms) / 1000).toFixed(1)}s`;
}

function bytes(n: number): string {
  if (n < 1000) return `${n}B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(2)}kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(2)}MB`;
  return `${(n / 1e9).toFixed(2)}GB`;
}
