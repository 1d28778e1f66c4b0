import { expect, it } from 'vitest';
import { dataOf, find, type Doc } from './manifests.js';
import { byKind, container, portNumber } from './k8s.js';

/** Who the install's NetworkPolicies admit, evaluated over one rendering (part of the render contract). */
export function networkPolicyContract(docs: Doc[]): void {
  const config = dataOf(find(docs, 'ConfigMap', 'imgbuilder-config'));
  const api = find(docs, 'Deployment', 'imgbuilder-api');
  const worker = find(docs, 'Deployment', 'imgbuilder-worker');

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
}
