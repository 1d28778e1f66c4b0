import { status as GrpcStatus, type Metadata, type ServiceError } from '@grpc/grpc-js';
import { contextFrom, failSpan, SpanKind, startSpan, tracingEnabled, type Span } from '@imgbuilder/common/tracing';

const SERVICE = 'builder.ImageBuilder';

/** The server span of one rpc, continuing the caller's W3C `traceparent` when its metadata carries one. */
export function rpcSpan(method: string, metadata: Metadata): Span {
  return startSpan(`${SERVICE}/${method}`, {
    kind: SpanKind.SERVER,
    parent: tracingEnabled() ? contextFrom(metadata.getMap()) : undefined,
    attributes: { 'rpc.system': 'grpc', 'rpc.service': SERVICE, 'rpc.method': method },
  });
}

/** Ends an rpc's span with the status the client gets, and a failure's message as the client reads it. */
export function endRpcSpan(span: Span, err?: ServiceError): void {
  span.setAttribute('rpc.grpc.status_code', err?.code ?? GrpcStatus.OK);
  if (err) failSpan(span, err.details);
  span.end();
}
