import {
  context,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type TextMapGetter,
} from '@opentelemetry/api';
import type { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';

export { SpanKind, type Context, type Span };

/**
 * OpenTelemetry for one process, configured by the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT (or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), OTEL_EXPORTER_OTLP_PROTOCOL (`http/protobuf` or `http/json`),
 * OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_* — the exporters and the SDK read
 * them themselves. Without an endpoint nothing is set up or even loaded: every span below is the API's no-op span.
 */
export interface TracingSettings {
  OTEL_EXPORTER_OTLP_ENDPOINT?: string;
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?: string;
  OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' | 'http/json';
}

const tracer = trace.getTracer('imgbuilder');
let provider: NodeTracerProvider | undefined;

/** Registers the tracer provider, W3C propagation and async context when an endpoint is set; returns whether it did. */
export async function startTracing(env: TracingSettings, serviceName: string): Promise<boolean> {
  if (provider || !(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)) return false;
  // Loaded only when used: a process that exports nothing pays nothing for the SDK.
  const [{ NodeTracerProvider, BatchSpanProcessor }, { defaultResource, detectResources, envDetector, resourceFromAttributes }, { OTLPTraceExporter }] = await Promise.all([
    import('@opentelemetry/sdk-trace-node'),
    import('@opentelemetry/resources'),
    env.OTEL_EXPORTER_OTLP_PROTOCOL === 'http/json' ? import('@opentelemetry/exporter-trace-otlp-http') : import('@opentelemetry/exporter-trace-otlp-proto'),
  ]);
  // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (envDetector) win over the process's own name.
  const resource = defaultResource().merge(resourceFromAttributes({ 'service.name': serviceName })).merge(detectResources({ detectors: [envDetector] }));
  provider = new NodeTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())] });
  provider.register();
  return true;
}

/** Sends the spans still buffered (at shutdown); bounded by the exporter's own timeout. */
export async function stopTracing(): Promise<void> {
  await provider?.shutdown().catch(() => undefined);
}

/** Whether spans are recorded and exported (an endpoint is set). */
export function tracingEnabled(): boolean {
  return provider !== undefined;
}

export interface SpanOptions {
  attributes?: Attributes;
  kind?: SpanKind;
  links?: Link[];
  /** The parent; default: the active span. */
  parent?: Context;
}

/**
 * Runs `fn` inside a new span (the active one while it runs). A failure marks the span as an error with the error's
 * message — the domain errors' messages are what the client is told — and is rethrown.
 */
export function inSpan<T>(name: string, fn: (span: Span) => Promise<T>, opts: SpanOptions = {}): Promise<T> {
  return tracer.startActiveSpan(name, { attributes: opts.attributes, kind: opts.kind, links: opts.links }, opts.parent ?? context.active(), async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      failSpan(span, err instanceof Error ? err.message : String(err));
      throw err;
    } finally {
      span.end();
    }
  });
}

/**
 * Runs a queued job's work in the trace its job carries (`carrier`, see traceCarrier): a `queue wait` span from
 * when it was queued until now, then the work itself in a consumer span `name`.
 */
export function inJobTrace<T>(carrier: Record<string, string> | undefined, queuedAt: number, name: string, fn: (span: Span) => Promise<T>, attributes?: Attributes): Promise<T> {
  const parent = contextFrom(carrier);
  recordSpan('queue wait', new Date(queuedAt), new Date(), { parent, attributes });
  return inSpan(name, fn, { parent, kind: SpanKind.CONSUMER, attributes });
}

/** Starts a span without making it active (the caller ends it); see inSpan for most uses. */
export function startSpan(name: string, opts: SpanOptions = {}): Span {
  return tracer.startSpan(name, { attributes: opts.attributes, kind: opts.kind, links: opts.links }, opts.parent ?? context.active());
}

/** Runs `fn` with `span` active, so spans and log lines inside it belong to it. */
export function withSpan<T>(span: Span, fn: () => T): T {
  return context.with(trace.setSpan(context.active(), span), fn);
}

/** A span whose times were measured elsewhere (BuildKit's steps): started and ended at once, with those times. */
export function recordSpan(name: string, start: Date, end: Date, opts: SpanOptions & { error?: string }): void {
  const span = tracer.startSpan(name, { attributes: opts.attributes, kind: opts.kind, startTime: start }, opts.parent ?? context.active());
  if (opts.error !== undefined) failSpan(span, opts.error);
  span.end(end < start ? start : end);
}

/** Marks a span as failed with `message` (what the client is told). */
export function failSpan(span: Span | undefined, message: string): void {
  span?.setStatus({ code: SpanStatusCode.ERROR, message });
}

/** The active span, if any (a no-op span without tracing). */
export function activeSpan(): Span | undefined {
  return trace.getActiveSpan();
}

/** The active context, to parent spans made later from callbacks (stream events) on. */
export function activeContext(): Context {
  return context.active();
}

/** The W3C headers (`traceparent`, `tracestate`) of the active span, to carry it to another process; none without a trace. */
export function traceCarrier(ctx: Context = context.active()): Record<string, string> | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier.traceparent ? carrier : undefined;
}

/** The context a carrier (W3C headers, gRPC metadata as a map) continues; the root context without one. */
export function contextFrom(carrier: Record<string, unknown> | undefined): Context {
  return carrier ? propagation.extract(ROOT_CONTEXT, carrier, stringGetter) : ROOT_CONTEXT;
}

/** A link to the span a carrier names, when it names one. */
export function linkTo(carrier: Record<string, unknown> | undefined): Link[] {
  const sc = trace.getSpanContext(contextFrom(carrier));
  return sc && isSpanContextValid(sc) ? [{ context: sc }] : [];
}

/** The active trace's id, for log lines; undefined outside a trace. */
export function activeTraceId(): string | undefined {
  const sc = trace.getActiveSpan()?.spanContext();
  return sc && isSpanContextValid(sc) ? sc.traceId : undefined;
}

/** The trace id a `traceparent` names (`00-<trace id>-<span id>-<flags>`). */
export function traceIdOf(traceparent: string | undefined): string | undefined {
  const id = traceparent?.split('-')[1];
  return id && /^[0-9a-f]{32}$/.test(id) && !/^0+$/.test(id) ? id : undefined;
}

/** IMGBUILDER_TRACE_URL with its `{traceId}` filled in. */
export function traceUrl(template: string | undefined, traceId: string | undefined): string | undefined {
  return template && traceId ? template.replaceAll('{traceId}', traceId) : undefined;
}

/** Reads string header values only (gRPC's binary `-bin` metadata is no trace header). */
const stringGetter: TextMapGetter<Record<string, unknown>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => {
    const v = carrier[key];
    return typeof v === 'string' ? v : undefined;
  },
};
