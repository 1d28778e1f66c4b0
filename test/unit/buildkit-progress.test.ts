import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BUILDKIT_TRACE_ID, BuildkitProgress } from '../../apps/worker/src/builder/buildkit-progress.js';

/** Replays a stream recorded from Docker 20.10's `/build?version=2` (one engine JSON message a line). */
function replay(name: string): { text: string; progress: BuildkitProgress } {
  const progress = new BuildkitProgress();
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
