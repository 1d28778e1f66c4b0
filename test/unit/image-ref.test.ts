import { describe, expect, it } from 'vitest';
import { formatImageRef, parseImageRef, type ImageRef } from '@imgbuilder/common/image-ref';

const sha256 = `sha256:${'a'.repeat(64)}`;
const sha512 = `sha512:${'0123456789abcdef'.repeat(8)}`;

// Cases from Docker's reference grammar (distribution/reference: reference_test.go, normalize_test.go), with the
// normalisation Docker applies (`ParseNormalizedNamed`): no domain → docker.io, one-part Hub names → library/.
const valid: [input: string, want: ImageRef][] = [
  ['alpine', { domain: 'docker.io', path: 'library/alpine', tag: undefined, digest: undefined }],
  ['alpine:3.19', { domain: 'docker.io', path: 'library/alpine', tag: '3.19', digest: undefined }],
  ['gitpod/workspace-full', { domain: 'docker.io', path: 'gitpod/workspace-full', tag: undefined, digest: undefined }],
  ['docker.io/alpine', { domain: 'docker.io', path: 'library/alpine', tag: undefined, digest: undefined }],
  ['index.docker.io/alpine:edge', { domain: 'docker.io', path: 'library/alpine', tag: 'edge', digest: undefined }],
  ['registry-1.docker.io/team/app', { domain: 'docker.io', path: 'team/app', tag: undefined, digest: undefined }],
  ['test.com/repo:tag', { domain: 'test.com', path: 'repo', tag: 'tag', digest: undefined }],
  ['test:5000/repo', { domain: 'test:5000', path: 'repo', tag: undefined, digest: undefined }],
  ['test:5000/repo:tag', { domain: 'test:5000', path: 'repo', tag: 'tag', digest: undefined }],
  [`test:5000/repo@${sha256}`, { domain: 'test:5000', path: 'repo', tag: undefined, digest: sha256 }],
  [`test:5000/repo:tag@${sha256}`, { domain: 'test:5000', path: 'repo', tag: 'tag', digest: sha256 }],
  [`alpine@${sha512}`, { domain: 'docker.io', path: 'library/alpine', tag: undefined, digest: sha512 }],
  ['localhost/repo', { domain: 'localhost', path: 'repo', tag: undefined, digest: undefined }],
  ['localhost:5000/a/b/c:v1', { domain: 'localhost:5000', path: 'a/b/c', tag: 'v1', digest: undefined }],
  ['127.0.0.1:5000/imgbuilder/base:latest', { domain: '127.0.0.1:5000', path: 'imgbuilder/base', tag: 'latest', digest: undefined }],
  ['[::1]:5000/repo:tag', { domain: '[::1]:5000', path: 'repo', tag: 'tag', digest: undefined }],
  ['[2001:db8::1]/repo', { domain: '[2001:db8::1]', path: 'repo', tag: undefined, digest: undefined }],
  // A first component with upper case is a host (Docker's splitDockerDomain), so this is valid.
  ['Uppercase/repo', { domain: 'Uppercase', path: 'repo', tag: undefined, digest: undefined }],
  ['sub-dom1.foo.com/bar/baz/quux', { domain: 'sub-dom1.foo.com', path: 'bar/baz/quux', tag: undefined, digest: undefined }],
  ['a/a__b/a_b/a.b/a-b/a---b', { domain: 'docker.io', path: 'a/a__b/a_b/a.b/a-b/a---b', tag: undefined, digest: undefined }],
  [`repo:${'t'.repeat(128)}`, { domain: 'docker.io', path: 'library/repo', tag: 't'.repeat(128), digest: undefined }],
  ['repo:_Tag.With-Dots_', { domain: 'docker.io', path: 'library/repo', tag: '_Tag.With-Dots_', digest: undefined }],
  ['  alpine:3  ', { domain: 'docker.io', path: 'library/alpine', tag: '3', digest: undefined }],
];

const invalid: [input: string, why: RegExp][] = [
  ['', /empty/],
  ['   ', /empty/],
  ['Uppercase', /lower-case/],
  ['docker.io/Uppercase/repo', /lower-case/],
  ['test.com/Repo', /lower-case/],
  ['repo:', /invalid tag/],
  ['repo:-tag', /invalid tag/],
  ['repo:.tag', /invalid tag/],
  [`repo:${'t'.repeat(129)}`, /invalid tag/],
  ['repo:tag with space', /invalid tag/],
  ['repo@', /invalid digest/],
  ['repo@sha256:abc', /invalid digest/],
  [`repo@sha256:${'A'.repeat(64)}`, /invalid digest/],
  [`repo@sha256:${'a'.repeat(63)}`, /invalid digest/],
  [`repo@sha256:${'a'.repeat(65)}`, /invalid digest/],
  [`repo@md5:${'a'.repeat(32)}`, /invalid digest/],
  [`repo@${sha256}:tag`, /invalid digest/],
  ['-repo', /lower-case/],
  ['repo-', /lower-case/],
  ['a/b__', /lower-case/],
  ['a/b___c', /lower-case/],
  ['a/b.-c', /lower-case/],
  ['a//b', /lower-case/],
  ['repo/', /lower-case/],
  ['/repo', /lower-case/],
  ['test.com/', /lower-case/],
  ['test.com:port/repo', /invalid registry host/],
  ['-host.com/repo', /invalid registry host/],
  ['foo_bar.com:8080/repo', /invalid registry host/],
  ['host-.com/repo', /invalid registry host/],
  ['host..com/repo', /invalid registry host/],
  ['[::1/repo', /invalid registry host/],
  ['[zz::1]:5000/repo', /invalid registry host/],
  // Docker's NameTotalLengthMax: 255 characters of domain/path, normalised.
  [`test.com/${'a'.repeat(255 - 'test.com/'.length + 1)}`, /longer than 255/],
  [`${'a'.repeat(255 - 'docker.io/library/'.length + 1)}`, /longer than 255/],
  ['x'.repeat(1025), /too long/],
];

describe('parseImageRef (Docker reference grammar)', () => {
  it.each(valid)('%s', (input, want) => {
    expect(parseImageRef(input)).toEqual(want);
  });

  it.each(invalid)('refuses %j', (input, why) => {
    // Asserts the message only: the error's class and code belong to the errors refactor.
    expect(() => parseImageRef(input)).toThrow(why);
  });

  it('accepts names of exactly 255 characters, normalised', () => {
    const name = `test.com/${'a'.repeat(255 - 'test.com/'.length)}`;
    expect(parseImageRef(name).path).toHaveLength(255 - 'test.com/'.length);
    const hub = 'a'.repeat(255 - 'docker.io/library/'.length);
    expect(parseImageRef(hub).path).toBe(`library/${hub}`);
  });

  it('names the input in its message, so a person sees what was refused', () => {
    expect(() => parseImageRef('Bad/Ref')).toThrow(/cannot parse image ref "Bad\/Ref"/);
  });

  it('formats back with :latest only when there is neither tag nor digest', () => {
    expect(formatImageRef(parseImageRef('alpine'))).toBe('docker.io/library/alpine:latest');
    expect(formatImageRef(parseImageRef(`localhost:5000/a@${sha256}`))).toBe(`localhost:5000/a@${sha256}`);
    expect(formatImageRef(parseImageRef(`localhost:5000/a:v@${sha256}`))).toBe(`localhost:5000/a:v@${sha256}`);
  });
});
