import { z } from 'zod';

/** OpenTelemetry (tracing.ts): the standard variables the processes read themselves, and the dashboard's trace link. */
export const tracingFields = {
  /** Where spans go (OTLP/HTTP, `/v1/traces` appended); unset, nothing is traced or exported. The SDK reads these itself too. */
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url({ protocol: /^https?$/, error: 'an http(s) URL, e.g. http://otel-collector:4318' }).optional(),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.url({ protocol: /^https?$/, error: 'an http(s) URL, e.g. http://otel-collector:4318/v1/traces' }).optional(),
  OTEL_EXPORTER_OTLP_PROTOCOL: z.enum(['http/protobuf', 'http/json'], 'http/protobuf or http/json (OTLP over gRPC is not built in: point it at a collector\'s HTTP port, 4318)').default('http/protobuf'),
  /** The dashboard links a build's trace id here: a URL template with `{traceId}` (https://tracing.example/trace/{traceId}). */
  IMGBUILDER_TRACE_URL: z.url({ protocol: /^https?$/ }).refine((u) => u.includes('{traceId}'), 'a URL with {traceId} where the trace id goes').optional(),
};
