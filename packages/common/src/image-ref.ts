import { ImageRefInvalid } from './errors.js';
import { quote } from './client-text.js';

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
// Docker validates digests with go-digest: a registered algorithm and its exact length of lower-case hex.
const DIGEST = /^(?:sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})$/;
/** Docker's limit on `domain/path` (distribution/reference NameTotalLengthMax). */
const NAME_MAX = 255;
const DOMAIN = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d+)?$|^\[[0-9a-fA-F:.]+\](?::\d+)?$/;

/** A parsed, normalised image reference: `domain/path[:tag][@digest]`. */
export interface ImageRef {
  /** Registry host with port as users write it; Docker Hub is `docker.io`. */
  domain: string;
  /** Repository path inside the registry (`library/alpine`). */
  path: string;
  tag?: string;
  digest?: string;
}

/** Parses and normalises an image reference the way Docker does (`alpine` → `docker.io/library/alpine`). */
export function parseImageRef(input: string): ImageRef {
  const text = input.trim();
  const bad = (why: string) => new ImageRefInvalid(input, why, `cannot parse image ref ${quote(input)}: ${why}`);
  if (!text) throw bad('it is empty');
  if (text.length > 1024) throw bad('it is too long');
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad('invalid digest');
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad('invalid tag');
  }
  const parts = rest.split('/');
  let domain = 'docker.io';
  const first = parts[0];
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase())) {
    domain = parts.shift()!;
    if (!DOMAIN.test(domain)) throw bad('invalid registry host');
  }
  if (domain === 'index.docker.io' || domain === 'registry-1.docker.io') domain = 'docker.io';
  if (domain === 'docker.io' && parts.length === 1) parts.unshift('library');
  if (parts.length === 0 || parts.some((p) => !COMPONENT.test(p))) throw bad('repository names are lower-case letters, digits and separators');
  const path = parts.join('/');
  if (domain.length + 1 + path.length > NAME_MAX) throw bad(`the repository name is longer than ${NAME_MAX} characters`);
  return { domain, path, tag, digest };
}

/** `domain/path`, the repository name. */
export function repositoryOf(ref: ImageRef): string {
  return `${ref.domain}/${ref.path}`;
}

/** Full text form; a ref with neither tag nor digest gets `:latest`. */
export function formatImageRef(ref: ImageRef): string {
  let s = repositoryOf(ref);
  if (ref.tag || !ref.digest) s += `:${ref.tag ?? 'latest'}`;
  if (ref.digest) s += `@${ref.digest}`;
  return s;
}

/** Host to talk HTTP to: Docker Hub's registry lives on another name than its image domain. */
export function registryHost(domain: string): string {
  return domain === 'docker.io' ? 'registry-1.docker.io' : domain;
}
