import { basename, resolve } from 'node:path';
import { BuildRequest, BuildStatus, LogsRequest, type BuildResponse, type BuildSource, type LogsResponse } from '@imgbuilder/proto';
import { gitBuildSource, snapshotBuildSource } from './build-source.js';
import { CliError, EXIT, usageError } from './cli-error.js';
import type { Connection } from './connection.js';
import { archiveStream, planContext } from './context-archive.js';
import { formatBytes } from '@imgbuilder/common/byte-size';
import { formatDuration } from '@imgbuilder/common/duration';
import { Output } from './output.js';
import { uploadSnapshot } from './snapshot-upload.js';

export interface BuildOptions {
  file?: string;
  force?: boolean;
  json?: boolean;
  git?: string;
  context?: string;
}

/** A quiet build gets a "still running" line after this long without log output. */
const QUIET_NOTICE_MS = 15_000;
/** The Logs stream ends with the build; this bounds the wait for its tail after the terminal status. */
const LOG_TAIL_MS = 30_000;

/**
 * `imgbuilder build`: uploads DIR as a snapshot (or names a git source), calls Build, shows its status and log until
 * the build ends. Ctrl-C detaches: the build keeps running and `imgbuilder logs <id> -f` re-attaches.
 */
export async function buildCommand(dir: string | undefined, opts: BuildOptions, conn: Connection): Promise<number> {
  const out = new Output(Boolean(opts.json));
  const started = Date.now();
  const state = { buildId: '' };
  const interrupt = new AbortController();
  const onSigint = () => {
    interrupt.abort();
    if (state.buildId) {
      out.progress(`detached; build ${state.buildId} keeps running. Re-attach with: imgbuilder logs ${state.buildId} -f`);
      out.event('detached', { build_id: state.buildId });
    } else {
      out.progress('interrupted before a build was started');
      out.event('interrupted', {});
    }
    conn.close();
    process.exit(EXIT.interrupted);
  };
  process.on('SIGINT', onSigint);
  try {
    let source: BuildSource;
    if (opts.git) {
      if (dir) throw usageError('give either DIR or --git, not both');
      source = gitBuildSource(opts.git, { dockerfile: opts.file, context: opts.context });
    } else {
      if (opts.context) throw usageError('--context applies to --git builds; for a local build, DIR is the context');
      source = await uploadDirectory(dir ?? '.', opts.file, conn, out, interrupt.signal);
    }
    return await followBuild(conn, source, Boolean(opts.force), out, started, state);
  } finally {
    process.off('SIGINT', onSigint);
  }
}

async function uploadDirectory(dir: string, dockerfile: string | undefined, conn: Connection, out: Output, signal: AbortSignal): Promise<BuildSource> {
  const t0 = Date.now();
  const plan = await planContext(dir, dockerfile);
  out.progress(`uploading ${dir}: ${plan.files} files, ${formatBytes(plan.bytes, 'rounded')}`);
  const res = await uploadSnapshot(conn.uploads, archiveStream(plan), basename(resolve(dir)), signal);
  const elapsed = Date.now() - t0;
  out.progress(`uploaded ${formatBytes(Number(res.size), 'rounded')} compressed as ${res.snapshot} (${formatDuration(elapsed, 'elapsed')})`);
  out.event('upload', { snapshot: res.snapshot, files: plan.files, bytes: plan.bytes, compressed_bytes: Number(res.size), elapsed_ms: elapsed });
  return snapshotBuildSource(res.snapshot, plan.dockerfilePath, plan.contextPath);
}

function followBuild(conn: Connection, source: BuildSource, force: boolean, out: Output, started: number, state: { buildId: string }): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const call = conn.builder.build(BuildRequest.fromPartial({ source, forceRebuild: force, triggeredBy: conn.authenticated ? '' : 'imgbuilder-cli' }));
    let logs: Promise<void> | undefined;
    let terminal: BuildResponse | undefined;
    let announced = false;
    let lastOutput = Date.now();
    const elapsed = () => Date.now() - started;
    const onLog = () => {
      lastOutput = Date.now();
    };
    call.on('data', (m: BuildResponse) => {
      if (m.info?.buildId && !state.buildId) {
        state.buildId = m.info.buildId;
        logs = streamBuildLog(conn, state.buildId, out, onLog);
      }
      if (m.status === BuildStatus.running) {
        const quiet = Date.now() - lastOutput >= QUIET_NOTICE_MS;
        if (!announced || quiet) {
          out.progress(`build ${state.buildId} ${announced ? 'still running' : 'running'} (${formatDuration(elapsed(), 'elapsed')}) → ${m.ref}`);
          out.event('status', { status: 'running', build_id: state.buildId, ref: m.ref, base_ref: m.baseRef, elapsed_ms: elapsed() });
          announced = true;
          lastOutput = Date.now();
        }
      } else if (m.status === BuildStatus.done_success || m.status === BuildStatus.done_failure) {
        terminal = m;
      }
    });
    call.on('error', reject);
    call.on('end', () => {
      void (async () => {
        if (!terminal) {
          const hint = state.buildId ? `; re-attach with: imgbuilder logs ${state.buildId} -f` : '';
          throw new CliError('UNAVAILABLE', `the Build stream ended without a result${hint}`);
        }
        if (logs) await Promise.race([logs, new Promise((r) => setTimeout(r, LOG_TAIL_MS).unref())]);
        const t = terminal;
        const ok = t.status === BuildStatus.done_success;
        const cached = !state.buildId && ok;
        const took = formatDuration(elapsed(), 'elapsed');
        if (cached) out.progress(`image is up to date: it was built before (${took})`);
        else if (ok) out.progress(`build ${state.buildId} succeeded in ${took}`);
        else out.progress(`build ${state.buildId} failed after ${took}`);
        out.event('done', {
          status: BuildStatus[t.status],
          build_id: state.buildId || undefined,
          ref: t.ref,
          base_ref: t.baseRef,
          message: t.message || undefined,
          cached: cached || undefined,
          elapsed_ms: elapsed(),
        });
        if (!ok) {
          // User-caused failures already start "build failed: " (Gitpod's marker): say it once.
          if (!out.json) process.stderr.write(`imgbuilder: build failed: ${(t.message || 'no message').replace(/^build failed: /, '').replace(/\s*\n\s*/g, '; ')}\n`);
          return EXIT.buildFailed;
        }
        out.result(t.ref);
        return EXIT.ok;
      })().then(resolvePromise, reject);
    });
  });
}

/** Follows the build's log (the Logs rpc ends when the build ends); a log hiccup never fails the build command. */
function streamBuildLog(conn: Connection, buildId: string, out: Output, onData: () => void): Promise<void> {
  return new Promise((resolve) => {
    const stream = conn.builder.logs(LogsRequest.fromPartial({ buildId }));
    stream.on('data', (m: LogsResponse) => {
      onData();
      out.log(Buffer.from(m.content));
    });
    stream.on('error', (err: Error & { details?: string }) => {
      out.progress(`the build log is unavailable: ${err.details ?? err.message}; see imgbuilder logs ${buildId}`);
      resolve();
    });
    stream.on('end', () => resolve());
  });
}
