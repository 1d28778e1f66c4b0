import { randomBytes } from 'node:crypto';
import { CloneTargetMode, type BuildSource } from '@imgbuilder/proto';
import type { Gate } from '../../testkit/gate.js';
import { BASE_IMAGE, gitSource } from '../../testkit/requests.js';

export const nonce = () => randomBytes(6).toString('hex');

/**
 * Sources are pinned commits (REMOTE_COMMIT), as Gitpod sends them for Dockerfile builds: the API hashes the commit
 * and asks the git server nothing, so a figure never includes `git ls-remote` or its 5 s cache.
 */
export function commitSource(url: string, commit: string): BuildSource {
  return gitSource(url, { mode: CloneTargetMode.REMOTE_COMMIT, target: commit });
}

/**
 * The "small Dockerfile" of the overhead and dedupe scenarios: a few RUN steps, ~2–3 s of engine work on this kind
 * of machine. The nonce is in the first step, so a new nonce misses the engine cache for every step.
 */
export function smallDockerfile(n: string): string {
  return [
    `FROM ${BASE_IMAGE}`,
    `RUN echo "bench ${n}" > /bench-nonce`,
    'RUN mkdir -p /app && for i in $(seq 1 200); do echo "line $i" >> /app/data.txt; done',
    'RUN sleep 1 && wc -l /app/data.txt',
    'RUN sha256sum /app/data.txt > /app/data.sha && cat /app/data.sha',
    '',
  ].join('\n');
}

/** One quick step after the nonce: the throughput scenario's unit of work (the fixed cost of a build dominates). */
export function tinyDockerfile(n: string): string {
  return [`FROM ${BASE_IMAGE}`, `RUN echo "bench ${n}" > /bench-nonce`, 'RUN sleep 0.5', ''].join('\n');
}

/**
 * The log-latency build. busybox `date` has no %N, but `adjtimex` prints the kernel's wall clock in µs
 * (`time.tv_sec`, `time.tv_usec`), the same clock the bench reads: each tick line carries its print time.
 * The first step waits (bounded) at a TCP gate on the bench so every subscriber is attached before the first tick;
 * any answer other than "wait" (gate unreachable, or "go") lets the build go on.
 */
export function tickDockerfile(n: string, ticks: number, intervalUs: number, gate: Gate): string {
  const tick = `adjtimex | awk '/tv_sec/{s=$2} /tv_usec/{u=$2} END{printf "tick %d%06d\\n", s, u}'`;
  return [
    `FROM ${BASE_IMAGE}`,
    `RUN echo "bench ${n}"`,
    `RUN ${gate.waitStep()}`,
    `RUN for i in $(seq 1 ${ticks}); do ${tick}; usleep ${intervalUs}; done`,
    '',
  ].join('\n');
}

/** `tick <µs>` values in a text, with their µs timestamps converted to ms. */
export function ticksIn(text: string): number[] {
  const out: number[] = [];
  for (const m of text.matchAll(/tick (\d{16})\b/g)) out.push(Number(m[1]) / 1000);
  return out;
}
