import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { BuildStatus, type ImageBuilderClient } from '@imgbuilder/proto';
import { build } from './client.js';
import type { GitServer } from '../../testkit/git-server.js';
import { dockerfile, gitSource } from '../../testkit/requests.js';
import type { ServiceProcess, Stack } from '../../testkit/stack.js';
import { buildIdOf, terminalMessages, textOf, watchBuild, watchLogs } from './streams.js';

/** Manifest PUTs the registry logged for `repository:tag` (one per push). */
export function manifestPuts(stack: Stack, ref: string): number {
  const i = ref.indexOf('/');
  const [path, tag] = ref.slice(i + 1).split(':');
  const log = readFileSync(stack.env.IMGBUILDER_LOCAL_REGISTRY_LOG, 'utf8');
  return log.split('\n').filter((l) => l.includes(`"PUT /v2/${path}/manifests/${tag} `)).length;
}

export const alive = (p: ServiceProcess) => p.child.exitCode === null && p.child.signalCode === null;

/** The first of `procs` to log a line matching `re` (past or future); bounded. */
export async function firstToLog(procs: ServiceProcess[], re: RegExp, timeoutMs = 60_000): Promise<ServiceProcess> {
  const hit = procs.find((p) => p.lines.some((l) => re.test(l)));
  if (hit) return hit;
  return Promise.any(procs.map((p) => p.waitForLine(re, timeoutMs).then(() => p))).catch(() => {
    throw new Error(`none of ${procs.map((p) => p.name).join(', ')} logged ${re} within ${timeoutMs} ms`);
  });
}

/** Matches a worker's "build picked up" line for `buildId` (first pick-up or `again` after a lost worker). */
export const pickedUp = (buildId: string, again = false) => new RegExp(`"build_id":"${buildId}".*"msg":"build picked up${again ? ' again' : ''}`);

/** 12 concurrent Build calls of one ref spread over the stack's APIs: one build_id, one push. */
export async function concurrentBuildsShareOneBuild(stack: Stack, clients: ImageBuilderClient[], git: GitServer, repo: string): Promise<void> {
  git.commit(repo, { Dockerfile: dockerfile('echo dedupe-step', 'sleep 2') });
  const req = { source: gitSource(git.url(repo)) };
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) => build(clients[i % clients.length], req, 180_000)));
  const ids = new Set(results.map((r) => r[0].info?.buildId));
  expect(ids.size).toBe(1);
  expect([...ids][0]).toBeTruthy();
  for (const r of results) {
    expect(terminalMessages(r)).toHaveLength(1);
    expect(r[r.length - 1].status, r[r.length - 1].message).toBe(BuildStatus.done_success);
  }
  expect(manifestPuts(stack, results[0][0].ref)).toBe(1);
  expect(manifestPuts(stack, results[0][0].baseRef)).toBe(1);
}

/**
 * SIGKILLs the worker running a build mid-step. Another worker must pick the build up again, rebuild it, and every
 * client still streaming (Build on one API, Logs on another) gets the rest and one terminal status.
 * Returns how long the pick-up took, measured from the kill to the new worker's log line.
 */
export async function workerKilledMidBuild(stack: Stack, clients: [ImageBuilderClient, ImageBuilderClient], git: GitServer, repo: string): Promise<{ pickupMs: number; buildId: string }> {
  git.commit(repo, { Dockerfile: dockerfile('echo phase-one', 'sleep 8', 'echo phase-two') });
  const req = { source: gitSource(git.url(repo)) };
  const b = watchBuild(clients[0], req);
  await b.until((m) => Boolean(buildIdOf(m)), 'the build id');
  const buildId = buildIdOf(b.messages)!;
  const l = watchLogs(clients[1], { buildId });
  await l.until((m) => textOf(m).includes('RUN sleep 8'), 'the sleep step to start');

  const victim = await firstToLog(stack.workers.filter(alive), pickedUp(buildId));
  const t0 = Date.now();
  await victim.kill('SIGKILL');
  const survivors = stack.workers.filter(alive);
  const rescuer = await firstToLog(survivors, pickedUp(buildId, true), 90_000);
  const pickupMs = Date.now() - t0;
  expect(rescuer).not.toBe(victim);

  const [built, logged] = await Promise.all([b.ended, l.ended]);
  expect(built.error).toBeUndefined();
  expect(logged.error).toBeUndefined();
  expect(terminalMessages(built.messages)).toHaveLength(1);
  const last = built.messages[built.messages.length - 1];
  expect(last.status, last.message).toBe(BuildStatus.done_success);
  const text = textOf(logged.messages);
  expect(text).toContain('phase-one');
  expect(text).toMatch(/build restarted: .*building again from scratch/);
  expect(text.indexOf('phase-two')).toBeGreaterThan(text.indexOf('build restarted'));
  // The killed attempt never pushed: the rebuilt image is pushed exactly once.
  expect(manifestPuts(stack, last.ref)).toBe(1);
  return { pickupMs, buildId };
}

/** The process's exit code, or 'still running' after `timeoutMs`. */
export function exitCode(p: ServiceProcess, timeoutMs = 60_000): Promise<number | null | 'still running'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p.exited, new Promise<'still running'>((resolve) => (timer = setTimeout(() => resolve('still running'), timeoutMs)))]).finally(() => clearTimeout(timer));
}
