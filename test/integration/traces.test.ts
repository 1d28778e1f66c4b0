import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Metadata } from '@grpc/grpc-js';
import { BuildRequest, BuildStatus, type BuildResponse, type ImageBuilderClient } from '@imgbuilder/proto';
import { collect, connect, logs } from '../support/client.js';
import { GitServer } from '../../testkit/git-server.js';
import { OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.js';
import { dockerfile, gitSource } from '../../testkit/requests.js';
import { freePort, startStack, type Stack } from '../../testkit/stack.js';

// Two API and two worker processes exporting to one in-process OTLP/HTTP receiver: api-0 and the workers send
// http/json, api-1 sends http/protobuf. api-0 serves the dashboard, with trace links.
let receiver: OtlpReceiver;
let stack: Stack;
let git: GitServer;
let json: ImageBuilderClient;
let proto: ImageBuilderClient;
let dashboard: string;
const DASHBOARD_TOKEN = randomBytes(16).toString('hex');

beforeAll(async () => {
  receiver = await OtlpReceiver.start();
  // Spans leave each process within 100 ms instead of the SDK's 5 s batches.
  const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '100' };
  [stack, git] = await Promise.all([startStack({ apis: 0, workers: 2, env: otel }), GitServer.start()]);
  dashboard = `127.0.0.1:${await freePort()}`;
  await stack.startApi({ IMGBUILDER_HTTP_ADDR: dashboard, IMGBUILDER_DASHBOARD_TOKEN: DASHBOARD_TOKEN, IMGBUILDER_TRACE_URL: 'https://tracing.example/trace/{traceId}?from=imgbuilder' });
  await stack.startApi({ OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' });
  json = connect(stack.apiAddrs[0]);
  proto = connect(stack.apiAddrs[1]);
});

afterAll(async () => {
  json?.close();
  proto?.close();
  git?.stop();
  await stack?.stop();
  receiver?.stop();
});

/** A W3C traceparent of a caller's own span: a trace id and that span's id. */
function callerSpan(): { traceId: string; spanId: string; traceparent: string } {
  const traceId = randomBytes(16).toString('hex');
  const spanId = randomBytes(8).toString('hex');
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01` };
}

function buildCall(client: ImageBuilderClient, req: Parameters<typeof BuildRequest.fromPartial>[0], traceparent: string, onFirst?: () => void) {
  const md = new Metadata();
  md.set('traceparent', traceparent);
  const stream = client.build(BuildRequest.fromPartial(req), md);
  if (onFirst) stream.once('data', onFirst);
  return collect<BuildResponse>(stream);
}

const one = (spans: ReceivedSpan[], name: string): ReceivedSpan => {
  const found = spans.filter((s) => s.name === name);
  expect(found.map((s) => s.name), `one span named ${name} in ${spans.map((s) => s.name).join(', ')}`).toEqual([name]);
  return found[0];
};

/** The log's step lines (`#N <step>`, the first line of each N), by N. */
function logSteps(text: string): Map<number, string> {
  const steps = new Map<number, string>();
  for (const m of text.matchAll(/^#(\d+) (.+)$/gm)) if (!steps.has(Number(m[1]))) steps.set(Number(m[1]), m[2]);
  return steps;
}

describe('traces', () => {
  it('one Build carrying a traceparent is one trace across API and worker: the expected spans, parent links, a step span per log step; a joiner links to it', async () => {
    git.commit('traced', { Dockerfile: dockerfile('echo traced', 'sleep 1') });
    const req = { source: gitSource(git.url('traced')) };
    const caller = callerSpan();
    const joiner = callerSpan();
    // The second caller asks once the first one's build exists (its first message), so it joins it.
    let firstMessage!: () => void;
    const started = new Promise<void>((resolve) => (firstMessage = resolve));
    const creating = buildCall(proto, req, caller.traceparent, () => firstMessage());
    await started;
    const [created, joined] = await Promise.all([creating, buildCall(json, req, joiner.traceparent)]);
    expect([created.at(-1)?.status, joined.at(-1)?.status]).toEqual([BuildStatus.done_success, BuildStatus.done_success]);
    const buildId = created[0].info!.buildId;
    expect(joined[0].info?.buildId).toBe(buildId);
    const has = (traceId: string, name: string) => receiver.trace(traceId).some((s) => s.name === name);
    await receiver.waitFor(() => has(caller.traceId, 'builder.ImageBuilder/Build') && has(caller.traceId, 'finish') && has(joiner.traceId, 'join'));

    const spans = receiver.trace(caller.traceId);
    // Kept beside the processes' logs: what docs/trace-waterfall.svg is drawn from (scripts/trace-waterfall.mjs).
    writeFileSync(join(stack.logDir, 'trace.json'), JSON.stringify(spans, null, 1));
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const parentOf = (s: ReceivedSpan) => byId.get(s.parentSpanId)?.name;
    expect(new Set(spans.map((s) => s.service))).toEqual(new Set(['imgbuilder-api', 'imgbuilder-worker']));

    // API: the rpc continues the caller's span; plan (with its ls-remote and registry check), create-or-join, enqueue.
    const rpc = one(spans, 'builder.ImageBuilder/Build');
    expect(rpc).toMatchObject({ service: 'imgbuilder-api', parentSpanId: caller.spanId, kind: 2 });
    for (const name of ['plan', 'create-or-join', 'enqueue']) expect(parentOf(one(spans, name)), name).toBe(rpc.name);
    expect(parentOf(one(spans, 'git ls-remote'))).toBe('plan');
    expect(spans.filter((s) => s.name === 'registry check').map(parentOf)).toContain('plan');

    // Worker: the job continues the enqueue span; its stages hang under the job, the steps under the image build.
    const job = one(spans, 'build job');
    expect(job.service).toBe('imgbuilder-worker');
    expect(parentOf(job)).toBe('enqueue');
    expect(parentOf(one(spans, 'queue wait'))).toBe('enqueue');
    for (const name of ['source', 'context packing', 'build', 'push base', 'push workspace', 'log upload', 'finish']) expect(parentOf(one(spans, name)), name).toBe('build job');
    expect(spans.filter((s) => s.status.code === 2)).toEqual([]);

    // One step span per step the log names, named as the log names it, and timed inside the image build.
    const steps = logSteps(await logs(json, { buildId }));
    expect(steps.size).toBeGreaterThan(2);
    const build = one(spans, 'build');
    const stepSpans = spans.filter((s) => s.parentSpanId === build.spanId);
    expect(new Map(stepSpans.map((s) => [Number(s.attributes['imgbuilder.step']), s.name]))).toEqual(steps);
    expect(stepSpans.map((s) => s.name)).toContain('[4/4] RUN sleep 1');
    for (const s of stepSpans) expect(s.endMs).toBeGreaterThanOrEqual(s.startMs);

    // The joiner's own trace holds a span linked to the span that created the build.
    const createdBy = one(spans, 'create-or-join');
    const joinSpan = one(receiver.trace(joiner.traceId), 'join');
    expect(joinSpan.links).toEqual([{ traceId: caller.traceId, spanId: createdBy.spanId }]);

    // Both encodings arrived; every process's log lines for the build name the trace.
    expect(receiver.contentTypes).toEqual(new Set(['application/json', 'application/x-protobuf']));
    const buildLines = [...stack.apis, ...stack.workers].flatMap((p) => p.lines.filter((l) => l.includes(buildId) && l.includes('"trace_id"')).map((l) => ({ p: p.name, trace: (JSON.parse(l) as { trace_id: string }).trace_id })));
    expect(buildLines.filter((l) => l.trace === caller.traceId).map((l) => l.p.split('-')[0])).toEqual(expect.arrayContaining(['api', 'worker']));

    // The dashboard's build page names the creator's trace, linked through IMGBUILDER_TRACE_URL.
    const res = await fetch(`http://${dashboard}/api/builds/${buildId}`, { headers: { authorization: `Bearer ${DASHBOARD_TOKEN}` } });
    expect(((await res.json()) as { trace?: unknown }).trace).toEqual({ id: caller.traceId, url: `https://tracing.example/trace/${caller.traceId}?from=imgbuilder` });
  });

  it('a build failing at a step marks that step span, and the job, as an error with the message the client gets', async () => {
    git.commit('traced-fail', { Dockerfile: dockerfile('exit 3') });
    const caller = callerSpan();
    const msgs = await buildCall(json, { source: gitSource(git.url('traced-fail')) }, caller.traceparent);
    const end = msgs.at(-1)!;
    expect(end.status).toBe(BuildStatus.done_failure);
    await receiver.waitFor(() => receiver.trace(caller.traceId).some((s) => s.name === 'finish'));
    const spans = receiver.trace(caller.traceId);
    const failed = spans.filter((s) => s.status.code === 2);
    const step = one(failed, '[3/3] RUN exit 3');
    expect(end.message).toContain(step.status.message);
    expect(step.status.message).toMatch(/^step "\[3\/3\] RUN exit 3": .*exit code: 3/);
    expect(one(failed, 'build job').status.message).toBe(end.message);
    expect(failed.map((s) => s.name).sort()).toEqual(['[3/3] RUN exit 3', 'build', 'build job'].sort());
  });
});
