import http from 'node:http';
import https from 'node:https';
import { checkHttpUrl } from './source-policy.js';
import { fetchPolicy, fetchTargetOf, pinnedLookup } from './fetch-policy.js';

/**
 * HTTP for registry calls over keep-alive connections. Node's fetch gets `Connection: close` from the Docker
 * registry on every manifest HEAD, so each existence check paid a TCP handshake (and left a TIME_WAIT socket);
 * node:http with a keep-alive agent reuses connections. Bodies here are small (manifests, tokens): they are
 * buffered, up to MAX_BODY.
 */
const agents = {
  'http:': new http.Agent({ keepAlive: true, maxSockets: 128, keepAliveMsecs: 10_000 }),
  'https:': new https.Agent({ keepAlive: true, maxSockets: 128, keepAliveMsecs: 10_000 }),
};
const MAX_BODY = 8 * 1024 * 1024;
const MAX_REDIRECTS = 5;

export interface HttpInit {
  method?: string;
  headers?: Record<string, string>;
  timeoutMs: number;
  /**
   * What the URL is, for errors: the URL and fetch policies (source-policy.ts, fetch-policy.ts) apply to it and to
   * every redirect target, since registry hosts come from callers' image refs and token realms from registries.
   */
  policy: string;
}

export async function registryFetch(url: string | URL, init: HttpInit, redirects = 0): Promise<Response> {
  const u = new URL(url);
  checkHttpUrl(u.toString(), init.policy);
  // The host is resolved and checked here; the connection goes to the address checked.
  const target = await fetchPolicy().resolve(fetchTargetOf(u.toString(), init.policy));
  const agent = agents[u.protocol as 'http:' | 'https:'];
  if (!agent) throw new Error(`unsupported registry URL scheme ${u.protocol}`);
  const method = init.method ?? 'GET';
  const { status, headers, body } = await new Promise<{ status: number; headers: Headers; body: Buffer }>((resolve, reject) => {
    const req = (u.protocol === 'https:' ? https : http).request(u, { method, headers: init.headers, agent, lookup: pinnedLookup(target.address, target.family) as never }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY) req.destroy(new Error('registry response too large'));
        else chunks.push(c);
      });
      res.on('end', () => {
        const h = new Headers();
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v);
        resolve({ status: res.statusCode ?? 0, headers: h, body: Buffer.concat(chunks) });
      });
      res.on('error', reject);
    });
    req.setTimeout(init.timeoutMs, () => req.destroy(Object.assign(new Error(`registry request timed out after ${init.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
    req.end();
  });
  const location = headers.get('location');
  if (status >= 300 && status < 400 && location && redirects < MAX_REDIRECTS) {
    const next = new URL(location, u);
    // Credentials are for the origin they were sent to: a redirect elsewhere (blob storage, another host) gets none.
    const headers = { ...init.headers };
    if (next.origin !== u.origin) for (const k of Object.keys(headers)) if (k.toLowerCase() === 'authorization') delete headers[k];
    return registryFetch(next, { ...init, headers, method: method === 'HEAD' ? 'HEAD' : 'GET' }, redirects + 1);
  }
  // Response cannot carry a body for 204/304 or HEAD-like answers.
  const nullBody = method === 'HEAD' || status === 204 || status === 304;
  return new Response(nullBody ? null : new Uint8Array(body), { status, headers });
}
