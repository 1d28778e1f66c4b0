import { createHash } from 'node:crypto';
import { ImageNotFound, ImgbuilderError, isConnectionError, RegistryAuthFailed, RegistryFailed, RegistryHttpError, RegistryMisconfigured, RegistryUnavailable } from './errors.js';
import { type ImageRef, registryHost } from './image-ref.js';
import type { RegistryCredentials } from './registry-auth.js';
import { registryFetch } from './registry-http.js';
import { LRUCache } from 'lru-cache';
import { retry } from './retry.js';

const MANIFEST_TYPES = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
];
const LIST_TYPES = new Set([MANIFEST_TYPES[1], MANIFEST_TYPES[3]]);

export interface RegistryClientOptions {
  /** Hosts spoken to over plain HTTP; loopback hosts always are. */
  insecureHosts?: readonly string[];
  /** Per-attempt timeout. */
  timeoutMs?: number;
}

export interface RequestOptions {
  credentials?: RegistryCredentials;
  /** Gitpod's `use_retry_client`: retry connection errors, 429 and 5xx (not 501). */
  retry?: boolean;
}

const RETRY_ATTEMPTS = 4;
const RETRY_BACKOFF_MS = 1_000;

/** Minimal Docker Registry HTTP API v2 client: manifests by tag or digest, with Bearer and Basic auth. */
export class RegistryClient {
  private readonly insecure: Set<string>;
  private readonly timeoutMs: number;
  /**
   * Bearer tokens by host, scope and a hash of the whole credential: a caller naming another's user name with any
   * password must not get that user's token. Short-lived, reused while valid; the least recently used are dropped.
   */
  private readonly tokens = new LRUCache<string, string>({ max: MAX_CACHED_TOKENS });

  constructor(opts: RegistryClientOptions = {}) {
    this.insecure = new Set(opts.insecureHosts ?? []);
    this.timeoutMs = opts.timeoutMs ?? 15_000;
  }

  private baseUrl(domain: string): string {
    const host = registryHost(domain);
    const name = host.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
    const plain = name === 'localhost' || name.startsWith('127.') || name === '::1' || this.insecure.has(host) || this.insecure.has(name);
    return `${plain ? 'http' : 'https'}://${host}`;
  }

  /**
   * Digest of `ref` (tag or digest). A manifest list / OCI index resolves to its first linux/amd64 entry.
   * Errors follow Gitpod's resolver, all saying "cannot resolve image": ImageNotFound, RegistryAuthFailed,
   * RegistryUnavailable for 429 and unreachable registries, RegistryFailed otherwise.
   */
  async resolveDigest(ref: ImageRef, opts: RequestOptions = {}): Promise<string> {
    try {
      return await this.withRetry(opts.retry ?? false, async () => {
        const reference = ref.digest ?? ref.tag ?? 'latest';
        const head = await this.request(ref, `manifests/${reference}`, 'HEAD', opts.credentials);
        let type = head.headers.get('content-type') ?? '';
        let digest = head.headers.get('docker-content-digest') ?? '';
        if (LIST_TYPES.has(type) || !digest) {
          const res = await this.request(ref, `manifests/${reference}`, 'GET', opts.credentials);
          type = res.headers.get('content-type') ?? type;
          const body = await res.text();
          digest = res.headers.get('docker-content-digest') || digest;
          if (LIST_TYPES.has(type) || /"manifests"\s*:/.test(body)) {
            const list = JSON.parse(body) as { manifests?: { digest: string; platform?: { os?: string; architecture?: string } }[] };
            const entry = list.manifests?.find((m) => m.platform?.os === 'linux' && m.platform?.architecture === 'amd64');
            if (!entry) throw new ImageNotFound(describe(ref), `cannot resolve image ${describe(ref)}: no linux/amd64 image in its manifest list`);
            return entry.digest;
          }
        }
        if (!digest) throw new RegistryFailed(ref.domain, `cannot resolve image ${describe(ref)}: the registry sent no digest`);
        return digest;
      });
    } catch (err) {
      throw this.toResolveError(err, ref);
    }
  }

  /**
   * The ONBUILD triggers of `ref`'s image configuration (its linux/amd64 image for a manifest list): instructions
   * a build FROM it runs first, which the worker must see before the engine does. Errors as resolveDigest's.
   */
  async onbuildTriggers(ref: ImageRef, opts: RequestOptions = {}): Promise<string[]> {
    try {
      return await this.withRetry(opts.retry ?? false, async () => {
        const digest = await this.resolveDigest(ref, opts);
        const manifest = (await (await this.request(ref, `manifests/${digest}`, 'GET', opts.credentials)).json()) as { config?: { digest?: string } };
        if (!manifest.config?.digest) throw new RegistryFailed(ref.domain, `cannot resolve image ${describe(ref)}: its manifest names no configuration`);
        const config = (await (await this.request(ref, `blobs/${manifest.config.digest}`, 'GET', opts.credentials)).json()) as { config?: { OnBuild?: unknown } };
        const triggers = config.config?.OnBuild;
        return Array.isArray(triggers) ? triggers.filter((t): t is string => typeof t === 'string') : [];
      });
    } catch (err) {
      throw this.toResolveError(err, ref);
    }
  }

  /** Whether the manifest exists. Registry errors other than 404 propagate. */
  async exists(ref: ImageRef, opts: RequestOptions = {}): Promise<boolean> {
    try {
      await this.withRetry(opts.retry ?? false, () => this.request(ref, `manifests/${ref.digest ?? ref.tag ?? 'latest'}`, 'HEAD', opts.credentials));
      return true;
    } catch (err) {
      if (err instanceof RegistryHttpError && err.status === 404) return false;
      throw this.toResolveError(err, ref);
    }
  }

  /**
   * The tags of `ref`'s repository, every page (`tags/list` with `n` and the `Link` header). A repository that does
   * not exist has none. Errors are the registry errors, saying `cannot list tags of <repository>`.
   */
  async tags(ref: ImageRef, opts: RequestOptions = {}): Promise<string[]> {
    const out: string[] = [];
    try {
      for (let next: string | undefined = 'tags/list?n=1000'; next; ) {
        const res = await this.withRetry(opts.retry ?? false, () => this.request(ref, next!, 'GET', opts.credentials));
        const body = (await res.json()) as { tags?: string[] | null };
        out.push(...(body.tags ?? []));
        const link = /<[^>]*\/tags\/list\?([^>]*)>\s*;\s*rel="?next"?/.exec(res.headers.get('link') ?? '')?.[1];
        next = link ? `tags/list?${link}` : undefined;
      }
      return out;
    } catch (err) {
      if (err instanceof RegistryHttpError && err.status === 404) return out;
      throw this.toError(err, ref, `cannot list tags of ${ref.domain}/${ref.path}`);
    }
  }

  /** `ref`'s manifest digest and the bytes of its config and layers (a manifest list counts its manifest only). */
  async manifestSize(ref: ImageRef, opts: RequestOptions = {}): Promise<{ digest: string; bytes: number }> {
    try {
      const res = await this.withRetry(opts.retry ?? false, () => this.request(ref, `manifests/${ref.digest ?? ref.tag ?? 'latest'}`, 'GET', opts.credentials));
      const text = await res.text();
      const m = JSON.parse(text) as { config?: { size?: number }; layers?: { size?: number }[] };
      const digest = res.headers.get('docker-content-digest') || `sha256:${createHash('sha256').update(text).digest('hex')}`;
      return { digest, bytes: (m.config?.size ?? 0) + (m.layers ?? []).reduce((n, l) => n + (l.size ?? 0), 0) };
    } catch (err) {
      throw this.toResolveError(err, ref);
    }
  }

  /**
   * Deletes the manifest `digest` of `ref`'s repository, and with it every tag of that repository naming it (the
   * registry API deletes manifests, not tags; its blobs stay until the registry's own garbage collection). Gone
   * already counts as deleted. Needs `storage.delete.enabled` on a Docker distribution registry.
   */
  async deleteManifest(ref: ImageRef, digest: string, opts: RequestOptions = {}): Promise<void> {
    try {
      const res = await this.withRetry(opts.retry ?? false, () => this.request(ref, `manifests/${digest}`, 'DELETE', opts.credentials));
      await res.body?.cancel();
    } catch (err) {
      if (err instanceof RegistryHttpError && err.status === 404) return;
      throw this.toError(err, ref, `cannot delete ${ref.domain}/${ref.path}@${digest}${err instanceof RegistryHttpError && err.status === 405 ? ' (the registry does not allow deletes: storage.delete.enabled)' : ''}`);
    }
  }

  private toResolveError(err: unknown, ref: ImageRef): Error {
    return this.toError(err, ref, `cannot resolve image ${describe(ref)}`);
  }

  private toError(err: unknown, ref: ImageRef, what: string): Error {
    if (err instanceof ImgbuilderError) return err;
    if (err instanceof RegistryHttpError) {
      if (err.status === 404) return new ImageNotFound(describe(ref), `${what}: not found`);
      if (err.status === 401 || err.status === 403) return new RegistryAuthFailed(ref.domain, err.status, `${what}: the registry refused the credentials (${err.status})`);
      if (err.status === 429) return new RegistryUnavailable(ref.domain, `${what}: the registry is rate-limiting requests (429)`);
      return new RegistryFailed(ref.domain, `${what}: ${err.message}`);
    }
    if (isConnectionError(err) || (err as Error)?.name === 'TimeoutError' || (err as Error)?.name === 'AbortError') {
      return new RegistryUnavailable(ref.domain, `${what}: registry ${ref.domain} is unreachable (${connectionReason(err)})`, err);
    }
    return new RegistryFailed(ref.domain, `${what}: ${(err as Error)?.message ?? String(err)}`);
  }

  private withRetry<T>(enabled: boolean, fn: () => Promise<T>): Promise<T> {
    return retry(fn, {
      attempts: enabled ? RETRY_ATTEMPTS : 1,
      delayMs: (attempt) => RETRY_BACKOFF_MS * attempt,
      retriable: (err) =>
        (err instanceof RegistryHttpError && (err.status === 429 || (err.status >= 500 && err.status !== 501))) ||
        (!(err instanceof RegistryHttpError) && !(err instanceof ImgbuilderError)),
    });
  }

  private async request(ref: ImageRef, path: string, method: 'HEAD' | 'GET' | 'DELETE', credentials?: RegistryCredentials): Promise<Response> {
    const url = `${this.baseUrl(ref.domain)}/v2/${ref.path}/${path}`;
    const headers: Record<string, string> = { Accept: MANIFEST_TYPES.join(', ') };
    const scope = `repository:${ref.path}:${method === 'DELETE' ? 'delete' : 'pull'}`;
    const tokenKey = cacheKey(ref.domain, scope, credentials);
    const cached = this.tokens.get(tokenKey);
    if (cached) headers.Authorization = `Bearer ${cached}`;
    else if (credentials && this.basicKnown.has(ref.domain)) headers.Authorization = basic(credentials);
    // The registry host comes from the caller's image ref: it gets the URL and fetch policies, so a ref cannot make
    // this service (API or worker) talk to loopback, a metadata address or a denied range. Refusals say "cannot
    // resolve image" like every resolver error.
    const policy = `cannot resolve image ${describe(ref)}: registry ${ref.domain}`;
    let res = await registryFetch(url, { method, headers, timeoutMs: this.timeoutMs, policy });
    if (res.status === 401) {
      await res.body?.cancel();
      const challenge = res.headers.get('www-authenticate') ?? '';
      const auth = await this.answerChallenge(challenge, ref, scope, tokenKey, credentials);
      if (auth) {
        res = await registryFetch(url, { method, headers: { ...headers, Authorization: auth }, timeoutMs: this.timeoutMs, policy });
      }
    }
    if (!res.ok) {
      const text = method !== 'HEAD' ? await res.text().catch(() => '') : '';
      await res.body?.cancel().catch(() => undefined);
      throw new RegistryHttpError(res.status, registryMessage(res.status, text));
    }
    return res;
  }

  /** Hosts that answered with a Basic challenge: later requests send credentials at once. Bounded like the tokens. */
  private readonly basicKnown = new LRUCache<string, true>({ max: MAX_CACHED_TOKENS });

  private async answerChallenge(challenge: string, ref: ImageRef, scope: string, tokenKey: string, credentials?: RegistryCredentials): Promise<string | undefined> {
    const parsed = parseChallenge(challenge);
    if (parsed?.scheme === 'basic') {
      if (!credentials) return undefined;
      this.basicKnown.set(ref.domain, true);
      return basic(credentials);
    }
    if (parsed?.scheme !== 'bearer') return undefined;
    const params = parsed.params;
    if (!params.realm) return undefined;
    let tokenUrl: URL;
    try {
      tokenUrl = new URL(params.realm);
    } catch {
      throw new RegistryMisconfigured(ref.domain, `registry ${ref.domain} names a token service that is not a URL`);
    }
    if (params.service) tokenUrl.searchParams.set('service', params.service);
    tokenUrl.searchParams.set('scope', params.scope ?? scope);
    // The realm comes from whoever answers for the registry host: it gets the same URL policy as build sources.
    const res = await registryFetch(tokenUrl, {
      headers: credentials ? { Authorization: basic(credentials) } : {},
      timeoutMs: this.timeoutMs,
      policy: `token service of registry ${ref.domain}`,
    }).catch((err: unknown) => {
      // Refused by the source policy: the registry's doing, not the caller's argument.
      if (err instanceof ImgbuilderError) throw new RegistryMisconfigured(ref.domain, err.message);
      throw err;
    });
    if (!res.ok) {
      await res.body?.cancel();
      throw new RegistryHttpError(res.status === 400 ? 401 : res.status, `token service answered ${res.status}`);
    }
    const body = (await res.json()) as { token?: string; access_token?: string; expires_in?: number };
    const token = body.token ?? body.access_token;
    if (!token) return undefined;
    this.tokens.set(tokenKey, token, { ttl: Math.max(30, (body.expires_in ?? 60) - 10) * 1000 });
    return `Bearer ${token}`;
  }
}

/** A registry's `WWW-Authenticate` challenge: the schemes this client answers, with Bearer's parameters. */
export type Challenge = { scheme: 'basic' } | { scheme: 'bearer'; params: Record<string, string> };

/**
 * Parses the first challenge of a `WWW-Authenticate` header (RFC 7235, as Docker's registry client reads it):
 * parameter names case-insensitive, values quoted (commas and escaped quotes inside) or bare tokens; the first of a
 * repeated name wins, so a second challenge in the header cannot replace Bearer's realm. Other schemes: undefined.
 */
export function parseChallenge(header: string): Challenge | undefined {
  const scheme = /^\s*([A-Za-z][\w-]*)(?=\s|$)/.exec(header)?.[1].toLowerCase();
  if (scheme === 'basic') return { scheme };
  if (scheme !== 'bearer') return undefined;
  const params: Record<string, string> = {};
  for (const m of header.matchAll(/([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))/g)) {
    params[m[1].toLowerCase()] ??= m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3];
  }
  return { scheme, params };
}

/** Tokens (and Basic-challenge hosts) one process remembers. */
const MAX_CACHED_TOKENS = 1000;

function cacheKey(domain: string, scope: string, c: RegistryCredentials | undefined): string {
  const secret = c ? createHash('sha256').update(JSON.stringify([c.username ?? null, c.password ?? null, c.auth ?? null])).digest('hex') : '';
  return `${domain} ${scope} ${secret}`;
}

function basic(c: RegistryCredentials): string {
  if (c.username !== undefined && c.password !== undefined) return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
  return `Basic ${c.auth ?? ''}`;
}

function describe(ref: ImageRef): string {
  return `${ref.domain}/${ref.path}${ref.digest ? `@${ref.digest}` : `:${ref.tag ?? 'latest'}`}`;
}

function registryMessage(status: number, body: string): string {
  try {
    const parsed = JSON.parse(body) as { errors?: { code?: string; message?: string }[] };
    const first = parsed.errors?.[0];
    if (first) return `registry answered ${status}: ${first.code ?? ''} ${first.message ?? ''}`.trim();
  } catch {
    /* not JSON: fall through */
  }
  return `registry answered ${status}`;
}

function connectionReason(err: unknown): string {
  const e = err as { code?: string; cause?: { code?: string }; name?: string };
  return e?.cause?.code ?? e?.code ?? (e?.name === 'TimeoutError' ? 'timed out' : 'connection failed');
}
