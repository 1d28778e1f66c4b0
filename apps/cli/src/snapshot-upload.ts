import type { Readable } from 'node:stream';
import type { ClientWritableStream, ServiceError } from '@grpc/grpc-js';
import type { SnapshotUploadClient, UploadRequest, UploadResponse } from '@imgbuilder/proto';

/**
 * Streams `body` to the API's SnapshotUpload service, honouring back-pressure; returns the stored snapshot's key.
 * A server-side refusal (size cap) ends the upload at once with the server's error.
 */
export function uploadSnapshot(client: SnapshotUploadClient, body: Readable, name: string, signal: AbortSignal): Promise<UploadResponse> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err: Error | null, res?: UploadResponse) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      body.destroy();
      if (err) reject(err);
      else resolve(res!);
    };
    const call: ClientWritableStream<UploadRequest> = client.upload((err: ServiceError | null, res: UploadResponse) => finish(err, res));
    const onAbort = () => {
      call.cancel();
      finish(new Error('upload interrupted'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    // Write errors surface through the call's status callback.
    call.on('error', () => undefined);
    call.write({ payload: { $case: 'metadata', metadata: { name, size: '0' } } });
    body.on('data', (chunk: Buffer) => {
      if (settled) return;
      if (!call.write({ payload: { $case: 'chunk', chunk } })) {
        body.pause();
        call.once('drain', () => body.resume());
      }
    });
    body.on('end', () => call.end());
    body.on('error', (err) => {
      call.cancel();
      finish(err);
    });
  });
}
