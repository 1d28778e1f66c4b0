import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Queue } from 'bullmq';
import { status, type ServiceError } from '@grpc/grpc-js';
import { BuildStatus, type BuildControlClient, type BuildResponse, type ImageBuilderClient } from '@imgbuilder/proto';
import { connect, logs } from '../support/client.js';
import { cancelBuild, connectControl, eventually, sleepProcesses } from '../support/control.js';
import { GitServer } from '../../testkit/git-server.js';
import { httpGet, metricsUrl } from '../support/http.js';
import { dockerfile, gitSource } from '../../testkit/requests.js';
import { manifestPuts } from '../support/scenarios.js';
import { ROOT, startStack, type Stack } from '../../testkit/stack.js';
import { buildIdOf, terminalMessages, textOf, watchBuild, watchLogs, type WatchedStream } from '../support/streams.js';

// Two API and two worker processes, one build slot each: a third build waits in the queue.
let stack: Stack;
let git: GitServer;
let a: ImageBuilderClient;
let b: ImageBuilderClient;
let ca: BuildControlClient;
let cb: BuildControlClient;
let queue: Queue;

beforeAll(async () => {
  [stack, git] = await Promise.all([startStack({ apis: 2, workers: 2, env: { IMGBUILDER_WORKER_CONCURRENCY: '1' } }), GitServer.start()]);
  [a, b] = stack.apiAddrs.map((addr) => connect(addr));
  [ca, cb] = stack.apiAddrs.map((addr) => connectControl(addr));
  queue = new Queue('builds', { connection: { url: stack.env.REDIS_URL, maxRetriesPerRequest: null }, prefix: `{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}` });
});

afterAll(async () => {
  for (const c of [a, b, ca, cb]) c?.close();
  await queue?.close();
  git?.stop();
  await stack?.stop();
});

/** The spec's bound: every waiter ends, and the step's processes are gone, within 5 s of the cancel. */
const CANCEL_BOUND_MS = 5_000;
const uniqueSleep = () => 40_000 + Math.floor(Math.random() * 50_000);
const terminal = (m: BuildResponse[]) => terminalMessages(m).length > 0;
const codeOf = (p: Promise<unknown>) => p.then(() => status.OK, (e: ServiceError) => e.code);

/** Starts a build of a fresh repo whose one step sleeps `n` s; resolves once its id is known. */
async function startSleeping(client: ImageBuilderClient, repo: string, n: number): Promise<{ watched: WatchedStream<BuildResponse>; id: string; req: { source: ReturnType<typeof gitSource> } }> {
  git.commit(repo, { Dockerfile: dockerfile(`sleep ${n}`) });
  const req = { source: gitSource(git.url(repo)) };
  const watched = watchBuild(client, req);
  await watched.until((m) => Boolean(buildIdOf(m)), 'the build id');
  return { watched, id: buildIdOf(watched.messages)!, req };
}

/** Waits until every waiter has ended, within the bound counted from `t0`; each got exactly one terminal status. */
async function endedWithin(t0: number, waiters: WatchedStream<BuildResponse>[]): Promise<BuildResponse[]> {
  await Promise.all(waiters.map((w) => w.until(terminal, 'the terminal status', Math.max(1, CANCEL_BOUND_MS - (Date.now() - t0)))));
  const ends = await Promise.all(waiters.map((w) => w.ended));
  return ends.map((e) => {
    expect(e.error).toBeUndefined();
    expect(terminalMessages(e.messages)).toHaveLength(1);
    return e.messages[e.messages.length - 1];
  });
}

describe('CancelBuild (imgbuilder.control.v1.BuildControl)', () => {
  it('a cancel through one API ends the waiters on both within 5 s, stops the step on the engine and pushes nothing; closing a stream cancels nothing; twice is fine; the next Build starts anew', async () => {
    const n = uniqueSleep();
    const first = await startSleeping(a, 'cancel-running', n);
    const joined = watchBuild(b, first.req);
    await joined.until((m) => buildIdOf(m) === first.id, 'the second waiter to join');
    await eventually(() => sleepProcesses(n) > 0, `the step "sleep ${n}" to run on the engine`, 90_000);

    // A waiter that closes its Build stream cancels nothing (Gitpod relies on it): once API a has ended that call,
    // the step still runs and the other waiters still wait.
    const quitter = watchBuild(a, first.req);
    await quitter.until((m) => buildIdOf(m) === first.id, 'the third waiter to join');
    quitter.cancel();
    const metrics = `${await metricsUrl(stack.apis[0])}/metrics`;
    await eventually(async () => /imgbuilder_grpc_calls_total\{method="Build",code="OK"\} 1\b/.test((await httpGet(metrics)).body), 'API a to end the closed stream', 10_000);
    expect(sleepProcesses(n)).toBe(1);
    expect(terminalMessages(first.watched.messages).length + terminalMessages(joined.messages).length).toBe(0);

    const t0 = Date.now();
    const res = await cancelBuild(ca, { buildId: first.id, requestedBy: 'test-operator' });
    expect(res).toEqual({ buildId: first.id, cancelledBy: 'test-operator', alreadyCancelled: false });
    const ends = await endedWithin(t0, [first.watched, joined]);
    for (const end of ends) {
      expect(end.status).toBe(BuildStatus.done_failure);
      expect(end.message).toBe('build cancelled by test-operator');
    }
    await eventually(() => sleepProcesses(n) === 0, 'the step to be gone from the engine', Math.max(1, CANCEL_BOUND_MS - (Date.now() - t0)));
    const gone = Date.now() - t0;
    console.info(`cancel → waiters on both APIs ended and the step process gone: ${gone} ms`);

    expect(manifestPuts(stack, ends[0].ref)).toBe(0);
    expect(manifestPuts(stack, ends[0].baseRef)).toBe(0);
    expect(stack.apis[0].lines.some((l) => l.includes(first.id) && l.includes('"by":"test-operator"') && l.includes('build cancel requested'))).toBe(true);
    expect(stack.workers.some((w) => w.lines.some((l) => l.includes(first.id) && l.includes('"by":"test-operator"') && l.includes('build cancelled: stopping it')))).toBe(true);
    expect(await logs(b, { buildId: first.id })).toContain('build cancelled by test-operator');

    // Twice is fine, through the other API too.
    expect(await cancelBuild(cb, { buildId: first.id, requestedBy: 'someone-else' })).toEqual({ buildId: first.id, cancelledBy: 'test-operator', alreadyCancelled: true });

    // The ref is free: the same source builds again, as a new build (cancelled in turn, through the CLI).
    const again = watchBuild(b, first.req);
    await again.until((m) => Boolean(buildIdOf(m)), 'the new build id');
    const againId = buildIdOf(again.messages)!;
    expect(againId).not.toBe(first.id);
    await eventually(() => sleepProcesses(n) > 0, 'the new build to run its step', 90_000);
    const cli = await promisify(execFile)(process.execPath, [join(ROOT, 'bin/imgbuilder.mjs'), '--server', stack.apiAddrs[1], 'cancel', againId], { timeout: 60_000 });
    expect(cli.stdout.trim()).toBe(`build ${againId} cancelled by imgbuilder-cli`);
    const [end] = await endedWithin(Date.now(), [again]);
    expect(end.message).toBe('build cancelled by imgbuilder-cli');
    await eventually(() => sleepProcesses(n) === 0, 'the step to be gone from the engine', CANCEL_BOUND_MS);
  });

  it('a queued build leaves the queue; a finished build is FAILED_PRECONDITION; unknown ids NOT_FOUND', async () => {
    // Both slots busy, so the third build waits.
    const [n1, n2] = [uniqueSleep(), uniqueSleep()];
    const busy = await Promise.all([startSleeping(a, 'cancel-busy-1', n1), startSleeping(b, 'cancel-busy-2', n2)]);
    await eventually(() => sleepProcesses(n1) > 0 && sleepProcesses(n2) > 0, 'both slots to be busy', 90_000);
    const queued = await startSleeping(b, 'cancel-queued', uniqueSleep());
    expect(await queue.getJobState(queued.id)).toBe('prioritized');

    const t0 = Date.now();
    expect((await cancelBuild(ca, { buildId: queued.id })).cancelledBy).toBe('anonymous');
    const [end] = await endedWithin(t0, [queued.watched]);
    expect(end.message).toBe('build cancelled by anonymous');
    expect(await queue.getJobState(queued.id)).toBe('unknown');
    // No worker ever took it.
    expect(stack.workers.some((w) => w.lines.some((l) => l.includes(queued.id)))).toBe(false);

    await Promise.all(busy.map((x, i) => cancelBuild(i ? cb : ca, { buildId: x.id, requestedBy: 'cleanup' })));
    await endedWithin(Date.now(), busy.map((x) => x.watched));

    git.commit('cancel-finished', { Dockerfile: dockerfile('echo quick') });
    const done = watchBuild(a, { source: gitSource(git.url('cancel-finished')) });
    const { messages } = await done.ended;
    expect(messages[messages.length - 1].status).toBe(BuildStatus.done_success);
    const refused = await cancelBuild(cb, { buildId: buildIdOf(messages)! }).catch((e: ServiceError) => e);
    expect((refused as ServiceError).code).toBe(status.FAILED_PRECONDITION);
    expect((refused as ServiceError).details).toBe(`build ${buildIdOf(messages)} has already ended (done_success); only queued or running builds can be cancelled`);

    expect(await codeOf(cancelBuild(ca, { buildId: '00000000-0000-4000-8000-000000000000' }))).toBe(status.NOT_FOUND);
    expect(await codeOf(cancelBuild(ca, { buildId: '' }))).toBe(status.INVALID_ARGUMENT);
  });

  it('a cancel racing the build\'s own end still gives each waiter exactly one terminal status', async () => {
    // Cancel at three points of a short build: while its step runs, as it pushes, as it reports done.
    for (const [i, at] of ['RUN sleep 1', 'pushing ', 'done: '].entries()) {
      const repo = `cancel-race-${i}`;
      git.commit(repo, { Dockerfile: dockerfile('sleep 1') });
      const req = { source: gitSource(git.url(repo)) };
      const w1 = watchBuild(a, req);
      await w1.until((m) => Boolean(buildIdOf(m)), 'the build id');
      const id = buildIdOf(w1.messages)!;
      const w2 = watchBuild(b, req);
      const log = watchLogs(b, { buildId: id });
      await log.until((m) => textOf(m).includes(at), `"${at}" in the log`);
      const outcome = await cancelBuild(ca, { buildId: id, requestedBy: 'racer' }).then(
        () => 'cancelled',
        (e: ServiceError) => (e.code === status.FAILED_PRECONDITION ? 'finished first' : Promise.reject(e)),
      );
      const ends = await endedWithin(Date.now(), [w1, w2]);
      log.cancel();
      for (const end of ends) {
        if (outcome === 'cancelled') {
          expect(end).toMatchObject({ status: BuildStatus.done_failure, message: 'build cancelled by racer' });
          // However far the base image's push got, the workspace image never appears.
          expect(manifestPuts(stack, end.ref)).toBe(0);
        } else expect(end.status).toBe(BuildStatus.done_success);
      }
      console.info(`cancel at "${at.trim()}": ${outcome}`);
    }
  });
});
