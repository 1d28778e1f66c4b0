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
 * Gitpod's decoding of an `additional` entry: base64 of `user:password`, split at the last `:`. A value that is
 * not base64 or has no `:` is passed on as the raw auth.
 */
export function decodeAdditional(value: string): RegistryCredentials {
  const res: RegistryCredentials = { auth: value };
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) return res;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const i = decoded.lastIndexOf(':');
  if (i > 0 || (i === 0 && decoded.length > 1)) {
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
    this.additional = new Map(Object.entries(auth?.additional ?? {}).map(([h, v]) => [normaliseRegistryHost(h), v]));
  }

  isAllowed(host: string): boolean {
    return this.allowAll || this.allowed.has(host) || this.allowed.has(normaliseRegistryHost(host));
  }

  /** Credentials to pull from or resolve on `host` for the caller, if any. */
  credentialsFor(host: string): RegistryCredentials | undefined {
    const h = normaliseRegistryHost(host);
    if (this.isAllowed(host)) {
      const inst = this.installation.get(h);
      if (inst) return inst;
    }
    const extra = this.additional.get(h);
    return extra === undefined ? undefined : decodeAdditional(extra);
  }

  /** Every host with credentials usable for pulls (for the engine's X-Registry-Config during a build). */
  pullCredentials(): Map<string, RegistryCredentials> {
    const out = new Map<string, RegistryCredentials>();
    for (const h of this.additional.keys()) {
      const c = this.credentialsFor(h);
      if (c) out.set(h, c);
    }
    for (const h of this.installation.keys()) {
      const c = this.credentialsFor(h);
      if (c) out.set(h, c);
    }
    return out;
  }
}

/** Credentials for pushing to our own repositories: always the installation's, never the caller's. */
export function pushCredentials(installation: CredentialTable, repository: string): RegistryCredentials | undefined {
  return installation.get(parseImageRef(repository).domain);
}

/** Every secret string in a credential, for log censoring. */
export function secretsOf(c: RegistryCredentials | undefined): string[] {
  if (!c) return [];
  return [c.password, c.auth].filter((s): s is string => !!s && s.length >= 3);
}
