import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cacheNamespace, rewriteDockerfile, type RewriteOptions } from '../../apps/worker/src/builder/dockerfile-rewrite.js';
import { frontendAllowed, syntaxDirectives } from '../../apps/worker/src/builder/dockerfile-frontends.js';

const NS = cacheNamespace('ci/alice');
const BODY = 'fetched-content\n';
const SHA = createHash('sha256').update(BODY).digest('hex');

/** Runs the rewrite with an in-process fetch that records the URLs and a registry check that records the hosts. */
async function rewrite(lines: string[], over: Partial<RewriteOptions> = {}) {
  const fetched: string[] = [];
  const registries: string[] = [];
  const out = await rewriteDockerfile(lines.join('\n'), {
    frontends: ['docker/dockerfile'],
    checkRegistry: async (host, image) => void registries.push(`${host} ${image}`),
    baseTriggers: async () => [],
    fetch: async (url, file) => {
      fetched.push(url);
      writeFileSync(file, BODY);
      return { sha256: SHA, bytes: BODY.length };
    },
    cacheNamespace: NS,
    dir: mkdtempSync(join(tmpdir(), 'df-rewrite-')),
    maxBytes: 1 << 20,
    log: () => undefined,
    ...over,
  });
  return { ...out, lines: out.text.split('\n'), fetched, registries };
}

describe('ADD <url> is fetched by the worker and copied from the context', () => {
  it('keeps --chown/--chmod and the destination rules; a directory destination gets the URL\'s file name', async () => {
    const r = await rewrite(['FROM busybox', 'ADD --chown=1:2 --chmod=0755 https://example.com/dl/tool.sh?token=x /opt/', 'ADD http://example.com/a /etc/a.conf']);
    expect(r.fetched).toEqual(['https://example.com/dl/tool.sh?token=x', 'http://example.com/a']);
    expect(r.lines[1]).toBe('COPY --chown=1:2 --chmod=0755 .imgbuilder-add/0/tool.sh /opt/');
    expect(r.lines[2]).toBe('COPY .imgbuilder-add/1/file /etc/a.conf');
    expect(r.files.map((f) => f.name)).toEqual(['.imgbuilder-add/0/tool.sh', '.imgbuilder-add/1/file']);
  });

  it('splits local sources (which ADD may unpack) from URL sources, in shell and JSON form', async () => {
    const r = await rewrite(['FROM busybox', 'ADD app.tar https://example.com/x.tgz /srv/', 'ADD ["https://example.com/y", "/y"]']);
    expect(r.lines.slice(1)).toEqual(['ADD app.tar /srv/', 'COPY .imgbuilder-add/0/x.tgz /srv/', 'COPY [".imgbuilder-add/1/file","/y"]']);
  });

  it('verifies --checksum itself and leaves local ADDs alone', async () => {
    const ok = await rewrite(['FROM busybox', `ADD --checksum=sha256:${SHA} https://example.com/f /f`, 'ADD local.tar /x/']);
    expect(ok.lines.slice(1)).toEqual(['COPY .imgbuilder-add/0/file /f', 'ADD local.tar /x/']);
    await expect(rewrite(['FROM busybox', `ADD --checksum=sha256:${'0'.repeat(64)} https://example.com/f /f`])).rejects.toThrow(/checksum mismatch/);
  });

  it('expands ARG defaults and ENV the Dockerfile sets, and refuses a source a base image could still make a URL', async () => {
    const r = await rewrite(['ARG V=1.2', 'FROM scratch AS s', 'ARG V', 'ENV HOST=example.com', 'ADD https://${HOST}/v$V/x /x', 'ADD ./$ANY /y']);
    expect(r.fetched).toEqual(['https://example.com/v1.2/x']);
    expect(r.lines[5]).toBe('ADD ./$ANY /y');
    await expect(rewrite(['FROM busybox', 'ADD $URL /x'])).rejects.toThrow(/ADD \$URL \(Dockerfile line 2\) names a variable whose value is not known/);
    await expect(rewrite(['FROM busybox', 'ARG P', 'ADD ${P}://example.com/x /x'])).rejects.toThrow(/not known before the build/);
  });

  it('refuses git and other remote sources instead of letting the engine fetch them', async () => {
    for (const src of ['https://example.com/repo.git', 'git@example.com:org/repo.git', 'HTTP://example.com/x', 'ftp://example.com/x']) {
      await expect(rewrite(['FROM busybox', `ADD ${src} /x`])).rejects.toThrow(/refused|only http and https/);
    }
  });

  it('refuses an ADD that engines without here-documents would read inside one, and ONBUILD ADD of a URL', async () => {
    await expect(rewrite(['FROM busybox', 'RUN <<CMD', 'ADD http://127.0.0.1:9/x /x', 'CMD'])).rejects.toThrow(/line 3.*here-document/);
    await expect(rewrite(['FROM busybox', 'ONBUILD ADD http://127.0.0.1:9/x /x'])).rejects.toThrow(/ONBUILD ADD/);
    const ok = await rewrite(['FROM busybox', 'RUN <<EOF', 'echo add it', 'EOF', 'ADD https://example.com/z /z']);
    expect(ok.lines).toEqual(['FROM busybox', 'RUN <<EOF', 'echo add it', 'EOF', 'COPY .imgbuilder-add/0/file /z']);
  });

  it('reads here-document delimiters, whitespace and keyword case as the engine does, and refuses what it cannot read alike', async () => {
    const quoted = await rewrite(['FROM busybox', "RUN <<'EOF'", 'echo x', 'EOF', 'ADD https://example.com/q /q']);
    expect(quoted.lines[4]).toBe('COPY .imgbuilder-add/0/file /q');
    // Readers without here-documents would join `EOF\` with the next line and never see that ADD.
    await expect(rewrite(['FROM busybox', "RUN <<E'OF\\'", 'x', 'EOF\\', 'ADD http://127.0.0.1:9/x /x'])).rejects.toThrow(/escape characters in delimiters/);
    // A body that never ends is no here-document: its lines are instructions, as engines without them read them.
    const open = await rewrite(['FROM busybox', 'RUN echo $((1 <<2))', 'ADD https://example.com/o /o']);
    expect(open.lines[2]).toBe('COPY .imgbuilder-add/0/file /o');
    const spaced = await rewrite(['FROM busybox', '\u0085ADD https://example.com/nel /nel']);
    expect(spaced.fetched).toEqual(['https://example.com/nel']);
    await expect(rewrite(['FROM busybox', 'ONBU\u0130LD ADD http://127.0.0.1:9/x /x'])).rejects.toThrow(/ONBUILD ADD/);
    const upper = await rewrite(['FROM busybox', 'RUN --mount=TYPE=CACHE,target=/c true']);
    expect(upper.lines[1]).toBe(`RUN --mount=type=CACHE,target=/c,id=${NS}-/c true`);
  });

  it('reads continuation lines, comments inside them and the escape directive as the engine does', async () => {
    const r = await rewrite(['# escape=`', 'FROM busybox', 'ADD `', '# a comment', '  https://example.com/c /c', 'RUN echo done']);
    expect(r.lines).toEqual(['# escape=`', 'FROM busybox', 'COPY .imgbuilder-add/0/file /c', '', '', 'RUN echo done']);
    await expect(rewrite(['# syntax=docker/dockerfile:1', '# escape=`', 'FROM busybox'])).rejects.toThrow(/escape directive must be the first line/);
  });
});

describe('cache mounts are namespaced by caller', () => {
  it('prefixes explicit ids and targets, keeps the other fields, and leaves other mounts alone', async () => {
    const r = await rewrite([
      'FROM busybox',
      'RUN --mount=type=cache,target=/root/.cache,sharing=locked --mount=type=bind,target=/src make',
      'RUN --mount=type=cache,id=npm,target=/n,from=build,source=/seed \\',
      '    npm ci',
      'RUN --mount=type=cache,target=/x <<EOF',
      'ls /x',
      'EOF',
      'RUN --network=none echo ok',
    ]);
    expect(r.lines[1]).toBe(`RUN --mount=type=cache,target=/root/.cache,sharing=locked,id=${NS}-/root/.cache --mount=type=bind,target=/src make`);
    expect(r.lines[2]).toBe(`RUN --mount=type=cache,target=/n,from=build,source=/seed,id=${NS}-npm npm ci`);
    expect(r.lines.slice(3)).toEqual(['', `RUN --mount=type=cache,target=/x,id=${NS}-/x <<EOF`, 'ls /x', 'EOF', 'RUN --network=none echo ok']);
    expect(cacheNamespace('["bob","ci"]')).not.toBe(NS);
  });

  it('refuses a cache mount only engines without here-documents would see', async () => {
    await expect(rewrite(['FROM busybox', 'RUN <<CMD', 'RUN --mount=type=cache,target=/c ls /c', 'CMD'])).rejects.toThrow(/cache mount inside a here-document/);
  });
});

describe('syntax frontends', () => {
  it('finds every syntax directive any engine honours', () => {
    expect(syntaxDirectives('# SYNTAX = example.com/f:1\nFROM x').map((d) => d.image)).toEqual(['example.com/f:1']);
    expect(syntaxDirectives('#!/usr/bin/env build\n# syntax=a/b\nFROM x').map((d) => d.image)).toEqual(['a/b']);
    expect(syntaxDirectives('\uFEFF// syntax=a/c\n').map((d) => d.image)).toEqual(['a/c']);
    expect(syntaxDirectives('{"syntax": "a/d"}').map((d) => d.image)).toEqual(['a/d']);
    expect(syntaxDirectives('# comment\n# syntax=a/e\nFROM x')).toEqual([]);
    expect(syntaxDirectives('\n# syntax=a/e\nFROM x')).toEqual([]);
  });

  it('allows Docker\'s official frontend by default, in every spelling', () => {
    const allowed = ['docker/dockerfile:1', 'docker/dockerfile', 'docker.io/docker/dockerfile:1.4-labs', `docker/dockerfile:1@sha256:${'a'.repeat(64)}`, `docker/dockerfile@sha256:${'b'.repeat(64)}`];
    for (const image of allowed) expect(frontendAllowed(image, ['docker/dockerfile']), image).toBe(true);
    for (const image of ['docker/dockerfile-upstream:1', '127.0.0.1:5000/docker/dockerfile:1', 'evil/dockerfile', 'docker/dockerfile/x']) expect(frontendAllowed(image, ['docker/dockerfile']), image).toBe(false);
    expect(frontendAllowed('registry.example.com/fe/df:1.2', ['registry.example.com/fe/*:1.*'])).toBe(true);
    expect(frontendAllowed('registry.example.com/fe/df:2', ['registry.example.com/fe/*:1.*'])).toBe(false);
  });

  it('refuses an unlisted frontend naming the line, before anything else happens', async () => {
    const r = rewrite(['# syntax = 127.0.0.1:5000/evil/frontend:1', 'FROM busybox', 'ADD https://example.com/x /x']);
    await expect(r).rejects.toThrow('Dockerfile parser directive "# syntax = 127.0.0.1:5000/evil/frontend:1": frontend 127.0.0.1:5000/evil/frontend:1 is not allowed here');
  });
});

describe('registries of the images a build pulls', () => {
  it('checks FROM, COPY --from and RUN --mount from images, not stages or scratch', async () => {
    const r = await rewrite([
      'ARG REG=registry.example.com:5000',
      'FROM ${REG}/team/base:1 AS build',
      'FROM scratch',
      'COPY --from=build /a /a',
      'COPY --from=quay.io/org/img:2 /b /b',
      'RUN --mount=type=bind,from=localhost:5001/x,target=/m true',
      'FROM build',
    ]);
    expect(r.registries).toEqual(['registry.example.com:5000 registry.example.com:5000/team/base:1', 'quay.io quay.io/org/img:2', 'localhost:5001 localhost:5001/x']);
    expect(r.changed).toBe(false);
  });

  it('refuses a base image whose ONBUILD triggers would make the engine fetch', async () => {
    const triggers: Record<string, string[]> = { 'example.com/evil:1': ['RUN true', 'ADD http://127.0.0.1:2375/images/x/get /x'], 'example.com/ok:1': ['ADD . /app', 'RUN make'] };
    const baseTriggers = async (image: string) => triggers[image] ?? [];
    await expect(rewrite(['FROM example.com/ok:1 AS a', 'FROM a'], { baseTriggers })).resolves.toMatchObject({ changed: false });
    await expect(rewrite(['FROM example.com/ok:1', 'FROM example.com/evil:1'], { baseTriggers })).rejects.toThrow(
      'FROM example.com/evil:1 (Dockerfile line 2): the image carries the trigger "ONBUILD ADD http://127.0.0.1:2375/images/x/get /x", which would make the engine fetch http://127.0.0.1:2375/images/x/get on its own; refused',
    );
  });

  it('refuses an image whose registry a variable the worker cannot know decides', async () => {
    await expect(rewrite(['FROM $REGISTRY/x'])).rejects.toThrow(/FROM \$REGISTRY\/x \(Dockerfile line 1\): the image's registry is named through a variable/);
    const r = await rewrite(['FROM example.com/x:$TAG']);
    expect(r.registries).toEqual(['example.com example.com/x:']);
    // Python in a here-document: engines without here-documents read `from . import x` as FROM; it is not refused.
    const py = await rewrite(['FROM example.com/py', 'RUN python3 <<EOF', 'from . import x', 'EOF']);
    expect(py.registries).toEqual(['example.com example.com/py', 'registry-1.docker.io .']);
  });
});
