import { z } from 'zod';
import { duration, bool, int, byteSize, hostPort } from './values.js';

/**
 * The API's: the gRPC port and its limits, streams, uploads, access tokens, the dashboard and the supervisor
 * endpoint.
 */
export const apiFields = {
  /** gRPC listen address of the API. */
  IMGBUILDER_GRPC_ADDR: hostPort('0.0.0.0:8080'),
  /** Queued (not yet running) builds beyond which Build answers RESOURCE_EXHAUSTED. */
  IMGBUILDER_MAX_QUEUED_BUILDS: int(1000, 1),
  /** Queued builds one caller may have; beyond, its Build answers RESOURCE_EXHAUSTED. 0: no limit. */
  IMGBUILDER_MAX_QUEUED_PER_CALLER: int(0, 0),
  /** Quiet Build streams repeat their `running` message this often, so proxies never see an idle stream. */
  IMGBUILDER_STREAM_KEEPALIVE: duration('15s'),
  /** A Build/Logs client that reads nothing this long is dropped, so slow readers cannot pin server memory. */
  IMGBUILDER_SLOW_CLIENT_TIMEOUT: duration('2m'),
  /** TLS for the gRPC port; with a CA, clients must present a certificate it signed. */
  IMGBUILDER_TLS_CERT: z.string().optional(),
  IMGBUILDER_TLS_KEY: z.string().optional(),
  IMGBUILDER_TLS_CA: z.string().optional(),
  /** Largest gRPC message accepted or sent. */
  IMGBUILDER_MAX_MESSAGE_BYTES: byteSize('16MiB'),
  /** Concurrent streams one connection may open. */
  IMGBUILDER_MAX_CONCURRENT_STREAMS: int(4096, 1),
  /** Largest snapshot upload through the CLI's upload service. */
  IMGBUILDER_MAX_UPLOAD_BYTES: byteSize('1GiB'),
  /** Snapshot uploads one API process receives at once; more get RESOURCE_EXHAUSTED. */
  IMGBUILDER_MAX_CONCURRENT_UPLOADS: int(16, 1),
  /** Temp-file bytes all uploads in progress on one API process may hold together. */
  IMGBUILDER_UPLOAD_DISK_BYTES: byteSize('4GiB'),
  /** An upload (receiving and storing) ends within this long, however slowly the client sends. */
  IMGBUILDER_UPLOAD_TIMEOUT: duration('30m'),
  /**
   * What BuildInfo.log_info points at: `presigned` (a presigned GET of the log object) or `supervisor` (this API's
   * Gitpod-supervisor endpoint, so Gitpod's server streams the live log into its dashboard).
   */
  IMGBUILDER_LOG_INFO: z.enum(['presigned', 'supervisor']).default('presigned'),
  /** Origin under which clients reach the supervisor endpoint (log_info.url); required with IMGBUILDER_LOG_INFO=supervisor. */
  IMGBUILDER_PUBLIC_URL: z
    .string()
    .refine((s) => /^https?:\/\/[^/?#\s]+\/?$/.test(s), 'expected an origin like https://imgbuilder.example.com (Gitpod replaces any path)')
    .optional(),
  /** Listen address of the supervisor endpoint (HTTP, WebSocket) with IMGBUILDER_LOG_INFO=supervisor. */
  /**
   * Id of the key supervisor log tokens are signed with (derived from IMGBUILDER_SECRET_KEY and this id): a new id
   * revokes every token signed under the old one, without touching the secret key.
   */
  IMGBUILDER_LOG_TOKEN_KEY_ID: z.string().regex(/^[A-Za-z0-9_-]{1,16}$/, 'letters, digits, - and _ only (at most 16)').default('1'),
  /** The key id before the last rotation, still accepted while its tokens run out; unset after. */
  IMGBUILDER_LOG_TOKEN_PREVIOUS_KEY_ID: z.string().regex(/^[A-Za-z0-9_-]{1,16}$/, 'letters, digits, - and _ only (at most 16)').optional(),
  /** A finished build's supervisor log tokens stop working this long after its end. */
  IMGBUILDER_LOG_TOKEN_TTL_AFTER_END: duration('24h'),
  IMGBUILDER_SUPERVISOR_ADDR: hostPort('0.0.0.0:8081'),
  /**
   * JSON file listing access tokens (`{"tokens":[{"name","role":"viewer|builder|admin","sha256"}]}`): every gRPC call
   * but health then needs `authorization: Bearer <token>`. Unset: gRPC is open (deployments behind mTLS).
   */
  IMGBUILDER_TOKENS_FILE: z.string().optional(),
  /**
   * Dashboard (HTTP) listen address; empty turns it off. With IMGBUILDER_LOG_INFO=supervisor and the same address as
   * IMGBUILDER_SUPERVISOR_ADDR (both default to :8081), one server serves both.
   */
  IMGBUILDER_HTTP_ADDR: z.union([z.literal(''), hostPort('0.0.0.0:8081')]).default('0.0.0.0:8081'),
  /** Without a tokens file, the one token that opens the dashboard (viewer); without either the dashboard is off. */
  IMGBUILDER_DASHBOARD_TOKEN: z.string().min(16, 'at least 16 characters').optional(),
  /** How long a dashboard login (its session cookie) lasts. */
  IMGBUILDER_DASHBOARD_SESSION_TTL: duration('12h', 30 * 86_400_000),
  /** Log streams (SSE) one dashboard caller may hold open on one API process; more get 429. */
  IMGBUILDER_DASHBOARD_STREAMS_PER_CALLER: int(16, 1),
  /** Test only: the API exits right before queueing a build it created (the enqueue window of the orphan test). */
  IMGBUILDER_FAULT_EXIT_BEFORE_ENQUEUE: bool(false),
};
