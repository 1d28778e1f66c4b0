import { StringDecoder } from 'node:string_decoder';
import type { LogsRequest, LogsResponse } from '@imgbuilder/proto';
import type { BuildRecord, BuildStore } from '@imgbuilder/common/build-life';
import { RefCensor } from '@imgbuilder/common/censor';
import { BuildNotFound, InvalidRequest } from '@imgbuilder/common/errors';
import { parseImageRef } from '@imgbuilder/common/image-ref';
import { readBuildLog, type BuildLogDeps } from '../logs/build-log.js';
import { encodeLogEvent } from './log-encoding.js';

/** The build a Logs request names: by build_id, else the latest build of build_ref. */
export async function requestedBuild(req: LogsRequest, store: BuildStore): Promise<BuildRecord> {
  let buildId = req.buildId;
  if (!buildId && req.buildRef) {
    try {
      parseImageRef(req.buildRef);
    } catch {
      throw new BuildNotFound();
    }
    buildId = (await store.latestIdForRef(req.buildRef)) ?? '';
  }
  if (!buildId) {
    if (!req.buildRef) throw new InvalidRequest('give build_id or build_ref');
    throw new BuildNotFound();
  }
  const record = await store.get(buildId);
  if (!record) throw new BuildNotFound(buildId);
  return record;
}

/**
 * Sends a build's log through `send` from its start to its end (build-log.ts), with the given refs replaced when
 * `censored` lists any (Logs' `censored`).
 */
export async function sendBuildLog(record: BuildRecord, deps: BuildLogDeps, censored: readonly string[] | undefined, send: (message: LogsResponse) => Promise<void>, signal: AbortSignal): Promise<void> {
  // Censoring holds back a ref's length of text so a ref split across chunks is still caught; flushed at the end.
  const censor = censored ? new RefCensor(censored) : undefined;
  const decoder = new StringDecoder('utf8');
  const sendText = async (data: Buffer) => {
    if (!censor) return send({ content: data });
    const text = censor.push(decoder.write(data));
    if (text) await send({ content: Buffer.from(text) });
  };
  for await (const piece of readBuildLog(record, deps, signal)) {
    if (Buffer.isBuffer(piece)) await sendText(piece);
    else if (censor) await sendText(Buffer.from(piece.text));
    // Encoded once for every subscriber of the build (log-encoding.ts).
    else await send(encodeLogEvent(piece) as unknown as LogsResponse);
  }
  const rest = censor ? censor.end() + decoder.end() : '';
  if (rest && !signal.aborted) await send({ content: Buffer.from(rest) });
}
