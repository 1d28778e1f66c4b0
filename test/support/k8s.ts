import { containers, dataOf, find, repoPath, type Doc } from './manifests.js';

// What the manifest tests of every tier share: where the manifests are, what they must hold, how to read them.
export const BASE = repoPath('infra/k8s/base');
export const OVERLAY = repoPath('infra/k8s/overlays/example');
export const ENGINE = repoPath('infra/engine');
export const SECRET_KEYS = ['IMGBUILDER_SECRET_KEY', 'REDIS_URL', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'];
/** Credentials of the bundled Redis and MinIO: never in the API's or the workers' environment. */
export const BUNDLED_KEYS = ['REDIS_PASSWORD', 'MINIO_ROOT_USER', 'MINIO_ROOT_PASSWORD'];
/** What engine-start.sh writes once the egress policy is in, and the engine's startup probe and healthcheck require. */
export const ENGINE_MARKER = '/run/imgbuilder-engine-ready';
/** Settings deliberately absent from the ConfigMap, and why. */
export const UNSET_ON_PURPOSE: Record<string, string> = {
  IMGBUILDER_GRPC_ADDR: 'the default :8080 is what the probes and Service use',
  IMGBUILDER_METRICS_ADDR: 'its default differs between API (:9090) and worker (:9091)',
  IMGBUILDER_TLS_CERT: 'TLS is an opt-in that also needs files mounted',
  IMGBUILDER_TLS_KEY: 'TLS is an opt-in that also needs files mounted',
  IMGBUILDER_TLS_CA: 'TLS is an opt-in that also needs files mounted',
  IMGBUILDER_PUBLIC_URL: 'only IMGBUILDER_LOG_INFO=supervisor needs it, and it names an Ingress of the installation',
  IMGBUILDER_TRACE_URL: 'a link template into the installation\'s own tracing UI; empty shows the trace id without a link',
  IMGBUILDER_REDIS_TLS_CA: 'rediss:// with a private CA is an opt-in that also needs a file mounted',
  IMGBUILDER_BUILD_EGRESS_PROBE_IMAGE: "the worker makes its probe image from the service image's busybox",
  IMGBUILDER_BUILD_CGROUP_ROOT: "the worker does not share the engine's host in a pod",
  IMGBUILDER_TOKENS_FILE: 'access tokens are an opt-in that needs a file mounted (Gitpod reaches the API over mTLS)',
  IMGBUILDER_HTTP_ADDR: "the dashboard's default :8081 is shared with the supervisor endpoint; it stays off without tokens",
  IMGBUILDER_DASHBOARD_TOKEN: 'a secret, and the dashboard an opt-in: set it in an overlay Secret',
  IMGBUILDER_LIMITS_AGENT: "the agent's socket is a path on the volume the worker and engine containers share (worker.yaml sets it on both)",
  IMGBUILDER_CACHE_REPOSITORY: 'unset, <base repository>/cache holds the cache refs, on the registry whose credentials the installation has',
  IMGBUILDER_FAULT_EXIT_BEFORE_ENQUEUE: 'a fault point for tests only',
  IMGBUILDER_INSECURE_DEV_KEY: 'development only: production sets IMGBUILDER_SECRET_KEY',
  IMGBUILDER_LOG_TOKEN_PREVIOUS_KEY_ID: 'set only while a log-token key rotation is under way',
  IMGBUILDER_LOG_TOKEN_KEY_ID: 'the default key id serves until an overlay sets a new one to revoke every supervisor log token',
  IMGBUILDER_LOG_TOKEN_TTL_AFTER_END: 'the default (24h) suits; a *TOKEN* name is kept out of the ConfigMap by the no-secrets check',
};

export const byKind = (docs: Doc[], kind: string) => docs.filter((d) => d.kind === kind);
export const container = (doc: Doc, name: string): Doc => {
  const c = containers(doc).find((x) => x.name === name);
  if (!c) throw new Error(`${doc.metadata.name} has no container ${name}`);
  return c;
};
export const portNumber = (c: Doc, port: number | string) => (typeof port === 'number' ? port : c.ports.find((p: Doc) => p.name === port)?.containerPort);
export const hostPort = (url: string) => new URL(url).host;
/** A Kubernetes quantity with a binary suffix (`2Gi`) in bytes. */
export const quantity = (q: string) => {
  const m = /^(\d+)(Ki|Mi|Gi|Ti)?$/.exec(q);
  if (!m) throw new Error(`unexpected quantity ${q}`);
  return Number(m[1]) * 1024 ** (['', 'Ki', 'Mi', 'Gi', 'Ti'].indexOf(m[2] ?? ''));
};
/** The settings a container sees: its envFrom ConfigMap and Secret plus its own env. */
export const environmentOf = (docs: Doc[], c: Doc): Record<string, string> => {
  const env: Record<string, string> = {};
  for (const src of c.envFrom ?? []) {
    if (src.configMapRef) Object.assign(env, dataOf(find(docs, 'ConfigMap', src.configMapRef.name)));
    if (src.secretRef) Object.assign(env, dataOf(find(docs, 'Secret', src.secretRef.name)));
  }
  for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  return env;
};
