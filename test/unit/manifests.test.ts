import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { EnvSchema, loadEnv } from '@imgbuilder/common/config';
import { parseByteSize } from '@imgbuilder/common/byte-size';
import { parseDuration } from '@imgbuilder/common/duration';
import { FetchPolicy } from '@imgbuilder/common/fetch-policy';
import {
  containers,
  dataOf,
  find,
  hasKubectl,
  kubectlKustomize,
  loadYaml,
  parseEnvFile,
  podSpec,
  readKustomization,
  referencedFiles,
  render,
  repoPath,
  validateManifest,
  type Doc,
} from '../support/manifests.js';

const BASE = repoPath('infra/k8s/base');
const OVERLAY = repoPath('infra/k8s/overlays/example');
const ENGINE = repoPath('infra/engine');
const SECRET_KEYS = ['IMGBUILDER_SECRET_KEY', 'REDIS_URL', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'];
/** Credentials of the bundled Redis and MinIO: never in the API's or the workers' environment. */
const BUNDLED_KEYS = ['REDIS_PASSWORD', 'MINIO_ROOT_USER', 'MINIO_ROOT_PASSWORD'];
/** What engine-start.sh writes once the egress policy is in, and the engine's startup probe and healthcheck require. */
const ENGINE_MARKER = '/run/imgbuilder-engine-ready';
/** Settings deliberately absent from the ConfigMap, and why. */
const UNSET_ON_PURPOSE: Record<string, string> = {
  IMGBUILDER_GRPC_ADDR: 'the default :8080 is what the probes and Service use',
  IMGBUILDER_METRICS_ADDR: 'its default differs between API (:9090) and worker (:9091)',
  IMGBUILDER_TLS_CERT: 'TLS is an opt-in that also needs files mounted',
  IMGBUILDER_TLS_KEY: 'TLS is an opt-in that also needs files mounted',
  IMGBUILDER_TLS_CA: 'TLS is an opt-in that also needs files mounted',
  IMGBUILDER_PUBLIC_URL: 'only IMGBUILDER_LOG_INFO=supervisor needs it, and it names an Ingress of the installation',
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

const byKind = (docs: Doc[], kind: string) => docs.filter((d) => d.kind === kind);
const container = (doc: Doc, name: string): Doc => {
  const c = containers(doc).find((x) => x.name === name);
  if (!c) throw new Error(`${doc.metadata.name} has no container ${name}`);
  return c;
};
const portNumber = (c: Doc, port: number | string) => (typeof port === 'number' ? port : c.ports.find((p: Doc) => p.name === port)?.containerPort);
const hostPort = (url: string) => new URL(url).host;
/** A Kubernetes quantity with a binary suffix (`2Gi`) in bytes. */
const quantity = (q: string) => {
  const m = /^(\d+)(Ki|Mi|Gi|Ti)?$/.exec(q);
  if (!m) throw new Error(`unexpected quantity ${q}`);
  return Number(m[1]) * 1024 ** (['', 'Ki', 'Mi', 'Gi', 'Ti'].indexOf(m[2] ?? ''));
};
/** The settings a container sees: its envFrom ConfigMap and Secret plus its own env. */
const environmentOf = (docs: Doc[], c: Doc): Record<string, string> => {
  const env: Record<string, string> = {};
  for (const src of c.envFrom ?? []) {
    if (src.configMapRef) Object.assign(env, dataOf(find(docs, 'ConfigMap', src.configMapRef.name)));
    if (src.secretRef) Object.assign(env, dataOf(find(docs, 'Secret', src.secretRef.name)));
  }
  for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  return env;
};

describe('Kubernetes manifests: kustomization files', () => {
  it.each([
    ['base', BASE],
    ['example overlay', OVERLAY],
    ['engine scripts', ENGINE],
  ])('%s lists every manifest in its directory, and every listed file exists', (_, dir) => {
    const referenced = referencedFiles(dir);
    const present = readdirSync(dir).filter((f) => f !== 'kustomization.yaml' && statSync(join(dir, f)).isFile());
    expect(present.filter((f) => !referenced.includes(f)), 'files in the directory that kustomize would ignore').toEqual([]);
    expect(referenced.filter((f) => !present.includes(f)), 'listed files that do not exist').toEqual([]);
  });

  it('the overlay builds on the base and replaces both placeholder Secrets', () => {
    const k = readKustomization(OVERLAY);
    expect(k.resources).toContain('../../base');
    expect(k.secretGenerator?.map((g) => [g.name, g.behavior])).toEqual([
      ['imgbuilder-secrets', 'replace'],
      ['imgbuilder-registry-auth', 'replace'],
      ['imgbuilder-bundled-secrets', 'replace'],
      ['imgbuilder-registry-htpasswd', 'replace'],
    ]);
    expect(Object.keys(parseEnvFile(readFileSync(join(OVERLAY, 'secrets.env'), 'utf8'))).sort()).toEqual([...SECRET_KEYS].sort());
    expect(Object.keys(parseEnvFile(readFileSync(join(OVERLAY, 'bundled-secrets.env'), 'utf8'))).sort()).toEqual([...BUNDLED_KEYS].sort());
  });
});

describe('schema validation', () => {
  it('rejects a Deployment without spec.selector (the validator can fail)', () => {
    const broken = loadYaml(join(BASE, 'api.yaml')).find((d) => d.kind === 'Deployment')!;
    expect(() => validateManifest(broken)).not.toThrow();
    delete broken.spec.selector;
    expect(() => validateManifest(broken)).toThrow(/selector/);
  });

  it('rejects a ScaledObject without triggers and a container port written as a string', () => {
    const so = loadYaml(join(BASE, 'worker-scaledobject.yaml'))[0];
    delete so.spec.triggers;
    expect(() => validateManifest(so)).toThrow(/triggers/);
    const api = loadYaml(join(BASE, 'api.yaml'))[0];
    api.spec.template.spec.containers[0].ports[0].containerPort = '8080';
    expect(() => validateManifest(api)).toThrow(/containerPort must be integer/);
  });

  it('rejects a kind it has no schema for rather than passing it unchecked', () => {
    expect(() => validateManifest({ apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'x' } })).toThrow(/no schema/);
  });
});

const renders: [string, () => Doc[]][] = [
  ['base', () => render(BASE)],
  ['example overlay', () => render(OVERLAY)],
];
if (hasKubectl()) {
  renders.push(['base rendered by kubectl kustomize', () => kubectlKustomize(BASE)!], ['example overlay rendered by kubectl kustomize', () => kubectlKustomize(OVERLAY)!]);
}

describe.each(renders)('%s', (_, load) => {
  const docs = load();
  const config = dataOf(find(docs, 'ConfigMap', 'imgbuilder-config'));
  const secrets = dataOf(find(docs, 'Secret', 'imgbuilder-secrets'));
  const api = find(docs, 'Deployment', 'imgbuilder-api');
  const worker = find(docs, 'Deployment', 'imgbuilder-worker');

  it.each(docs.map((d) => [`${d.kind} ${d.metadata.name}`, d]))('%s is valid against the Kubernetes/KEDA schema', (_, doc) => {
    expect(() => validateManifest(doc)).not.toThrow();
  });

  it('API: at least 2 replicas, gRPC readiness probe on the gRPC port, liveness on /livez, drain before SIGTERM', () => {
    expect(api.spec.replicas).toBeGreaterThanOrEqual(2);
    const c = container(api, 'api');
    expect(c.args).toEqual(['api']);
    expect(c.ports.map((p: Doc) => p.containerPort).sort()).toEqual([8080, 9090]);
    expect(c.readinessProbe.grpc.port).toBe(8080);
    expect(c.startupProbe.grpc.port).toBe(8080);
    expect(c.livenessProbe.httpGet.path).toBe('/livez');
    expect(portNumber(c, c.livenessProbe.httpGet.port)).toBe(9090);
    const preStop = c.lifecycle.preStop.exec.command as string[];
    expect(preStop[0]).toBe('sleep');
    // The pod must outlive the preStop sleep plus the API's 10 s stream drain.
    expect(podSpec(api)!.terminationGracePeriodSeconds).toBeGreaterThan(Number(preStop[1]) + 10);
  });

  it('API and worker: /tmp holds one CLI upload and one build context at their size caps', () => {
    const tmpLimit = (d: Doc) => quantity(podSpec(d)!.volumes.find((v: Doc) => v.name === 'tmp').emptyDir.sizeLimit);
    expect(container(api, 'api').volumeMounts).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
    expect(tmpLimit(api)).toBeGreaterThanOrEqual(parseByteSize(config.IMGBUILDER_MAX_UPLOAD_BYTES)!);
    expect(container(worker, 'worker').volumeMounts).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
    expect(tmpLimit(worker)).toBeGreaterThanOrEqual(parseByteSize(config.IMGBUILDER_MAX_CONTEXT_BYTES)! * Number(config.IMGBUILDER_WORKER_CONCURRENCY));
  });

  it('API: Service, HPA (autoscaling/v2 on CPU, min >= 2) and PodDisruptionBudget select the API pods', () => {
    const labels = api.spec.template.metadata.labels;
    const svc = find(docs, 'Service', 'imgbuilder-api');
    expect(svc.spec.type).toBe('ClusterIP');
    expect(svc.spec.ports.find((p: Doc) => p.name === 'grpc')).toMatchObject({ port: 8080, targetPort: 'grpc' });
    expect(find(docs, 'Service', 'imgbuilder-api-headless').spec.clusterIP).toBe('None');
    const hpa = find(docs, 'HorizontalPodAutoscaler', 'imgbuilder-api');
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: api.metadata.name });
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    expect(hpa.spec.metrics[0].resource.name).toBe('cpu');
    expect(container(api, 'api').resources.requests.cpu, 'CPU utilisation needs a CPU request').toBeDefined();
    const pdb = find(docs, 'PodDisruptionBudget', 'imgbuilder-api');
    expect(labels).toMatchObject(pdb.spec.selector.matchLabels);
  });

  it('app containers run as non-root without privilege escalation; only the Docker engine is privileged', () => {
    for (const w of [...byKind(docs, 'Deployment'), ...byKind(docs, 'StatefulSet'), ...byKind(docs, 'Job')]) {
      for (const c of containers(w)) {
        const sc = { ...podSpec(w)!.securityContext, ...c.securityContext };
        if (c.name === 'docker') {
          expect(sc.privileged, `${w.metadata.name}/${c.name}`).toBe(true);
          continue;
        }
        expect(sc.runAsNonRoot, `${w.metadata.name}/${c.name}`).toBe(true);
        expect(sc.runAsUser, `${w.metadata.name}/${c.name}: numeric, so the kubelet can check it`).toBeGreaterThan(0);
        expect(sc.allowPrivilegeEscalation, `${w.metadata.name}/${c.name}`).toBe(false);
        expect(sc.privileged, `${w.metadata.name}/${c.name}`).toBeFalsy();
      }
    }
  });

  it('worker: termination grace outlasts IMGBUILDER_WORKER_SHUTDOWN_GRACE, probes on 9091, engine sidecar with its own disk', () => {
    const spec = podSpec(worker)!;
    const shutdownGraceS = parseDuration(config.IMGBUILDER_WORKER_SHUTDOWN_GRACE)! / 1000;
    expect(shutdownGraceS).toBe(300);
    expect(spec.terminationGracePeriodSeconds).toBeGreaterThan(shutdownGraceS);
    const w = container(worker, 'worker');
    expect(w.args).toEqual(['worker']);
    expect(w.ports).toEqual([{ name: 'metrics', containerPort: 9091 }]);
    expect(w.readinessProbe.httpGet.path).toBe('/readyz');
    expect(w.livenessProbe.httpGet.path).toBe('/livez');
    expect(portNumber(w, w.readinessProbe.httpGet.port)).toBe(9091);
    const engine = spec.initContainers.find((c: Doc) => c.name === 'docker');
    // A native sidecar: stopped only after the worker has exited, so running builds keep their engine.
    expect(engine.restartPolicy).toBe('Always');
    // The project's `engine` target: docker:dind with the limits agent (Dockerfile).
    expect(engine.image).toMatch(/^imgbuilder-engine:/);
    expect(readFileSync(repoPath('Dockerfile'), 'utf8')).toMatch(/^FROM docker:[\w.-]*dind AS engine$/m);
    expect(engine.env).toContainEqual({ name: 'DOCKER_TLS_CERTDIR', value: '' });
    const mount = engine.volumeMounts.find((m: Doc) => m.mountPath === '/var/lib/docker');
    expect(spec.volumes.find((v: Doc) => v.name === mount.name).emptyDir).toBeDefined();
  });

  it("worker: reaches the engine on the pod's loopback, and the engine listens nowhere else", () => {
    const w = container(worker, 'worker');
    const engine = container(worker, 'docker');
    const dockerHost = environmentOf(docs, w).DOCKER_HOST;
    expect(dockerHost).toBe('tcp://127.0.0.1:2375');
    const hosts = (engine.args as string[]).filter((a) => a.startsWith('--host=')).map((a) => a.slice('--host='.length));
    expect(hosts).toContain(dockerHost);
    expect(hosts.filter((h) => h.startsWith('tcp://') && !h.startsWith('tcp://127.0.0.1:'))).toEqual([]);
    // engine-start.sh runs its arguments; dockerd-entrypoint.sh adds tcp://0.0.0.0:2375 unless its own arguments
    // start with `dockerd`.
    expect(engine.args.slice(0, 2)).toEqual(['dockerd-entrypoint.sh', 'dockerd']);
  });

  it('worker: the engine starts through engine-start.sh, which installs the egress policy before the startup probe can pass', () => {
    const engine = container(worker, 'docker');
    const [shell, script] = engine.command as string[];
    expect(shell).toBe('/bin/sh');
    const mount = (engine.volumeMounts as Doc[]).find((m) => script.startsWith(`${m.mountPath}/`))!;
    expect(mount.readOnly).toBe(true);
    const volume = podSpec(worker)!.volumes.find((v: Doc) => v.name === mount.name);
    const scripts = dataOf(find(docs, 'ConfigMap', volume.configMap.name));
    expect(scripts[script.slice(mount.mountPath.length + 1)]).toBe(readFileSync(join(ENGINE, 'engine-start.sh'), 'utf8'));
    // engine-start.sh runs egress-policy.sh from its own directory.
    expect(scripts['egress-policy.sh']).toBe(readFileSync(join(ENGINE, 'egress-policy.sh'), 'utf8'));
    expect(readFileSync(join(ENGINE, 'engine-start.sh'), 'utf8')).toContain(`MARKER="\${IMGBUILDER_ENGINE_READY_MARKER:-${ENGINE_MARKER}}"`);
    expect(engine.startupProbe.exec.command.join(' ')).toContain(`test -f ${ENGINE_MARKER} &&`);
    // The allow list the operator sets in the ConfigMap reaches the policy.
    expect((engine.env as Doc[]).find((e) => e.name === 'IMGBUILDER_BUILD_EGRESS_ALLOW')?.valueFrom.configMapKeyRef).toEqual({ name: 'imgbuilder-config', key: 'IMGBUILDER_BUILD_EGRESS_ALLOW' });
    expect(engine.env).toContainEqual({ name: 'TINI_SUBREAPER', value: '1' });
    // The worker proves the policy at start, and takes no builds while it does not hold.
    expect(config.IMGBUILDER_BUILD_EGRESS_CHECK).toBe('on');
  });

  it("worker: the engine container's limits bound all of the pod's builds, above each build's own limits", () => {
    const limits = container(worker, 'docker').resources.limits;
    const builds = Number(config.IMGBUILDER_WORKER_CONCURRENCY);
    expect(quantity(limits.memory)).toBeGreaterThan(builds * parseByteSize(config.IMGBUILDER_BUILD_MEMORY)!);
    expect(Number(limits.cpu)).toBeGreaterThanOrEqual(builds * Number(config.IMGBUILDER_BUILD_CPUS));
    const data = container(worker, 'docker').volumeMounts.find((m: Doc) => m.mountPath === '/var/lib/docker');
    const dataLimit = quantity(podSpec(worker)!.volumes.find((v: Doc) => v.name === data.name).emptyDir.sizeLimit);
    expect(dataLimit).toBeGreaterThan(builds * parseByteSize(config.IMGBUILDER_BUILD_DISK)!);
  });

  it('KEDA scales the worker Deployment on imgbuilder_queue_demand, one value per queue, threshold = worker concurrency', () => {
    const so = find(docs, 'ScaledObject', 'imgbuilder-worker');
    expect(so.spec.scaleTargetRef.name).toBe(worker.metadata.name);
    expect(so.spec.minReplicaCount).toBeGreaterThanOrEqual(0);
    expect(so.spec.maxReplicaCount).toBeGreaterThan(so.spec.minReplicaCount);
    const [trigger] = so.spec.triggers;
    expect(trigger.type).toBe('prometheus');
    // Every API pod exports the same queue-wide gauge: a sum over pods would count it once per pod.
    expect(trigger.metadata.query).toMatch(/^max\(imgbuilder_queue_demand\b/);
    expect(trigger.metadata.threshold).toBe(config.IMGBUILDER_WORKER_CONCURRENCY);
    const ns = docs.find((d) => d.kind === 'Namespace')?.metadata.name;
    if (ns) expect(trigger.metadata.query).toContain(`namespace="${ns}"`);
    expect(byKind(docs, 'HorizontalPodAutoscaler').map((h) => h.spec.scaleTargetRef.name), 'KEDA owns the worker count').not.toContain(worker.metadata.name);
    expect(worker.spec.replicas, 'a fixed count would be reset on every apply').toBeUndefined();
  });

  it('Redis: append-only file, noeviction, a password, a volume claim template, and REDIS_URL (a secret) points at its Service', () => {
    const redis = find(docs, 'StatefulSet', 'imgbuilder-redis');
    const c = container(redis, 'redis');
    const script = (c.args as string[]).join(' ');
    expect(script).toMatch(/--appendonly yes\b/);
    expect(script).toMatch(/--maxmemory-policy noeviction\b/);
    expect(script).toMatch(/^requirepass \$REDISCLI_AUTH$/m);
    // The password comes from the bundled Secret; redis-cli in the probe authenticates with the same variable.
    expect((c.env as Doc[]).find((e) => e.name === 'REDISCLI_AUTH')?.valueFrom.secretKeyRef).toEqual({ name: 'imgbuilder-bundled-secrets', key: 'REDIS_PASSWORD' });
    expect(c.readinessProbe.exec.command.join(' ')).toContain('redis-cli ping | grep -q PONG');
    expect(redis.spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBeDefined();
    const svc = find(docs, 'Service', redis.spec.serviceName);
    expect(config.REDIS_URL, 'REDIS_URL carries the password: it belongs in the Secret').toBeUndefined();
    expect(hostPort(secrets.REDIS_URL)).toBe(`${svc.metadata.name}:${svc.spec.ports[0].port}`);
    const url = new URL(secrets.REDIS_URL);
    expect(decodeURIComponent(url.password)).toBe(dataOf(find(docs, 'Secret', 'imgbuilder-bundled-secrets')).REDIS_PASSWORD);
  });

  it('object store: MinIO root keys stay with MinIO and the bucket Job, which gives the services a user of their own bucket', () => {
    const minio = find(docs, 'StatefulSet', 'imgbuilder-minio');
    const secretRefs = (c: Doc) => Object.fromEntries((c.env as Doc[]).map((e) => [e.name, e.valueFrom?.secretKeyRef]));
    const env = secretRefs(container(minio, 'minio'));
    expect(env.MINIO_ROOT_USER).toEqual({ name: 'imgbuilder-bundled-secrets', key: 'MINIO_ROOT_USER' });
    expect(env.MINIO_ROOT_PASSWORD).toEqual({ name: 'imgbuilder-bundled-secrets', key: 'MINIO_ROOT_PASSWORD' });
    for (const [d, name] of [
      [api, 'api'],
      [worker, 'worker'],
    ] as const) {
      const seen = environmentOf(docs, container(d, name));
      expect(BUNDLED_KEYS.filter((k) => k in seen), `${name} must not hold the bundled services' root credentials`).toEqual([]);
    }
    expect(hostPort(config.IMGBUILDER_S3_ENDPOINT)).toBe(`imgbuilder-minio:${find(docs, 'Service', 'imgbuilder-minio').spec.ports[0].port}`);
    const job = find(docs, 'Job', 'imgbuilder-minio-bucket');
    const mc = container(job, 'mc');
    const script = mc.args.join('\n') as string;
    expect(script).toContain('mc ilm rule import');
    // Logs in as root, creates the services' user (the keys the API and workers get), limited to the bucket.
    expect(secretRefs(mc)).toMatchObject({
      MINIO_ROOT_USER: { name: 'imgbuilder-bundled-secrets', key: 'MINIO_ROOT_USER' },
      AWS_ACCESS_KEY_ID: { name: 'imgbuilder-secrets', key: 'AWS_ACCESS_KEY_ID' },
      AWS_SECRET_ACCESS_KEY: { name: 'imgbuilder-secrets', key: 'AWS_SECRET_ACCESS_KEY' },
    });
    expect(script).toContain('mc alias set store "$IMGBUILDER_S3_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"');
    expect(script).toContain('mc admin user add store "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"');
    expect(script).toContain('mc admin policy attach store imgbuilder-bucket --user "$AWS_ACCESS_KEY_ID"');
    expect(script.match(/arn:aws:s3:::[^"]*/g)).toEqual(['arn:aws:s3:::%s', 'arn:aws:s3:::%s/*']);
    expect(script).toContain(`' "$IMGBUILDER_S3_BUCKET" "$IMGBUILDER_S3_BUCKET" > /tmp/imgbuilder-policy.json`);
    const lifecycle = JSON.parse(dataOf(find(docs, 'ConfigMap', 'imgbuilder-bucket-lifecycle'))['bucket-lifecycle.json']);
    const days = (prefix: string) => lifecycle.Rules.find((r: Doc) => r.Filter.Prefix === prefix && r.Status === 'Enabled').Expiration.Days as number;
    // Logs answers finished builds from the log object while Redis still knows them.
    expect(days('logs/') * 86_400_000).toBeGreaterThanOrEqual(parseDuration(config.IMGBUILDER_LOG_RETENTION)!);
    expect(days('snapshots/')).toBeLessThan(days('logs/'));
  });

  it('registry: registry:2 with htpasswd auth from a Secret; probes on / (which needs no credentials)', () => {
    const reg = find(docs, 'Deployment', 'imgbuilder-registry');
    const c = container(reg, 'registry');
    const env = Object.fromEntries((c.env as Doc[]).map((e) => [e.name, e.value]));
    expect(env.REGISTRY_AUTH).toBe('htpasswd');
    const mount = (c.volumeMounts as Doc[]).find((m) => env.REGISTRY_AUTH_HTPASSWD_PATH.startsWith(`${m.mountPath}/`))!;
    const volume = podSpec(reg)!.volumes.find((v: Doc) => v.name === mount.name);
    expect(volume.secret.secretName).toBe('imgbuilder-registry-htpasswd');
    expect(volume.secret.items).toContainEqual({ key: 'htpasswd', path: env.REGISTRY_AUTH_HTPASSWD_PATH.slice(mount.mountPath.length + 1) });
    expect(c.readinessProbe.httpGet.path).toBe('/');
    expect(c.livenessProbe.httpGet.path).toBe('/');
    expect((c.args as string[]).join('\n')).toMatch(/exec registry serve \/etc\/docker\/registry\/config\.yml$/m);
  });

  it('registry: registry:2 behind a Service that both repositories, the insecure list and the engine agree on', () => {
    const reg = find(docs, 'Deployment', 'imgbuilder-registry');
    expect(container(reg, 'registry').image).toBe('registry:2');
    const host = `imgbuilder-registry:${find(docs, 'Service', 'imgbuilder-registry').spec.ports[0].port}`;
    expect(config.IMGBUILDER_BASE_REPOSITORY.startsWith(`${host}/`)).toBe(true);
    expect(config.IMGBUILDER_WORKSPACE_REPOSITORY.startsWith(`${host}/`)).toBe(true);
    expect(config.IMGBUILDER_INSECURE_REGISTRIES.split(',')).toContain(host);
    expect(container(worker, 'docker').args).toContain(`--insecure-registry=${host}`);
    // Filled in (the overlay), the installation credentials name this registry: they are what the workers push with.
    const auths = Object.keys(JSON.parse(dataOf(find(docs, 'Secret', 'imgbuilder-registry-auth'))['.dockerconfigjson']).auths);
    if (auths.length) expect(auths).toContain(host);
  });

  it('configuration: the ConfigMap holds only known settings and no secrets; the Secret holds the secrets', () => {
    const known = Object.keys(EnvSchema.shape);
    expect(Object.keys(config).filter((k) => !known.includes(k)), 'ConfigMap keys imgbuilder does not read').toEqual([]);
    expect(Object.keys(config).filter((k) => /SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL/.test(k))).toEqual([]);
    expect(Object.values(config).filter((v) => Object.values(secrets).includes(v))).toEqual([]);
    expect(Object.keys(secrets).sort()).toEqual([...SECRET_KEYS].sort());
    const missing = known.filter((k) => k.startsWith('IMGBUILDER_') && !(k in config) && !(k in secrets) && !(k in UNSET_ON_PURPOSE));
    expect(missing, 'settings in packages/common/src/config.ts that infra/k8s/base/config.yaml does not carry').toEqual([]);
    // What the API and worker containers see parses with the real schema, once a real key replaces the placeholder
    // (which is refused on purpose: see "placeholders").
    const key = Buffer.alloc(32, 7).toString('base64');
    for (const [d, name] of [
      [api, 'api'],
      [worker, 'worker'],
    ] as const) {
      expect(() => loadEnv({ ...environmentOf(docs, container(d, name)), IMGBUILDER_SECRET_KEY: key })).not.toThrow();
    }
  });

  it('registry credentials are mounted as the file IMGBUILDER_REGISTRY_AUTH_FILE names, as Docker config JSON', () => {
    const auth = find(docs, 'Secret', 'imgbuilder-registry-auth');
    expect(auth.type).toBe('kubernetes.io/dockerconfigjson');
    expect(JSON.parse(dataOf(auth)['.dockerconfigjson'])).toHaveProperty('auths');
    for (const [d, name] of [
      [api, 'api'],
      [worker, 'worker'],
    ] as const) {
      const c = container(d, name);
      const file = config.IMGBUILDER_REGISTRY_AUTH_FILE;
      const mount = c.volumeMounts.find((m: Doc) => file.startsWith(`${m.mountPath}/`));
      const volume = podSpec(d)!.volumes.find((v: Doc) => v.name === mount.name);
      expect(volume.secret.secretName).toBe(auth.metadata.name);
      expect(volume.secret.items).toContainEqual({ key: '.dockerconfigjson', path: file.slice(mount.mountPath.length + 1) });
    }
  });

  it('every referenced ConfigMap, Secret, claim, Service selector and port name resolves', () => {
    const names = (kind: string) => byKind(docs, kind).map((d) => d.metadata.name as string);
    const workloads = [...byKind(docs, 'Deployment'), ...byKind(docs, 'StatefulSet'), ...byKind(docs, 'Job')];
    for (const w of workloads) {
      const spec = podSpec(w)!;
      for (const c of containers(w)) {
        for (const src of c.envFrom ?? []) {
          if (src.configMapRef) expect(names('ConfigMap')).toContain(src.configMapRef.name);
          if (src.secretRef) expect(names('Secret')).toContain(src.secretRef.name);
        }
        for (const e of c.env ?? []) {
          const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
          if (!ref) continue;
          const kind = e.valueFrom.secretKeyRef ? 'Secret' : 'ConfigMap';
          expect(Object.keys(dataOf(find(docs, kind, ref.name))), `${w.metadata.name}: ${kind} ${ref.name}`).toContain(ref.key);
        }
        const volumes = [...(spec.volumes ?? []), ...(w.spec.volumeClaimTemplates ?? []).map((t: Doc) => t.metadata)].map((v: Doc) => v.name);
        for (const m of c.volumeMounts ?? []) expect(volumes, `${w.metadata.name}/${c.name}`).toContain(m.name);
      }
      for (const v of spec.volumes ?? []) {
        if (v.secret) expect(names('Secret')).toContain(v.secret.secretName);
        if (v.configMap) expect(names('ConfigMap')).toContain(v.configMap.name);
        if (v.persistentVolumeClaim) expect(names('PersistentVolumeClaim')).toContain(v.persistentVolumeClaim.claimName);
      }
    }
    for (const svc of byKind(docs, 'Service')) {
      const pods = workloads.filter((w) => Object.entries(svc.spec.selector).every(([k, v]) => w.spec.template.metadata.labels?.[k] === v));
      expect(pods.length, `Service ${svc.metadata.name} selects no pods`).toBeGreaterThan(0);
      for (const p of svc.spec.ports) {
        if (typeof p.targetPort !== 'string') continue;
        const portNames = pods.flatMap((w) => containers(w).flatMap((c) => (c.ports ?? []).map((x: Doc) => x.name)));
        expect(portNames, `Service ${svc.metadata.name} port ${p.name}`).toContain(p.targetPort);
      }
    }
    for (const ss of byKind(docs, 'StatefulSet')) expect(names('Service')).toContain(ss.spec.serviceName);
  });

  it('NetworkPolicy: API gRPC/HTTP only from labelled clients, workers only their probe port, Redis/MinIO/registry only own pods', () => {
    const policies = byKind(docs, 'NetworkPolicy');
    const labelsOf = (name: string) => docs.find((d) => d.metadata.name === name && d.spec?.template)!.spec.template.metadata.labels as Record<string, string>;
    const selects = (sel: Doc | undefined, labels: Record<string, string>) =>
      Object.entries(sel?.matchLabels ?? {}).every(([k, v]) => labels[k] === v) &&
      (sel?.matchExpressions ?? []).every((e: Doc) => (e.operator === 'In' ? e.values.includes(labels[e.key]) : false));
    /** Whether a pod labelled `from` (in this or another namespace) may open `port` on the pod `to`, by these policies. */
    const admits = (to: string, port: number, from: Record<string, string>, otherNamespace = false) => {
      const mine = policies.filter((p) => selects(p.spec.podSelector, labelsOf(to)) && p.spec.policyTypes.includes('Ingress'));
      if (!mine.length) return true;
      return mine.some((p) =>
        (p.spec.ingress ?? []).some(
          (r: Doc) =>
            (!r.ports || r.ports.some((x: Doc) => x.port === port)) &&
            (!r.from || r.from.some((peer: Doc) => !peer.ipBlock && (!otherNamespace || peer.namespaceSelector) && selects(peer.podSelector, from))),
        ),
      );
    };
    const workloads = ['imgbuilder-api', 'imgbuilder-worker', 'imgbuilder-redis', 'imgbuilder-minio', 'imgbuilder-registry'];
    for (const w of workloads) expect(policies.some((p) => selects(p.spec.podSelector, labelsOf(w))), `${w} has a NetworkPolicy`).toBe(true);
    // No rule that lets anyone in: every rule names its peers, none by address.
    for (const p of policies) for (const r of p.spec.ingress ?? []) expect(r.from?.length && r.from.every((peer: Doc) => !peer.ipBlock), p.metadata.name).toBeTruthy();

    const client = { 'imgbuilder.io/client': 'true' };
    const stranger = { app: 'something-else' };
    const httpPort = Number((config.IMGBUILDER_HTTP_ADDR ?? '0.0.0.0:8081').split(':').pop());
    const grpcPort = container(api, 'api').readinessProbe.grpc.port as number;
    for (const port of [grpcPort, httpPort, Number(config.IMGBUILDER_SUPERVISOR_ADDR.split(':').pop())]) {
      expect(admits('imgbuilder-api', port, client, true), `client to API :${port}`).toBe(true);
      expect(admits('imgbuilder-api', port, stranger), `stranger to API :${port}`).toBe(false);
      expect(admits('imgbuilder-api', port, labelsOf('imgbuilder-worker')), `worker to API :${port}`).toBe(false);
    }
    // Workers: nothing but the port their probes use, and that one only for the metrics scraper (the node's kubelet
    // always passes).
    const wc = container(worker, 'worker');
    const probePorts = new Set([wc.readinessProbe, wc.livenessProbe, wc.startupProbe].filter(Boolean).map((pr: Doc) => portNumber(wc, pr.httpGet?.port ?? pr.grpc?.port)));
    for (const port of [8080, 8081, 2375, 2376, 1234, ...probePorts]) {
      expect(admits('imgbuilder-worker', port, client, true), `client to worker :${port}`).toBe(false);
      expect(admits('imgbuilder-worker', port, labelsOf('imgbuilder-api')), `API to worker :${port}`).toBe(false);
    }
    for (const port of probePorts) expect(admits('imgbuilder-worker', port, { 'imgbuilder.io/metrics': 'true' }, true)).toBe(true);
    // The bundled stores: the service's own pods only, from its own namespace.
    for (const [store, port, users] of [
      ['imgbuilder-redis', 6379, ['imgbuilder-api', 'imgbuilder-worker']],
      ['imgbuilder-minio', 9000, ['imgbuilder-api', 'imgbuilder-worker', 'imgbuilder-minio-bucket']],
      ['imgbuilder-registry', 5000, ['imgbuilder-api', 'imgbuilder-worker']],
    ] as const) {
      for (const u of users) expect(admits(store, port, labelsOf(u)), `${u} to ${store}`).toBe(true);
      for (const u of users) expect(admits(store, port, labelsOf(u), true), `${u} of another namespace to ${store}`).toBe(false);
      expect(admits(store, port, client, true), `client to ${store}`).toBe(false);
      expect(admits(store, port, stranger), `stranger to ${store}`).toBe(false);
    }
  });
});

describe('placeholders', () => {
  it('the placeholder secret key cannot start a service, so a forgotten placeholder is never used as a key', () => {
    for (const value of [dataOf(find(render(BASE), 'Secret', 'imgbuilder-secrets')).IMGBUILDER_SECRET_KEY, parseEnvFile(readFileSync(join(OVERLAY, 'secrets.env'), 'utf8')).IMGBUILDER_SECRET_KEY]) {
      expect(value).toMatch(/REPLACE_ME/);
      expect(() => loadEnv({ IMGBUILDER_SECRET_KEY: value })).toThrow(/32 bytes/);
    }
  });

  const base = render(BASE);
  const bundled = dataOf(find(base, 'Secret', 'imgbuilder-bundled-secrets'));
  const secrets = dataOf(find(base, 'Secret', 'imgbuilder-secrets'));
  /** Runs a container's start-up script as its image would (`/bin/sh -ec SCRIPT`), with env; it must stop on its own. */
  const runScript = (c: Doc, env: Record<string, string>) => {
    expect(c.command).toEqual(['/bin/sh', '-ec']);
    return spawnSync('/bin/sh', ['-ec', c.args.join('\n')], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 10_000 });
  };

  it('the fetch policy denies the placeholder pod and service ranges and the engine sidecar; the bundled registry stays reachable', async () => {
    const config = dataOf(find(base, 'ConfigMap', 'imgbuilder-config'));
    const policy = FetchPolicy.fromEnv(loadEnv({ ...config, IMGBUILDER_SECRET_KEY: Buffer.alloc(32, 7).toString('base64') }));
    expect(config.IMGBUILDER_FETCH_DENY.split(',')).toEqual(['10.244.0.0/16', '10.96.0.0/12']);
    expect(policy.refusal('10.96.0.10', 6379)).toMatch(/IMGBUILDER_FETCH_DENY/);
    expect(policy.refusal('10.244.3.7', 9000)).toMatch(/IMGBUILDER_FETCH_DENY/);
    expect(policy.refusal('127.0.0.1', 2375)).toMatch(/loopback/);
    const inCluster = async () => [{ address: '10.96.0.20' }];
    await expect(policy.resolve({ host: 'imgbuilder-registry', port: 5000, what: 'registry', shown: 'imgbuilder-registry:5000' }, inCluster)).resolves.toMatchObject({ address: '10.96.0.20' });
    await expect(policy.resolve({ host: 'imgbuilder-redis', port: 6379, what: 'download url', shown: 'http://imgbuilder-redis:6379/' }, inCluster)).rejects.toThrow(/is refused by the fetch policy/);
  });

  it('the bundled Redis, MinIO and bucket Job refuse to start with placeholder credentials', () => {
    const redis = container(find(base, 'StatefulSet', 'imgbuilder-redis'), 'redis');
    for (const pw of [bundled.REDIS_PASSWORD, 'short', 'has spaces in it, and more']) {
      const res = runScript(redis, { REDISCLI_AUTH: pw });
      expect(res.status, pw).toBe(1);
      expect(res.stderr).toMatch(/REDIS_PASSWORD/);
    }
    const minio = runScript(container(find(base, 'StatefulSet', 'imgbuilder-minio'), 'minio'), bundled);
    expect(minio.status).toBe(1);
    expect(minio.stderr).toContain('placeholders; refusing to start');
    const job = container(find(base, 'Job', 'imgbuilder-minio-bucket'), 'mc');
    const placeholders = runScript(job, { ...bundled, AWS_ACCESS_KEY_ID: secrets.AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: secrets.AWS_SECRET_ACCESS_KEY });
    expect(placeholders.status).toBe(1);
    expect(placeholders.stderr).toContain('still a placeholder');
    // Handing the services MinIO's root user is refused too.
    const root = runScript(job, { MINIO_ROOT_USER: 'admin', MINIO_ROOT_PASSWORD: 'root-password', AWS_ACCESS_KEY_ID: 'admin', AWS_SECRET_ACCESS_KEY: 'root-password' });
    expect(root.status).toBe(1);
    expect(root.stderr).toContain("must not be MinIO's root user");
  });

  it('the bundled registry refuses to start with the placeholder htpasswd', () => {
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-htpasswd-'));
    try {
      const file = join(dir, 'htpasswd');
      writeFileSync(file, dataOf(find(base, 'Secret', 'imgbuilder-registry-htpasswd')).htpasswd);
      const res = runScript(container(find(base, 'Deployment', 'imgbuilder-registry'), 'registry'), { REGISTRY_AUTH_HTPASSWD_PATH: file });
      expect(res.status).toBe(1);
      expect(res.stderr).toContain('still holds the placeholder');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the bundled Redis, started by its manifest's script, answers only clients with the password", async () => {
    // redis-server from Debian in a network namespace of its own (port 6379 there is free); the probe's command too.
    const c = container(find(base, 'StatefulSet', 'imgbuilder-redis'), 'redis');
    const password = 'a'.repeat(8) + Date.now().toString(36) + 'b'.repeat(8);
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-redis-'));
    const server = spawn('unshare', ['-n', '/bin/sh', '-c', 'ip link set lo up && exec /bin/sh -ec "$0"', c.args.join('\n')], {
      cwd: dir,
      env: { PATH: process.env.PATH, REDISCLI_AUTH: password },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      let out = '';
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`redis did not start: ${out}`)), 15_000);
        const onData = (b: Buffer) => {
          out += b.toString();
          if (out.includes('Ready to accept connections')) {
            clearTimeout(timer);
            resolve();
          }
        };
        server.stdout.on('data', onData);
        server.stderr.on('data', onData);
        server.once('exit', (code) => reject(new Error(`redis exited (${code}): ${out}`)));
      });
      const inNs = (cmd: string[], env: Record<string, string>) =>
        spawnSync('nsenter', ['-t', String(server.pid), '-n', ...cmd], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 10_000 });
      expect(inNs(['redis-cli', 'ping'], {}).stdout).toMatch(/NOAUTH/);
      const wrong = inNs(['redis-cli', 'ping'], { REDISCLI_AUTH: 'wrong-password-1234' });
      expect(wrong.stdout + wrong.stderr).toMatch(/WRONGPASS|invalid/i);
      expect(inNs(['redis-cli', 'config', 'get', 'maxmemory-policy'], { REDISCLI_AUTH: password }).stdout).toContain('noeviction');
      // The readiness probe's own command passes with the container's environment and fails without it.
      expect(inNs(c.readinessProbe.exec.command, { REDISCLI_AUTH: password }).status).toBe(0);
      expect(inNs(c.readinessProbe.exec.command, {}).status).not.toBe(0);
    } finally {
      const exited = new Promise((resolve) => (server.exitCode === null ? server.once('exit', resolve) : resolve(undefined)));
      server.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('compose stack (infra/compose/compose.yaml)', () => {
  const text = readFileSync(repoPath('infra/compose/compose.yaml'), 'utf8');
  const compose = parseDocument(text, { merge: true }).toJS() as Doc;
  const services = compose.services as Record<string, Doc>;
  /**
   * Compose interpolation as `docker compose config` would do it: required variables (`${X:?…}`) get stand-in values
   * as if set, optional ones (`${X:-default}`) their default.
   */
  const interpolate = (env: Record<string, string>) =>
    Object.fromEntries(
      Object.entries(env).map(([k, v]) => [
        k,
        String(v).replace(/\$\{(\w+)(:?[-?])?([^}]*)\}/g, (_, name: string, op: string | undefined, rest: string) =>
          op?.endsWith('-') ? rest : name === 'IMGBUILDER_SECRET_KEY' ? Buffer.alloc(32, 1).toString('base64') : `${name.toLowerCase()}-value`,
        ),
      ]),
    );
  /** The variable names a value requires from the environment (`${X:?…}`). */
  const required = (v: string) => [...String(v).matchAll(/\$\{(\w+):\?/g)].map((m) => m[1]);

  it('has Redis, MinIO with a bucket job, a registry with its auth job, a Docker engine, 2 APIs and 2 workers', () => {
    expect(Object.keys(services).sort()).toEqual(['api', 'docker', 'minio', 'minio-bucket', 'redis', 'registry', 'registry-auth', 'worker']);
    expect(services.api.deploy.replicas).toBeGreaterThanOrEqual(2);
    expect(services.worker.deploy.replicas).toBeGreaterThanOrEqual(2);
    expect(services.api.command).toEqual(['api']);
    expect(services.worker.command).toEqual(['worker']);
    expect(services.api.build.dockerfile).toBe('Dockerfile');
  });

  it('Redis keeps an append-only file, never evicts and requires the password REDIS_URL carries; the engine is privileged and the workers reach it', () => {
    const redisScript = services.redis.command.join(' ');
    expect(redisScript).toMatch(/--appendonly yes .*--maxmemory-policy noeviction/);
    expect(redisScript).toMatch(/^requirepass \$\$REDISCLI_AUTH$/m);
    expect(required(services.redis.environment.REDISCLI_AUTH)).toEqual(['REDIS_PASSWORD']);
    expect(services.redis.healthcheck.test.join(' ')).toContain('redis-cli ping | grep -q PONG');
    for (const name of ['api', 'worker']) {
      const url = services[name].environment.REDIS_URL as string;
      expect(url).toMatch(/^redis:\/\/:\$\{REDIS_PASSWORD:\?[^}]*\}@redis:6379$/);
    }
    expect(services.docker.privileged).toBe(true);
    expect(services.docker.ports, 'the unauthenticated engine API must not be published').toBeUndefined();
    expect(services.worker.environment.DOCKER_HOST).toBe('tcp://docker:2375');
    expect(services.docker.command).toContain('--insecure-registry=registry:5000');
    expect(services.worker.depends_on.docker.condition).toBe('service_healthy');
  });

  it('the API and worker environments parse with the real config schema and require the secrets from outside', () => {
    for (const name of ['api', 'worker']) {
      const env = services[name].environment as Record<string, string>;
      expect(Object.keys(env).filter((k) => !(k in EnvSchema.shape))).toEqual([]);
      for (const k of SECRET_KEYS) expect(required(env[k]), `${name}: ${k} must come from the environment`).toHaveLength(1);
      expect(Object.values(env).flatMap(required).filter((v) => v.startsWith('MINIO_ROOT')), `${name} must not get MinIO's root`).toEqual([]);
      expect(() => loadEnv(interpolate(env))).not.toThrow();
    }
    expect(parseDuration(services.worker.environment.IMGBUILDER_WORKER_SHUTDOWN_GRACE)! / 1000).toBeLessThan(parseDuration(services.worker.stop_grace_period)! / 1000);
  });

  it('the fetch policy denies the pinned compose network (redis, minio, the engine) and keeps registry:5000 reachable', async () => {
    const env = loadEnv(interpolate(services.worker.environment as Record<string, string>));
    const subnet = (compose.networks as Doc).default.ipam.config[0].subnet as string;
    expect(env.IMGBUILDER_FETCH_DENY).toEqual([subnet]);
    const policy = FetchPolicy.fromEnv(env);
    const onNetwork = async () => [{ address: subnet.replace(/0\/\d+$/, '9') }];
    for (const [host, port] of [['redis', 6379], ['minio', 9000], ['docker', 2375]] as const) {
      await expect(policy.resolve({ host, port, what: 'download url', shown: `http://${host}:${port}/` }, onNetwork), host).rejects.toThrow(/is refused by the fetch policy/);
    }
    await expect(policy.resolve({ host: 'registry', port: 5000, what: 'registry', shown: 'registry:5000' }, onNetwork)).resolves.toBeDefined();
  });

  it('the bucket job applies the same lifecycle file as the Kubernetes install, and gives the services a user of their own', () => {
    const job = services['minio-bucket'];
    expect(job.volumes[0]).toMatch(/^\.\.\/k8s\/base\/bucket-lifecycle\.json:/);
    const script = job.command.join('\n') as string;
    expect(script).toContain('mc ilm rule import');
    expect(script).toContain('mc alias set store http://minio:9000 "$$MINIO_ROOT_USER" "$$MINIO_ROOT_PASSWORD"');
    expect(script).toContain('mc admin user add store "$$AWS_ACCESS_KEY_ID" "$$AWS_SECRET_ACCESS_KEY"');
    expect(script.match(/arn:aws:s3:::[^"]*/g)).toEqual([`arn:aws:s3:::${services.api.environment.IMGBUILDER_S3_BUCKET}`, `arn:aws:s3:::${services.api.environment.IMGBUILDER_S3_BUCKET}/*`]);
    expect(required(services.minio.environment.MINIO_ROOT_USER)).toEqual(['MINIO_ROOT_USER']);
    expect(required(services.minio.environment.MINIO_ROOT_PASSWORD)).toEqual(['MINIO_ROOT_PASSWORD']);
  });

  it('the registry requires the user the registry-auth job writes, and the API and workers read its Docker config', () => {
    const reg = services.registry;
    expect(reg.environment.REGISTRY_AUTH).toBe('htpasswd');
    expect(reg.depends_on['registry-auth'].condition).toBe('service_completed_successfully');
    const htpasswdVolume = (reg.volumes as string[]).find((v) => reg.environment.REGISTRY_AUTH_HTPASSWD_PATH.startsWith(`${v.split(':')[1]}/`))!.split(':')[0];
    const job = services['registry-auth'];
    expect(required(job.environment.REGISTRY_PASSWORD)).toEqual(['REGISTRY_PASSWORD']);
    expect(job.volumes).toContain(`${htpasswdVolume}:/out/htpasswd`);
    const script = job.command.join('\n') as string;
    expect(script).toContain('htpasswd -Bin "$$REGISTRY_USER" > /out/htpasswd/htpasswd');
    expect(script).toContain(`{"auths":{"registry:5000":`);
    const clientVolume = (job.volumes as string[]).find((v) => v.endsWith(':/out/client'))!.split(':')[0];
    for (const name of ['api', 'worker']) {
      const file = services[name].environment.IMGBUILDER_REGISTRY_AUTH_FILE as string;
      expect(file.endsWith('/config.json')).toBe(true);
      expect(services[name].volumes).toContain(`${clientVolume}:${file.slice(0, -'/config.json'.length)}:ro`);
      expect(services[name].depends_on['registry-auth'].condition).toBe('service_completed_successfully');
    }
  });

  it('the engine starts through the Kubernetes sidecar\'s engine-start.sh with the egress policy, and is healthy only once it is installed', () => {
    const engine = services.docker;
    expect(engine.entrypoint).toEqual(['/bin/sh', '/etc/imgbuilder/engine/engine-start.sh']);
    expect(engine.command.slice(0, 2)).toEqual(['dockerd-entrypoint.sh', 'dockerd']);
    expect(engine.volumes).toContain('../engine/engine-start.sh:/etc/imgbuilder/engine/engine-start.sh:ro');
    expect(engine.volumes).toContain('../engine/egress-policy.sh:/etc/imgbuilder/engine/egress-policy.sh:ro');
    expect(engine.healthcheck.test.join(' ')).toContain(`test -f ${ENGINE_MARKER} &&`);
    expect(engine.environment.IMGBUILDER_BUILD_EGRESS_ALLOW).toBe(services.worker.environment.IMGBUILDER_BUILD_EGRESS_ALLOW);
    expect(engine.environment.TINI_SUBREAPER).toBe('1');
    // All builds of all workers together stay under the engine's memory limit.
    const builds = Number(services.worker.environment.IMGBUILDER_WORKER_CONCURRENCY) * services.worker.deploy.replicas;
    expect(parseByteSize(engine.mem_limit.replace(/g$/, 'GiB'))!).toBeGreaterThan(builds * parseByteSize(services.worker.environment.IMGBUILDER_BUILD_MEMORY)!);
  });
});

describe('service image (Dockerfile)', () => {
  const dockerfile = readFileSync(repoPath('Dockerfile'), 'utf8');
  const pkg = JSON.parse(readFileSync(repoPath('package.json'), 'utf8'));
  /** Stages by name, each with its FROM and instructions (continuation lines joined). */
  const stages = (() => {
    const lines = dockerfile.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    const args = Object.fromEntries(lines.filter((l) => /^ARG \w+=/.test(l)).map((l) => l.slice(4).split('=')));
    const out: { name: string; from: string; steps: string[] }[] = [];
    for (const l of lines) {
      const m = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$/i.exec(l);
      if (m) out.push({ from: m[1].replace(/\$\{(\w+)\}/, (_, a) => args[a]), name: m[2] ?? String(out.length), steps: [] });
      else out.at(-1)?.steps.push(l);
    }
    return out;
  })();
  const stage = (name: string) => stages.find((s) => s.name === name)!;
  /** A stage's steps with those of the stages it is built FROM (a shared manifests stage, say), oldest first. */
  const inherited = (name: string): string[] => {
    const s = stage(name);
    return stages.some((p) => p.name === s.from) ? [...inherited(s.from), ...s.steps] : s.steps;
  };
  const runtime = stages.at(-1)!;

  it('final stage: node:24-bookworm-slim with git and the static busybox the egress probe is made of, running as the node user', () => {
    expect(runtime.from).toBe('node:24-bookworm-slim');
    const install = runtime.steps.find((s) => s.startsWith('RUN') && s.includes('apt-get install'));
    expect(install).toMatch(/\bgit\b/);
    expect(install).toMatch(/\bbusybox-static\b/);
    const users = runtime.steps.filter((s) => s.startsWith('USER '));
    expect(users.at(-1)).toBe('USER node');
  });

  it('final stage gets production dependencies only; tsx is a development dependency', () => {
    const copy = runtime.steps.find((s) => s.includes('node_modules'))!;
    const from = /--from=(\S+)/.exec(copy)![1];
    expect(stage(from).steps).toContain('RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force');
    expect(Object.keys(pkg.dependencies)).not.toContain('tsx');
    expect(Object.keys(pkg.devDependencies)).toContain('tsx');
  });

  it('final stage runs what the build stage compiled, not TypeScript sources', () => {
    expect(stage('build').steps).toContain('RUN npm run build');
    const fromBuild = runtime.steps.filter((s) => s.startsWith('COPY --from=build '));
    expect(fromBuild.map((s) => s.split(/\s+/)[2])).toEqual(['/app/apps/api/dist/', '/app/apps/worker/dist/', '/app/apps/cli/dist/']);
    const copied = runtime.steps.filter((s) => s.startsWith('COPY ') && !s.startsWith('COPY --from=')).flatMap((s) => s.split(/\s+/).slice(1, -1));
    expect(copied.filter((p) => p === '.' || p.includes('src'))).toEqual([]);
    // The API's bundle reads the dashboard's files beside it (apps/api/dashboard).
    expect(copied).toContain('apps/api/dashboard/');
  });

  it('engines admits both the Node of development machines (20) and that of the image (24)', () => {
    expect(pkg.engines.node).toBe('^20.19.0 || >=22');
  });

  it('the dependency stages see every workspace, so npm ci links each one', () => {
    const workspaces = (pkg.workspaces as string[]).flatMap((glob) => {
      const dir = glob.replace(/\/\*$/, '');
      return readdirSync(repoPath(dir)).filter((d) => statSync(repoPath(dir, d, 'package.json'), { throwIfNoEntry: false })).map((d) => `${dir}/${d}/package.json`);
    });
    for (const name of ['deps', 'build']) {
      const copied = inherited(name).filter((s) => s.startsWith('COPY ')).flatMap((s) => s.split(/\s+/).slice(1, -1));
      expect(workspaces.filter((w) => !copied.includes(w))).toEqual([]);
      expect(copied).toEqual(expect.arrayContaining(['package.json', 'package-lock.json']));
    }
  });

  it('.dockerignore lets in what the entry point runs and keeps out dependencies, tests and env files', () => {
    const rules = readFileSync(repoPath('.dockerignore'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(rules[0]).toBe('*');
    for (const p of ['!package.json', '!package-lock.json', '!apps/', '!packages/', '!bin/', '!infra/docker/', '!scripts/build.mjs']) expect(rules).toContain(p);
    for (const p of ['**/node_modules', '**/dist', '**/.env']) expect(rules).toContain(p);
  });

  it('entry point: api, worker and cli are what the image runs; the script is executable', () => {
    expect(runtime.steps.find((s) => s.startsWith('ENTRYPOINT'))).toContain('/app/infra/docker/entrypoint.sh');
    expect(runtime.steps.find((s) => s.startsWith('CMD'))).toBe('CMD ["api"]');
    const script = repoPath('infra/docker/entrypoint.sh');
    expect(statSync(script).mode & 0o111).not.toBe(0);
    const text = readFileSync(script, 'utf8');
    for (const app of ['api', 'worker', 'cli']) expect(text).toContain(`exec node --enable-source-maps apps/${app}/dist/main.js`);
    expect(text).not.toContain('tsx');
  });

  // The bundles of npm run build: global setup makes them.
  describe('entry point, with the bundles of npm run build', () => {
    it.each(['api', 'worker'])('starts the %s, which validates its configuration', (target) => {
      // A bad setting makes the service exit at once: proves the script reached the right compiled program.
      const res = spawnSync(repoPath('infra/docker/entrypoint.sh'), [target], {
        env: { PATH: process.env.PATH, HOME: process.env.HOME, IMGBUILDER_GRPC_ADDR: 'not-an-address' },
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(res.status).toBe(1);
      expect(res.stdout + res.stderr).toContain('IMGBUILDER_GRPC_ADDR: expected HOST:PORT');
      expect(res.stdout + res.stderr).toContain(target === 'api' ? 'imgbuilder-api' : 'imgbuilder-worker');
    });

    it('runs the CLI', () => {
      const res = spawnSync(repoPath('infra/docker/entrypoint.sh'), ['cli', '--help'], { env: { PATH: process.env.PATH, HOME: process.env.HOME }, encoding: 'utf8', timeout: 60_000 });
      expect(res.status).toBe(0);
      expect(res.stdout).toContain('Usage: imgbuilder');
    });
  });

  it('entry point without a target prints usage and exits 64', () => {
    const res = spawnSync(repoPath('infra/docker/entrypoint.sh'), [], { encoding: 'utf8', timeout: 10_000 });
    expect(res.status).toBe(64);
    expect(res.stderr).toMatch(/usage: IMAGE api \| worker \| cli/);
  });
});
