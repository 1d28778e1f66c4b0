import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { EnvSchema, loadEnv } from '@imgbuilder/common/config';
import { parseByteSize } from '@imgbuilder/common/byte-size';
import { parseDuration } from '@imgbuilder/common/duration';
import { containers, dataOf, find, podSpec, repoPath, validateManifest, type Doc } from './manifests.js';
import { networkPolicyContract } from './k8s-network-policy.js';
import { BUNDLED_KEYS, byKind, container, ENGINE, ENGINE_MARKER, environmentOf, hostPort, portNumber, quantity, SECRET_KEYS, UNSET_ON_PURPOSE } from './k8s.js';

/**
 * The contract of one rendering of the Kubernetes install (base or overlay; the in-process kustomize in the unit tier,
 * `kubectl kustomize` in the component tier where kubectl is installed): `describe.each(renders)('%s', renderContract)`.
 */
export function renderContract(_: string, load: () => Doc[]): void {
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

  networkPolicyContract(docs);
}
