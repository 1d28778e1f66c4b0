import { status as GrpcStatus, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from '@grpc/grpc-js';
import type { Logger } from '@imgbuilder/common/logger';
import type { ApiMetrics } from '../metrics.js';
import { toServiceError } from './grpc-status.js';
import { callSignal } from './stream-writer.js';
import { SlowClientError } from '../errors.js';
import { endRpcSpan, rpcSpan } from './rpc-span.js';
import { withSpan } from '@imgbuilder/common/tracing';

/** What every call is counted and its errors logged with. */
export interface CallContext {
  metrics: ApiMetrics;
  log: Logger;
}

/** Runs a unary rpc: counts the call by outcome and answers a failure with its gRPC status (grpc-status.ts). */
export function serveUnary<Req, Res>(ctx: CallContext, method: string, call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>, fn: (req: Req) => Promise<Res>): void {
  const end = ctx.metrics.callStarted(method);
  const span = rpcSpan(method, call.metadata);
  withSpan(span, () => fn(call.request)).then(
    (res) => {
      end('OK');
      endRpcSpan(span);
      cb(null, res);
    },
    (err: unknown) => {
      const e = toServiceError(err, ctx.log, method);
      end(GrpcStatus[e.code]);
      endRpcSpan(span, e);
      cb(e);
    },
  );
}

/**
 * Runs a server-streaming rpc: `fn` writes with a signal that fires when the client goes away; the stream ends when
 * it returns, or with the gRPC status of what it threw. A client gone is not written to again.
 */
export async function serveStream<Req, Res>(ctx: CallContext, method: string, call: ServerWritableStream<Req, Res>, fn: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const end = ctx.metrics.callStarted(method);
  const { signal, done } = callSignal(call as ServerWritableStream<unknown, unknown>);
  const span = rpcSpan(method, call.metadata);
  try {
    await withSpan(span, () => fn(signal));
    end('OK');
    endRpcSpan(span);
    if (!signal.aborted) call.end();
  } catch (err) {
    if (err instanceof SlowClientError) ctx.log.info({ method, err: err.message }, 'slow client dropped');
    const e = toServiceError(err, ctx.log, method);
    end(GrpcStatus[e.code]);
    endRpcSpan(span, e);
    if (!signal.aborted) call.emit('error', e);
  } finally {
    done();
  }
}
