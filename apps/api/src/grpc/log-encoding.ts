import { ImageBuilderService, LogsResponse } from '@imgbuilder/proto';
import type { BuildEvent } from '@imgbuilder/common/build-life';

/**
 * One log chunk goes to every subscriber of a build; encoding it once instead of once per subscriber is most of
 * the fan-out cost at hundreds of subscribers. The Logs method's serializer therefore also accepts bytes that are
 * already an encoded LogsResponse.
 */
export const imageBuilderDefinition = {
  ...ImageBuilderService,
  logs: {
    ...ImageBuilderService.logs,
    responseSerialize: (value: LogsResponse | EncodedLogsResponse): Buffer =>
      Buffer.isBuffer(value) ? value : Buffer.from(LogsResponse.encode(value).finish()),
  },
};

/** A LogsResponse already encoded to wire bytes. */
export type EncodedLogsResponse = Buffer & { readonly __encodedLogsResponse: true };

const encoded = new WeakMap<BuildEvent, EncodedLogsResponse>();

/** The wire bytes of a log event, computed once per event object (shared by all live subscribers). */
export function encodeLogEvent(e: BuildEvent & { kind: 'log' }): EncodedLogsResponse {
  let bytes = encoded.get(e);
  if (!bytes) {
    bytes = Buffer.from(LogsResponse.encode({ content: Buffer.from(e.text) }).finish()) as EncodedLogsResponse;
    encoded.set(e, bytes);
  }
  return bytes;
}
