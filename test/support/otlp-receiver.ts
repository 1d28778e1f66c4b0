import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import protobuf from 'protobufjs';

/** One span as a collector sees it, from either OTLP/HTTP encoding. */
export interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  /** Empty for a root span. */
  parentSpanId: string;
  name: string;
  kind: number;
  startMs: number;
  endMs: number;
  /** 0 unset, 1 ok, 2 error. */
  status: { code: number; message: string };
  attributes: Record<string, string | number | boolean>;
  links: { traceId: string; spanId: string }[];
}

// The part of opentelemetry-proto's ExportTraceServiceRequest this test reads; field numbers as upstream.
const OTLP_PROTO = `
syntax = "proto3";
message AnyValue { oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4; } }
message KeyValue { string key = 1; AnyValue value = 2; }
message Resource { repeated KeyValue attributes = 1; }
message Status { string message = 2; int32 code = 3; }
message Link { bytes trace_id = 1; bytes span_id = 2; }
message Span {
  bytes trace_id = 1; bytes span_id = 2; bytes parent_span_id = 4; string name = 5; int32 kind = 6;
  fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9;
  repeated Link links = 13; Status status = 15;
}
message ScopeSpans { repeated Span spans = 2; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
`;
const ExportRequest = protobuf.parse(OTLP_PROTO, { keepCase: false }).root.lookupType('ExportTraceServiceRequest');

interface RawValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
}
interface RawKeyValue {
  key: string;
  value?: RawValue;
}
interface RawSpan {
  traceId: string | Uint8Array;
  spanId: string | Uint8Array;
  parentSpanId?: string | Uint8Array;
  name: string;
  kind?: number;
  startTimeUnixNano: string | number | { toString(): string };
  endTimeUnixNano: string | number | { toString(): string };
  attributes?: RawKeyValue[];
  links?: { traceId: string | Uint8Array; spanId: string | Uint8Array }[];
  status?: { code?: number; message?: string };
}
interface RawRequest {
  resourceSpans?: { resource?: { attributes?: RawKeyValue[] }; scopeSpans?: { spans?: RawSpan[] }[] }[];
}

/**
 * A collector's OTLP/HTTP trace endpoint on loopback (POST /v1/traces), reading both encodings the processes may
 * send (`http/json` and `http/protobuf`); keeps every span it receives.
 */
export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  /** Content types of the requests received, to tell which encodings arrived. */
  readonly contentTypes = new Set<string>();
  private waiters: (() => void)[] = [];

  private constructor(private readonly server: Server) {}

  static async start(): Promise<OtlpReceiver> {
    const server = createServer();
    const receiver = new OtlpReceiver(server);
    server.on('request', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const type = (req.headers['content-type'] ?? '').split(';')[0];
        try {
          if (req.method !== 'POST' || req.url !== '/v1/traces') throw new Error(`unexpected ${req.method} ${req.url}`);
          receiver.contentTypes.add(type);
          const body = Buffer.concat(chunks);
          const raw = type === 'application/json' ? (JSON.parse(body.toString('utf8')) as RawRequest) : (ExportRequest.toObject(ExportRequest.decode(body), { longs: String, defaults: true }) as RawRequest);
          receiver.spans.push(...flatten(raw));
          for (const w of receiver.waiters) w();
          res.writeHead(200, { 'content-type': type }).end(type === 'application/json' ? '{}' : '');
        } catch (err) {
          res.writeHead(400).end((err as Error).message);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return receiver;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** The spans of one trace. */
  trace(traceId: string): ReceivedSpan[] {
    return this.spans.filter((s) => s.traceId === traceId);
  }

  /** Resolves once `until` holds for the spans received so far; bounded. */
  waitFor(until: (spans: ReceivedSpan[]) => boolean, timeoutMs = 20_000): Promise<void> {
    if (until(this.spans)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!until(this.spans)) return;
        done();
        resolve();
      };
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`spans not received within ${timeoutMs} ms; have: ${this.spans.map((s) => s.name).join(', ')}`));
      }, timeoutMs);
      this.waiters.push(check);
    });
  }

  stop(): void {
    this.server.close();
  }
}

const hex = (id: string | Uint8Array | undefined): string => (id === undefined ? '' : typeof id === 'string' ? id : Buffer.from(id).toString('hex'));

function value(v: RawValue | undefined): string | number | boolean {
  if (!v) return '';
  if (v.stringValue !== undefined && v.stringValue !== '') return v.stringValue;
  if (v.intValue !== undefined && String(v.intValue) !== '0') return Number(v.intValue);
  if (v.doubleValue !== undefined && v.doubleValue !== 0) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  return v.stringValue ?? Number(v.intValue ?? 0);
}

function attributes(kvs: RawKeyValue[] | undefined): Record<string, string | number | boolean> {
  return Object.fromEntries((kvs ?? []).map((kv) => [kv.key, value(kv.value)]));
}

function flatten(raw: RawRequest): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const rs of raw.resourceSpans ?? []) {
    const service = String(attributes(rs.resource?.attributes)['service.name'] ?? '');
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          service,
          traceId: hex(s.traceId),
          spanId: hex(s.spanId),
          parentSpanId: hex(s.parentSpanId),
          name: s.name,
          kind: s.kind ?? 0,
          startMs: Number(BigInt(String(s.startTimeUnixNano)) / 1_000_000n),
          endMs: Number(BigInt(String(s.endTimeUnixNano)) / 1_000_000n),
          status: { code: s.status?.code ?? 0, message: s.status?.message ?? '' },
          attributes: attributes(s.attributes),
          links: (s.links ?? []).map((l) => ({ traceId: hex(l.traceId), spanId: hex(l.spanId) })),
        });
      }
    }
  }
  return out;
}
