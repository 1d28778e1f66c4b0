import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { StatusResponse } from '@imgbuilder/proto/gen/buildkit/control';
import { BUILDKIT_TRACE_ID, BuildkitProgress, type StepEnd } from '../../apps/worker/src/builder/buildkit-progress.js';
import { createDocker, DockerEngine } from '../../apps/worker/src/docker-engine.js';

/** Replays a stream recorded from Docker 20.10's `/build?version=2` (one engine JSON message a line). */
function replay(name: string, onStepEnd?: (step: StepEnd) => void): { text: string; progress: BuildkitProgress } {
  const progress = new BuildkitProgress(onStepEnd);
  let text = '';
  for (const line of readFileSync(new URL(`../fixtures/buildkit/${name}.jsonl`, import.meta.url), 'utf8').split('\n')) {
    if (!line) continue;
    const m = JSON.parse(line) as { id?: string; aux?: unknown };
    if (m.id !== BUILDKIT_TRACE_ID) continue;
    const status = BuildkitProgress.decode(m.aux);
    expect(status).toBeDefined();
    text += progress.feed(status!);
  }
  return { text: text + progress.flush(), progress };
}

/** Lines of step `#n`, without the timing column of output lines. */
function step(text: string, header: string): string[] {
  const n = new RegExp(`^#(\\d+) ${header.replace(/[[\]$()*+?.\\^|{}]/g, '\\$&')}$`, 'm').exec(text)?.[1];
  expect(n, `step "${header}" in:\n${text}`).toBeDefined();
  return text
    .split('\n')
    .filter((l) => l.startsWith(`#${n} `))
    .map((l) => l.slice(`#${n} `.length).replace(/^\d+\.\d{3} /, ''));
}

describe('BuildKit progress, as docker build --progress=plain prints it', () => {
  it('success: numbered steps, each output line, each step\'s duration; no protobuf or JSON', () => {
    const { text, progress } = replay('success');
    expect(step(text, '[2/4] RUN echo hello-$RANDOM && echo line2 >&2')).toEqual([
      '[2/4] RUN echo hello-$RANDOM && echo line2 >&2',
      'hello-20517',
      'line2',
      'DONE 0.8s',
    ]);
    expect(step(text, '[3/4] COPY hello.txt /')).toEqual(['[3/4] COPY hello.txt /', 'DONE 0.0s']);
    expect(step(text, '[4/4] RUN echo done')).toEqual(['[4/4] RUN echo done', 'done', 'DONE 0.2s']);
    expect(text).toMatch(/^#\d+ 0\.\d{3} hello-20517$/m);
    expect(text).toMatch(/^#\d+ exporting layers \d+\.\ds done$/m);
    // Step numbers follow the order steps start in, from 1, no gaps.
    const numbers = [...new Set([...text.matchAll(/^#(\d+) /gm)].map((m) => Number(m[1])))];
    expect(numbers).toEqual(numbers.map((_, i) => i + 1));
    expect(text).not.toMatch(/[{}"]|\\u|sha256:[0-9a-f]{64}"|moby\.buildkit/);
    expect(progress.failure).toBeUndefined();
  });

  it('cached: reused steps say CACHED and run nothing', () => {
    const { text } = replay('cached');
    for (const s of ['[2/4] RUN echo hello-$RANDOM && echo line2 >&2', '[3/4] COPY hello.txt /', '[4/4] RUN echo done']) {
      expect(step(text, s)).toEqual([s, 'CACHED']);
    }
    expect(text).not.toMatch(/^#\d+ \d+\.\d{3} /m);
  });

  it('failure: the failing step\'s output, then ERROR with its exit code; the failure names the step', () => {
    const { text, progress } = replay('failure');
    expect(step(text, '[3/4] RUN echo about-to-fail && exit 7')).toEqual([
      '[3/4] RUN echo about-to-fail && exit 7',
      'about-to-fail',
      'ERROR: executor failed running [/bin/sh -c echo about-to-fail && exit 7]: exit code: 7',
    ]);
    // Steps after the failure never started: they are not in the log.
    expect(text).not.toContain('RUN echo never');
    expect(progress.failure).toEqual({ step: '[3/4] RUN echo about-to-fail && exit 7', error: 'executor failed running [/bin/sh -c echo about-to-fail && exit 7]: exit code: 7' });
  });

  it('a base image that cannot be resolved fails as its FROM', () => {
    const { text, progress } = replay('missing');
    expect(text).toMatch(/^#\d+ ERROR: 127\.0\.0\.1:5000\/imgbuilder\/no-such-image:1: not found$/m);
    expect(progress.failure?.step).toBe('FROM 127.0.0.1:5000/imgbuilder/no-such-image:1');
  });

  it('parallel stages: both stages start before either ends; each line names its own stage', () => {
    const { text } = replay('parallel');
    const lines = text.split('\n');
    const header = (s: string) => lines.findIndex((l) => l.endsWith(` ${s}`));
    const a = header('[a 2/2] RUN sleep 2 && echo stage-a');
    const b = header('[b 2/2] RUN sleep 2 && echo stage-b');
    const firstDone = lines.findIndex((l, i) => i > Math.min(a, b) && / DONE /.test(l));
    expect(a).toBeGreaterThan(0);
    expect(b).toBeGreaterThan(0);
    expect(Math.max(a, b)).toBeLessThan(firstDone);
    expect(step(text, '[a 2/2] RUN sleep 2 && echo stage-a').slice(1)).toEqual(['stage-a', 'DONE 2.6s']);
    expect(step(text, '[b 2/2] RUN sleep 2 && echo stage-b').slice(1)).toEqual(['stage-b', 'DONE 2.5s']);
    expect(step(text, '[stage-2 4/4] RUN echo final').slice(1)).toEqual(['final', 'DONE 0.4s']);
  });

  it('output split across messages is joined into whole lines; a last line without newline is kept', () => {
    const p = new BuildkitProgress();
    const started = new Date(1_000);
    const v = { digest: 'sha256:a', inputs: [], name: '[1/1] RUN x', cached: false, started, completed: undefined, error: '' };
    const log = (msg: string, ms: number) => ({ vertex: 'sha256:a', timestamp: new Date(1_000 + ms), stream: '1', msg: Buffer.from(msg) });
    let text = p.feed({ vertexes: [v], statuses: [], logs: [], warnings: [] });
    text += p.feed({ vertexes: [], statuses: [], logs: [log('hel', 10), log('lo\nwor', 20)], warnings: [] });
    text += p.feed({ vertexes: [], statuses: [], logs: [log('ld', 1500)], warnings: [] });
    text += p.feed({ vertexes: [{ ...v, completed: new Date(3_000) }], statuses: [], logs: [], warnings: [] });
    expect(text).toBe('\n#1 [1/1] RUN x\n#1 0.020 hello\n#1 world\n#1 DONE 2.0s\n');
  });

  it('a payload that is not a StatusResponse is skipped, not fatal', () => {
    expect(BuildkitProgress.decode(Buffer.from([0xff, 0xff, 0xff]).toString('base64'))).toBeUndefined();
    expect(BuildkitProgress.decode({ ID: 'sha256:x' })).toBeUndefined();
  });
});

describe('BuildKit progress: cache import', () => {
  it('a cache ref that cannot be imported is one line, not an error, and the build goes on', () => {
    const { text, progress } = replay('cache-missing');
    const lines = step(text, 'importing cache manifest from 127.0.0.1:5000/imgbuilder/no-such-cache:cache-x');
    expect(lines).toEqual([
      'importing cache manifest from 127.0.0.1:5000/imgbuilder/no-such-cache:cache-x',
      'cache not imported, building without it: 127.0.0.1:5000/imgbuilder/no-such-cache:cache-x: not found',
    ]);
    expect(text).not.toContain('ERROR');
    expect(step(text, '[2/2] RUN echo cm$RANDOM').at(-1)).toBe('DONE 0.2s');
    expect(progress.failure).toBeUndefined();
  });
});

describe('BuildKit progress, streamed', () => {
  // A step printing 100,000 lines, as the engine sends it: one JSON line per message, each a base64 StatusResponse
  // with a few lines of the step's output. Generated as it is read: the fixture is never whole in memory.
  const LINES = 100_000;
  const PER_MESSAGE = 10;
  const step = 'sha256:0000000000000000000000000000000000000000000000000000000000000002';
  const started = new Date('2026-01-01T00:00:00Z');
  const message = (s: Parameters<typeof StatusResponse.fromPartial>[0]) =>
    `${JSON.stringify({ id: BUILDKIT_TRACE_ID, aux: Buffer.from(StatusResponse.encode(StatusResponse.fromPartial(s)).finish()).toString('base64') })}\n`;
  function* engineStream(): Generator<string> {
    yield message({ vertexes: [{ digest: step, name: '[2/2] RUN print-lines', started }] });
    for (let i = 0; i < LINES; i += PER_MESSAGE) {
      let msg = '';
      for (let j = i; j < i + PER_MESSAGE; j++) msg += `stream line ${String(j).padStart(7, '0')} padding-padding-padding-padding\n`;
      yield message({ logs: [{ vertex: step, stream: '1', timestamp: started, msg: Buffer.from(msg) }] });
    }
    yield message({ vertexes: [{ digest: step, name: '[2/2] RUN print-lines', started, completed: new Date(started.getTime() + 2000) }] });
    yield `${JSON.stringify({ aux: { ID: 'sha256:built' } })}\n`;
  }

  it('decodes each message as it arrives and keeps none: heap flat across 10,000 messages, every line out in order', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const engine = new DockerEngine(createDocker('unix:///nonexistent/docker.sock'), 'test');
    const progress = new BuildkitProgress();
    let next = 0;
    let messages = 0;
    let heapEarly = 0;
    let outOfOrder = 0;
    const failure = await engine.follow(Readable.from(engineStream()), (p) => {
      if (++messages === 1_000) {
        gc();
        heapEarly = process.memoryUsage().heapUsed;
      }
      if (p.id !== BUILDKIT_TRACE_ID) return;
      for (const m of progress.feed(BuildkitProgress.decode(p.aux)!).matchAll(/stream line (\d{7}) /g)) if (Number(m[1]) !== next++) outOfOrder++;
    });
    gc();
    const growth = process.memoryUsage().heapUsed - heapEarly;
    expect(failure).toBeUndefined();
    expect(messages).toBe(LINES / PER_MESSAGE + 3);
    expect(next).toBe(LINES);
    expect(outOfOrder).toBe(0);
    // The stream carried ~11 MB of JSON; keeping its messages (as followProgress did) grows the heap by more than that.
    expect(growth).toBeLessThan(2 * 1024 * 1024);
  });

  it('returns the first in-stream error instead of handing it on', async () => {
    const engine = new DockerEngine(createDocker('unix:///nonexistent/docker.sock'), 'test');
    const seen: string[] = [];
    const failure = await engine.follow(Readable.from(['{"stream":"a\\n"}\n{"errorDetail":{"message":"boom"},"error":"boom"}\n', '{"stream":"b\\n"}\n\n{"error":"later"}']), (p) => seen.push(p.stream ?? ''));
    expect(seen).toEqual(['a\n', 'b\n']);
    expect(failure?.errorDetail?.message).toBe('boom');
  });
});

describe('BuildKit progress, a stuck engine', () => {
  it('counts empty trace messages in a row: stalled after 10,000, never while real progress comes between', () => {
    const progress = new BuildkitProgress();
    const real = Buffer.from(StatusResponse.encode(StatusResponse.fromPartial({ logs: [{ vertex: 'v', stream: '1', msg: Buffer.from('x\n') }] })).finish()).toString('base64');
    for (let i = 0; i < 30_000; i++) progress.trace(i % 9_000 === 0 ? real : '');
    expect(progress.stalled).toBe(false);
    for (let i = 0; i < 10_000; i++) progress.trace('');
    expect(progress.stalled).toBe(true);
    progress.trace(real);
    expect(progress.stalled).toBe(false);
  });

  it('every step that ends is heard of once, numbered and named as its log line, with BuildKit\'s times (trace spans)', () => {
    for (const fixture of ['success', 'cached', 'failure', 'parallel']) {
      const ended: StepEnd[] = [];
      const { text, progress } = replay(fixture, (s) => ended.push(s));
      const logSteps = new Map<number, string>();
      for (const m of text.matchAll(/^#(\d+) (.+)$/gm)) if (!logSteps.has(Number(m[1]))) logSteps.set(Number(m[1]), m[2]);
      expect(new Map(ended.map((s) => [s.index, s.name])), fixture).toEqual(logSteps);
      for (const s of ended) {
        if (s.cached) expect(s.started, `${fixture}: a cached step ran at no time of its own`).toBeUndefined();
        else expect(s.started!.getTime(), `${fixture} ${s.name}`).toBeLessThanOrEqual(s.completed.getTime());
      }
      const failed = ended.filter((s) => s.error);
      if (progress.failure) expect(failed.map((s) => s.error)).toEqual([`step "${progress.failure.step}": ${progress.failure.error}`]);
      else expect(failed).toEqual([]);
    }
  });
});
