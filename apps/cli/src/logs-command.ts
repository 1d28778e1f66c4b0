import { LogsRequest, type BuildInfo, type LogsResponse } from '@imgbuilder/proto';
import { CliError, EXIT } from './cli-error.js';
import { unary, type Connection } from './connection.js';

/**
 * `imgbuilder logs BUILD_ID|REF [-f]`, printed on stdout.
 *
 * With -f: the Logs rpc, which replays the log from the start and follows a running build until it ends.
 * Without -f: what exists now. A finished build's Logs stream is complete and ends by itself; for a running build
 * the log stored so far is read through `BuildInfo.log_info.url` (the object the worker rewrites every few seconds),
 * so the command returns at once instead of waiting for the build.
 */
export async function logsCommand(target: string, opts: { follow?: boolean }, conn: Connection): Promise<number> {
  const byRef = /[/:@]/.test(target);
  if (!opts.follow) {
    const { builds } = await unary(conn.builder.listBuilds.bind(conn.builder), {});
    const live = builds.find((b) => (byRef ? b.ref === target : b.buildId === target));
    if (live) {
      await printStoredLog(live);
      return EXIT.ok;
    }
  }
  await new Promise<void>((resolve, reject) => {
    const stream = conn.builder.logs(LogsRequest.fromPartial(byRef ? { buildRef: target } : { buildId: target }));
    stream.on('data', (m: LogsResponse) => process.stdout.write(Buffer.from(m.content)));
    stream.on('error', reject);
    stream.on('end', resolve);
  });
  return EXIT.ok;
}

async function printStoredLog(build: BuildInfo): Promise<void> {
  const url = build.logInfo?.url;
  if (!url) throw new CliError('UNAVAILABLE', `build ${build.buildId} is running and its stored log has no URL; use -f to follow it`);
  const res = await fetch(url, { headers: build.logInfo?.headers ?? {}, signal: AbortSignal.timeout(60_000) }).catch((err: Error) => {
    throw new CliError('UNAVAILABLE', `cannot read the stored log of running build ${build.buildId}: ${(err.cause as Error)?.message ?? err.message}; use -f to follow it`);
  });
  // Nothing stored yet: the build has just started.
  if (res.status === 404) return;
  if (!res.ok || !res.body) throw new CliError('UNAVAILABLE', `cannot read the stored log of running build ${build.buildId}: HTTP ${res.status}; use -f to follow it`);
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) process.stdout.write(chunk);
}
