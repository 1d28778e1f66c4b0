import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { EnvSchema, loadEnv } from '@imgbuilder/common/config';
import { parseByteSize } from '@imgbuilder/common/byte-size';
import { parseDuration } from '@imgbuilder/common/duration';
import { SecretBox } from '@imgbuilder/common/secret-box';
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
const SECRET_KEYS = ['IMGBUILDER_SECRET_KEY', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'];
/** Settings deliberately absent from the ConfigMap, and why. */
const UNSET_ON_PURPOSE: Record<string, string> = {
  IMGBUILDER_GRPC_ADDR: 'the default :8080 is what the probes and Service use',
  IMGBUILDER_METRICS_ADDR: 'its default differs between API (:9090) and worker (:9091)',
  IMGBUILDER_TLS_CERT: 'TLS is an opt-in that also needs files mounted',
  IMGBUILDER_TLS_KEY: 'TLS is an opt-in that also needs files mounted',
  IMGBUILDER_TLS_CA: 'TLS is an opt-in that also needs files mounted',
  IMGBUILDER_FAULT_EXIT_BEFORE_ENQUEUE: 'a fault point for tests only',
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
    ]);
    expect(Object.keys(parseEnvFile(readFileSync(join(OVERLAY, 'secrets.env'), 'utf8'))).sort()).toEqual([...SECRET_KEYS].sort());
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
    expect(engine.image).toMatch(/^docker:[\w.-]*dind/);
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
    // dockerd-entrypoint.sh adds tcp://0.0.0.0:2375 unless the arguments start with `dockerd`.
    expect(engine.args[0]).toBe('dockerd');
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

  it('Redis: append-only file, noeviction, a volume claim template, and REDIS_URL points at its Service', () => {
    const redis = find(docs, 'StatefulSet', 'imgbuilder-redis');
    const args = (container(redis, 'redis').args as string[]).join(' ');
    expect(args).toMatch(/--appendonly yes\b/);
    expect(args).toMatch(/--maxmemory-policy noeviction\b/);
    expect(redis.spec.volumeClaimTemplates[0].spec.resources.requests.storage).toBeDefined();
    const svc = find(docs, 'Service', redis.spec.serviceName);
    expect(hostPort(config.REDIS_URL)).toBe(`${svc.metadata.name}:${svc.spec.ports[0].port}`);
  });

  it('object store: MinIO with the Secret as its root credentials, a bucket Job, and logs kept longer than Redis keeps builds', () => {
    const minio = find(docs, 'StatefulSet', 'imgbuilder-minio');
    const env = Object.fromEntries((container(minio, 'minio').env as Doc[]).map((e) => [e.name, e.valueFrom?.secretKeyRef]));
    expect(env.MINIO_ROOT_USER).toEqual({ name: 'imgbuilder-secrets', key: 'AWS_ACCESS_KEY_ID' });
    expect(env.MINIO_ROOT_PASSWORD).toEqual({ name: 'imgbuilder-secrets', key: 'AWS_SECRET_ACCESS_KEY' });
    expect(hostPort(config.IMGBUILDER_S3_ENDPOINT)).toBe(`imgbuilder-minio:${find(docs, 'Service', 'imgbuilder-minio').spec.ports[0].port}`);
    const job = find(docs, 'Job', 'imgbuilder-minio-bucket');
    expect(container(job, 'mc').args.join('\n')).toContain('mc ilm rule import');
    const lifecycle = JSON.parse(dataOf(find(docs, 'ConfigMap', 'imgbuilder-bucket-lifecycle'))['bucket-lifecycle.json']);
    const days = (prefix: string) => lifecycle.Rules.find((r: Doc) => r.Filter.Prefix === prefix && r.Status === 'Enabled').Expiration.Days as number;
    // Logs answers finished builds from the log object while Redis still knows them.
    expect(days('logs/') * 86_400_000).toBeGreaterThanOrEqual(parseDuration(config.IMGBUILDER_LOG_RETENTION)!);
    expect(days('snapshots/')).toBeLessThan(days('logs/'));
  });

  it('registry: registry:2 behind a Service that both repositories, the insecure list and the engine agree on', () => {
    const reg = find(docs, 'Deployment', 'imgbuilder-registry');
    expect(container(reg, 'registry').image).toBe('registry:2');
    const host = `imgbuilder-registry:${find(docs, 'Service', 'imgbuilder-registry').spec.ports[0].port}`;
    expect(config.IMGBUILDER_BASE_REPOSITORY.startsWith(`${host}/`)).toBe(true);
    expect(config.IMGBUILDER_WORKSPACE_REPOSITORY.startsWith(`${host}/`)).toBe(true);
    expect(config.IMGBUILDER_INSECURE_REGISTRIES.split(',')).toContain(host);
    expect(container(worker, 'docker').args).toContain(`--insecure-registry=${host}`);
  });

  it('configuration: the ConfigMap holds only known settings and no secrets; the Secret holds the secrets', () => {
    const known = Object.keys(EnvSchema.shape);
    expect(Object.keys(config).filter((k) => !known.includes(k)), 'ConfigMap keys imgbuilder does not read').toEqual([]);
    expect(Object.keys(config).filter((k) => /SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL/.test(k))).toEqual([]);
    expect(Object.values(config).filter((v) => Object.values(secrets).includes(v))).toEqual([]);
    expect(Object.keys(secrets).sort()).toEqual([...SECRET_KEYS].sort());
    const missing = known.filter((k) => k.startsWith('IMGBUILDER_') && !(k in config) && !(k in secrets) && !(k in UNSET_ON_PURPOSE));
    expect(missing, 'settings in packages/common/src/config.ts that infra/k8s/base/config.yaml does not carry').toEqual([]);
    // What the API and worker containers see parses with the real schema.
    for (const [d, name] of [
      [api, 'api'],
      [worker, 'worker'],
    ] as const) {
      expect(() => loadEnv(environmentOf(docs, container(d, name)))).not.toThrow();
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
});

describe('placeholders', () => {
  it('the placeholder secret key cannot start a service, so a forgotten placeholder is never used as a key', () => {
    for (const value of [dataOf(find(render(BASE), 'Secret', 'imgbuilder-secrets')).IMGBUILDER_SECRET_KEY, parseEnvFile(readFileSync(join(OVERLAY, 'secrets.env'), 'utf8')).IMGBUILDER_SECRET_KEY]) {
      expect(value).toMatch(/REPLACE_ME/);
      expect(() => SecretBox.fromEnv(value, 'production')).toThrow(/32 bytes/);
    }
  });
});

describe('compose stack (infra/compose/compose.yaml)', () => {
  const text = readFileSync(repoPath('infra/compose/compose.yaml'), 'utf8');
  const compose = parseDocument(text, { merge: true }).toJS() as Doc;
  const services = compose.services as Record<string, Doc>;
  /** Compose interpolation with stand-in values, as `docker compose config` would do with the variables set. */
  const interpolate = (env: Record<string, string>) =>
    Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v).replace(/\$\{(\w+)(:?[-?][^}]*)?\}/g, (_, name) => (name === 'IMGBUILDER_SECRET_KEY' ? Buffer.alloc(32, 1).toString('base64') : `${name.toLowerCase()}-value`))]));

  it('has Redis, MinIO with a bucket job, a registry, a Docker engine, 2 APIs and 2 workers', () => {
    expect(Object.keys(services).sort()).toEqual(['api', 'docker', 'minio', 'minio-bucket', 'redis', 'registry', 'worker']);
    expect(services.api.deploy.replicas).toBeGreaterThanOrEqual(2);
    expect(services.worker.deploy.replicas).toBeGreaterThanOrEqual(2);
    expect(services.api.command).toEqual(['api']);
    expect(services.worker.command).toEqual(['worker']);
    expect(services.api.build.dockerfile).toBe('Dockerfile');
  });

  it('Redis keeps an append-only file and never evicts; the engine is privileged and the workers reach it', () => {
    expect(services.redis.command.join(' ')).toMatch(/--appendonly yes .*--maxmemory-policy noeviction/);
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
      for (const k of SECRET_KEYS) expect(env[k], `${name}: ${k} must come from the environment`).toMatch(/^\$\{\w+:\?/);
      expect(() => loadEnv(interpolate(env))).not.toThrow();
    }
    expect(parseDuration(services.worker.environment.IMGBUILDER_WORKER_SHUTDOWN_GRACE)! / 1000).toBeLessThan(parseDuration(services.worker.stop_grace_period)! / 1000);
  });

  it('the bucket job applies the same lifecycle file as the Kubernetes install', () => {
    expect(services['minio-bucket'].volumes[0]).toMatch(/^\.\.\/k8s\/base\/bucket-lifecycle\.json:/);
    expect(services['minio-bucket'].command.join('\n')).toContain('mc ilm rule import');
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
  const runtime = stages.at(-1)!;

  it('final stage: node:20-bookworm-slim with git, running as the node user', () => {
    expect(runtime.from).toBe('node:20-bookworm-slim');
    expect(runtime.steps.find((s) => s.startsWith('RUN') && s.includes('apt-get install'))).toMatch(/\bgit\b/);
    const users = runtime.steps.filter((s) => s.startsWith('USER '));
    expect(users.at(-1)).toBe('USER node');
  });

  it('final stage gets production dependencies only, and tsx is one because the services run through it', () => {
    const copy = runtime.steps.find((s) => s.includes('node_modules'))!;
    const from = /--from=(\S+)/.exec(copy)![1];
    expect(stage(from).steps).toContain('RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force');
    expect(Object.keys(pkg.dependencies)).toContain('tsx');
  });

  it('the dependency stages see every workspace, so npm ci links each one', () => {
    const workspaces = (pkg.workspaces as string[]).flatMap((glob) => {
      const dir = glob.replace(/\/\*$/, '');
      return readdirSync(repoPath(dir)).filter((d) => statSync(repoPath(dir, d, 'package.json'), { throwIfNoEntry: false })).map((d) => `${dir}/${d}/package.json`);
    });
    const copied = stage('deps').steps.filter((s) => s.startsWith('COPY ')).flatMap((s) => s.split(/\s+/).slice(1, -1));
    expect(workspaces.filter((w) => !copied.includes(w))).toEqual([]);
    expect(copied).toEqual(expect.arrayContaining(['package.json', 'package-lock.json']));
  });

  it('.dockerignore lets in what the entry point runs and keeps out dependencies, tests and env files', () => {
    const rules = readFileSync(repoPath('.dockerignore'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(rules[0]).toBe('*');
    for (const p of ['!package.json', '!package-lock.json', '!apps/', '!packages/', '!bin/', '!infra/docker/']) expect(rules).toContain(p);
    for (const p of ['**/node_modules', '**/.env']) expect(rules).toContain(p);
  });

  it('entry point: api, worker and cli are what the image runs; the script is executable', () => {
    expect(runtime.steps.find((s) => s.startsWith('ENTRYPOINT'))).toContain('/app/infra/docker/entrypoint.sh');
    expect(runtime.steps.find((s) => s.startsWith('CMD'))).toBe('CMD ["api"]');
    const script = repoPath('infra/docker/entrypoint.sh');
    expect(statSync(script).mode & 0o111).not.toBe(0);
    const text = readFileSync(script, 'utf8');
    expect(text).toContain('exec node --import tsx apps/api/src/main.ts');
    expect(text).toContain('exec node --import tsx apps/worker/src/main.ts');
    expect(text).toContain(`exec node ${pkg.bin.imgbuilder}`);
  });

  it.each(['api', 'worker'])('entry point starts the %s, which validates its configuration', (target) => {
    // A bad setting makes the service exit at once: proves the script reached the right program through tsx.
    const res = spawnSync(repoPath('infra/docker/entrypoint.sh'), [target], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, IMGBUILDER_GRPC_ADDR: 'not-an-address' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(res.status).toBe(1);
    expect(res.stdout + res.stderr).toContain('IMGBUILDER_GRPC_ADDR: expected HOST:PORT');
    expect(res.stdout + res.stderr).toContain(target === 'api' ? 'imgbuilder-api' : 'imgbuilder-worker');
  });

  it('entry point without a target prints usage and exits 64', () => {
    const res = spawnSync(repoPath('infra/docker/entrypoint.sh'), [], { encoding: 'utf8', timeout: 10_000 });
    expect(res.status).toBe(64);
    expect(res.stderr).toMatch(/usage: IMAGE api \| worker \| cli/);
  });
});
