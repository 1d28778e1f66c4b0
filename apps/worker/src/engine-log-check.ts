import { pack } from 'tar-stream';
import type Docker from 'dockerode';
import { randomUUID } from 'node:crypto';
import type { DockerEngine } from './docker-engine.js';
import { EngineError } from './errors.js';
import { BUILDKIT_STALLED, BUILDKIT_TRACE_ID, BuildkitProgress } from './builder/buildkit-progress.js';
import { probeImage } from './egress-check.js';
import { probeMarker } from './builder/build-sandbox.js';

/**
 * What the probe step prints: beyond the 2 MiB a Docker 20.10 engine's BuildKit keeps of a step by default, and
 * faster than its 200 KiB/s speed limit, in PROBE_CHUNKS pieces a few ms apart: one burst of over 1 MiB sets off
 * that engine's stuck progress stream (see BUILDKIT_STALLED), which is not what this probe asks.
 */
const PROBE_CHUNKS = 30;
const PROBE_BYTES = 3 * 1024 * 1024;
/** The probe step's exit code: it fails on purpose, so the probe leaves no image and no cache behind. */
const PROBE_EXIT = 42;
const PROBE_TIMEOUT_MS = 60_000;

export interface StepLogVerdict {
  /** `full`: a step's whole output reaches the log; `clipped`: the engine cuts it; `unchecked`: the probe could not run. */
  stepLogs: 'full' | 'clipped' | 'unchecked';
  /** Bytes of the probe step's output the engine passed on, of PROBE_BYTES. */
  received?: number;
  reason?: string;
}

/**
 * Whether the engine's BuildKit clips a step's output (its environment is not visible over its API, so this asks it):
 * a one-step BuildKit build on the probe image prints PROBE_BYTES and fails; the bytes of output the progress stream
 * carries tell. One to two seconds of engine work, once at worker start.
 */
export async function checkStepLogs(engine: DockerEngine, opts: { probeImage?: string; labels?: Record<string, string> } = {}): Promise<StepLogVerdict> {
  const signal = AbortSignal.timeout(PROBE_TIMEOUT_MS);
  try {
    const { image, shell } = await probeImage(engine.docker, opts.probeImage);
    const tool = (t: string) => (shell[0] === '/busybox' ? `/busybox ${t}` : t);
    // A step of its own each time: BuildKit shares a step running in two builds at once (workers starting together).
    const chunk = `${tool('yes')} imgbuilder-step-log-probe | ${tool('head')} -c ${Math.ceil(PROBE_BYTES / PROBE_CHUNKS)}; ${tool('sleep')} 0.03`;
    const script = `echo ${randomUUID()}; i=0; while [ $i -lt ${PROBE_CHUNKS} ]; do ${chunk}; i=$((i+1)); done; exit ${PROBE_EXIT}`;
    const tar = pack();
    tar.entry({ name: 'Dockerfile' }, `FROM ${image}\nRUN ${JSON.stringify([...shell, '-c', script])}\n`);
    tar.finalize();
    const stream = await engine.docker.buildImage(tar as unknown as NodeJS.ReadableStream, { version: '2', nocache: true, labels: opts.labels, buildargs: { no_proxy: probeMarker('step-log-probe') }, abortSignal: signal } as unknown as Docker.ImageBuildOptions);
    let received = 0;
    const progress = new BuildkitProgress();
    const failure = await engine.follow(stream, (p) => {
      if (p.id !== BUILDKIT_TRACE_ID) return;
      for (const l of progress.trace(p.aux)?.logs ?? []) received += l.msg.length;
      if (progress.stalled) throw new EngineError(BUILDKIT_STALLED);
    });
    const failed = failure?.errorDetail?.message ?? failure?.error ?? '';
    if (!failed.includes(`exit code: ${PROBE_EXIT}`)) return { stepLogs: 'unchecked', reason: `the probe build did not run its step: ${failed || 'it succeeded'}` };
    return received >= PROBE_BYTES ? { stepLogs: 'full', received } : { stepLogs: 'clipped', received };
  } catch (err) {
    return { stepLogs: 'unchecked', reason: `the probe build could not run: ${(err as Error).message}` };
  }
}
