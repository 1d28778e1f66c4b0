import { readFileSync } from 'node:fs';
import type { BuildRegistryAuth } from '@imgbuilder/proto';
import { parseImageRef } from './image-ref.js';

/** Credentials for one registry host, in Docker's authconfig shape. */
export interface RegistryCredentials {
  username?: string;
  password?: string;
  /** base64 of `user:password`, or an opaque value used as is. */
  auth?: string;
}

/** Installation credentials: registry host → credentials, from a Docker config JSON (`auths`). */
export type CredentialTable = ReadonlyMap<string, RegistryCredentials>;

/** Docker Hub appears under several names in config files; imgbuilder keys it `docker.io`. */
export function normaliseRegistryHost(host: string): string {
  const h = host.replace(/^https?:\/\//, '').replace(/\/.*$/, '').toLowerCase();
  return h === 'index.docker.io' || h === 'registry-1.docker.io' ? 'docker.io' : h;
}

export function loadCredentialFile(path: string | undefined): CredentialTable {
  const table = new Map<string, RegistryCredentials>();
  if (!path) return table;
  let parsed: { auths?: Record<string, RegistryCredentials> };
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    // The message names the file only: the content holds secrets.
    throw new Error(`IMGBUILDER_REGISTRY_AUTH_FILE: cannot read ${path} as Docker config JSON (${(err as Error).name})`);
  }
  for (const [host, cred] of Object.entries(parsed.auths ?? {})) {
    const c: RegistryCredentials = { ...cred };
    if (c.auth && !c.username) Object.assign(c, decodeAdditional(c.auth));
    table.set(normaliseRegistryHost(host), { username: c.username, password: c.password, auth: c.auth });
  }
  return table;
}

/**
 * Gitpod's decoding of an `additional` entry: base64 of `user:password`, split at the last `:` (so a user name may
 * hold a `:`, as in `host:5000`). A value that is not (padded, standard) base64 or decodes to text without `:` is
 * passed on as the raw auth only.
 */
export function decodeAdditional(value: string): RegistryCredentials {
  const res: RegistryCredentials = { auth: value };
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) return res;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const i = decoded.lastIndexOf(':');
  if (i >= 0) {
    res.username = decoded.slice(0, i);
    res.password = decoded.slice(i + 1);
  }
  return res;
}

/** Hosts of our own base and workspace repositories. */
export interface OwnRepositories {
  baseRepository: string;
  workspaceRepository: string;
}

/**
 * What credentials may be used on a caller's behalf, from the request's BuildRegistryAuth:
 * installation credentials only for allowed hosts, then the caller's `additional` ones.
 */
export class RegistryAuthPolicy {
  private readonly allowAll: boolean;
  private readonly allowed: Set<string>;
  private readonly additional: Map<string, string>;
  private readonly workspaceHost: string;

  constructor(
    auth: BuildRegistryAuth | undefined,
    private readonly installation: CredentialTable,
    own: OwnRepositories,
  ) {
    this.allowAll = auth?.mode?.$case === 'total' && auth.mode.total.allowAll;
    this.allowed = new Set();
    if (auth?.mode?.$case === 'selective') {
      const sel = auth.mode.selective;
      if (sel.allowBaserep) this.allowed.add(parseImageRef(own.baseRepository).domain);
      if (sel.allowWorkspacerep) this.allowed.add(parseImageRef(own.workspaceRepository).domain);
      for (const h of sel.anyOf) this.allowed.add(h);
    }
    this.allowed = new Set([...this.allowed].map(normaliseRegistryHost));
    this.additional = new Map(Object.entries(auth?.additional ?? {}).map(([h, v]) => [normaliseRegistryHost(h), v]));
    this.workspaceHost = normaliseRegistryHost(parseImageRef(own.workspaceRepository).domain);
  }

  /** Whether installation credentials may be used for `host` on the caller's behalf. */
  isAllowed(host: string): boolean {
    return this.allowAll || this.allowed.has(normaliseRegistryHost(host));
  }

  /** Credentials to pull from or resolve on `host` for the caller, if any. */
  credentialsFor(host: string): RegistryCredentials | undefined {
    const h = normaliseRegistryHost(host);
    if (this.isAllowed(host)) {
      const inst = this.installation.get(h);
      // An entry without a secret is no credential: Gitpod then falls back to `additional` too.
      if (inst && (inst.auth || inst.password)) return inst;
    }
    const extra = this.additional.get(h);
    return extra === undefined ? undefined : decodeAdditional(extra);
  }

  /**
   * Every host with credentials usable for pulls during a build (the engine's X-Registry-Config). As in Gitpod's
   * image-build auth, the caller's `additional` entry for the workspace repository's host is left out: the build
   * never holds the caller's credentials for the registry we push workspace images to.
   */
  pullCredentials(): Map<string, RegistryCredentials> {
    const out = new Map<string, RegistryCredentials>();
    for (const h of new Set([...this.installation.keys(), ...this.additional.keys()])) {
      const inst = this.isAllowed(h) ? this.installation.get(h) : undefined;
      if (inst && (inst.auth || inst.password)) out.set(h, inst);
      else if (h !== this.workspaceHost && this.additional.has(h)) out.set(h, decodeAdditional(this.additional.get(h)!));
    }
    return out;
  }
}

/** Credentials for pushing to our own repositories: always the installation's, never the caller's. */
export function pushCredentials(installation: CredentialTable, repository: string): RegistryCredentials | undefined {
  return installation.get(normaliseRegistryHost(parseImageRef(repository).domain));
}

/** Every secret string in a credential, for log censoring. */
export function secretsOf(c: RegistryCredentials | undefined): string[] {
  if (!c) return [];
  return [c.password, c.auth].filter((s): s is string => !!s && s.length >= 3);
}

/**
 * For an engine error that means "the registry wants (other) credentials": how to give them. The engine's own words
 * ("no basic auth credentials", "pull access denied") do not say that imgbuilder only sends what the request allows.
 */
export function registryAuthHint(message: string): string | undefined {
  // Only pulls: a failing RUN step may print these words for reasons of its own. Classic names the step
  // "Step 1/3 : FROM …", BuildKit "[1/3] FROM …" (or "[stage 1/3] FROM …"), or "FROM …" when metadata failed.
  if (!/^(step "(Step \d+\/\d+ : |\[[^\]]*\d+\/\d+\] )?FROM |pull of )/i.test(message)) return undefined;
  if (!/no basic auth credentials|unauthorized|authentication required|pull access denied|denied: requested access|incorrect username or password/i.test(message)) return undefined;
  return 'the registry refused access: pass credentials for its host in BuildRegistryAuth.additional (base64 of user:password), or allow the installation credentials for it (selective.any_of or total.allow_all)';
}
