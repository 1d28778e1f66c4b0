import { describe, expect, it } from 'vitest';
import { CloneTargetMode, type BuildSourceDockerfile, type WorkspaceInitializer } from '@imgbuilder/proto';
import { checkGitConfig, checkSourceUrl, parseSourceUrl, stripUrlCredentials } from '@imgbuilder/common/source-policy';
import { dockerfileBaseRef } from '@imgbuilder/common/refs';
import { FetchRefused, InvalidRequest, SourceRefused } from '@imgbuilder/common/errors';
import { checkRelativePath } from '../../apps/api/src/plan/source-checks.js';

const refused = (url: string, allowLocal = false) => expect(() => checkSourceUrl(url, 'git remote_uri', allowLocal)).toThrowError(SourceRefused);
const accepted = (url: string, allowLocal = false) => expect(() => checkSourceUrl(url, 'git remote_uri', allowLocal)).not.toThrow();

describe('URL policy', () => {
  it('allows https, http, ssh and git, private addresses included', () => {
    for (const u of ['https://github.com/gitpod-io/gitpod.git', 'http://10.0.0.5/repo.git', 'ssh://git@git.internal:2222/team/repo.git', 'https://192.168.1.10/x']) {
      accepted(u);
    }
  });

  it('allows scp-like ssh remotes and reads their host', () => {
    accepted('git@github.com:gitpod-io/gitpod.git');
    expect(parseSourceUrl('git@github.com:gitpod-io/gitpod.git')).toEqual({ kind: 'scp', host: 'github.com' });
    expect(parseSourceUrl('host.internal:repo.git')).toEqual({ kind: 'scp', host: 'host.internal' });
  });

  it('refuses other schemes and git transport helpers', () => {
    refused('ftp://example.com/x');
    refused('ext::sh -c touch% /tmp/pwned');
    refused('fd::17');
    refused('svn+ssh://example.com/x');
  });

  it('refuses file:// and local paths unless IMGBUILDER_ALLOW_LOCAL_SOURCES', () => {
    for (const u of ['file:///srv/git/repo', '/srv/git/repo', './repo', '../repo', 'C:\\repos\\x']) {
      refused(u);
      accepted(u, true);
    }
  });

  it('refuses link-local and cloud metadata addresses however they are written', () => {
    for (const u of [
      'http://169.254.169.254/latest/meta-data',
      'http://169.254.1.1/x',
      'http://2852039166/x',
      'http://0xa9.0xfe.0xa9.0xfe/x',
      'git://169.254.169.254.:9418/x',
      'ssh://2852039166/x',
      'git@169.254.169.254:x.git',
      'http://[fd00:ec2::254]/x',
      'http://[fd00:0ec2:0:0:0:0:0:254]/x',
      'http://[::ffff:169.254.169.254]/x',
      'http://[fe80::1]/x',
      'http://0.0.0.0/x',
      'http://127.0.0.1:2375/images/x/get',
      'git://127.1/x',
      'http://0177.0.0.1/x',
      'http://[::1]:8080/repo',
      'http://[::ffff:127.0.0.1]/x',
      'ssh://[64:ff9b::7f00:1]/x',
      'http://[::7f00:1]/x',
      'http://168.63.129.16/machine',
    ]) {
      // Refused by the fetch policy, naming the URL and the setting that re-allows it.
      expect(() => checkSourceUrl(u, 'git remote_uri', false), u).toThrowError(FetchRefused);
      expect(() => checkSourceUrl(u, 'git remote_uri', false), u).toThrowError(/is refused by the fetch policy \(.*IMGBUILDER_FETCH_ALLOW/);
      // Allowing local sources does not open them.
      refused(u, true);
    }
  });

  it('refuses hosts with characters no host name has: ssh would hand them to a shell', () => {
    refused('ssh://$(touch%20x)/repo');
    refused('git@$(touch x):repo.git');
    refused('git@a;b:repo.git');
  });

  it('refuses hosts that look like command-line options', () => {
    refused('ssh://-oProxyCommand=touch%20x/repo');
    refused('-oProxyCommand=x:repo');
  });

  it('strips user:password@ from URLs in free text', () => {
    expect(stripUrlCredentials('fatal: https://u:tok@host/x and git://a@b/c')).toBe('fatal: https://***@host/x and git://***@b/c');
  });

  it('strips credentials wherever the scheme starts in a run of scheme characters, in time linear in the text', () => {
    const cases: [string, string][] = [
      ['1https://u:p@h', '1https://***@h'],
      ['-https://u@h', '-https://***@h'],
      ['a+b.c-d://u@h', 'a+b.c-d://***@h'],
      ['see:https://u:p@h and ssh://git@h:22/x', 'see:https://***@h and ssh://***@h:22/x'],
      ['a://b c://d@e', 'a://b c://***@e'],
      ['https://h/u@x', 'https://h/u@x'],
      ['no scheme u:p@h', 'no scheme u:p@h'],
    ];
    for (const [text, want] of cases) expect(stripUrlCredentials(text), text).toBe(want);
    // Was quadratic in a run of letters: this line alone took about 20 s (a 1 MB one, minutes), so a return of that
    // shows in this file's duration.
    const line = `${'a'.repeat(200_000)} https://u:p@h`;
    expect(stripUrlCredentials(line).endsWith(' https://***@h')).toBe(true);
  });
});

describe('git custom_config policy', () => {
  it('accepts settings that shape the checkout or the HTTP exchange', () => {
    expect(() => checkGitConfig({ 'core.autocrlf': 'input', 'http.extraHeader': 'Authorization: Bearer x', 'http.https://git.example.com/.sslVerify': 'false', 'color.ui': 'false' })).not.toThrow();
  });

  it('refuses settings that run programs, read files or redirect the fetch', () => {
    for (const key of [
      'core.sshCommand',
      'core.fsmonitor',
      'core.hooksPath',
      'core.gitProxy',
      'filter.lfs.smudge',
      'credential.helper',
      'url.file:///etc/.insteadOf',
      'protocol.ext.allow',
      'include.path',
      'http.proxy',
      'http.cookieFile',
      'remote.origin.uploadpack',
      'alias.fetch',
    ]) {
      expect(() => checkGitConfig({ [key]: 'x' }), key).toThrowError(SourceRefused);
    }
  });
});

describe('request paths', () => {
  it('refuses .. escapes and absolute paths; accepts relative ones and empty', () => {
    for (const p of ['', '.', 'Dockerfile', 'sub/dir/Dockerfile', 'a/../b', './x']) expect(() => checkRelativePath('dockerfile_path', p), p).not.toThrow();
    for (const p of ['..', '../x', 'a/../../x', '/etc/passwd', 'C:\\x', 'a\\..\\..\\x', 'x\0y']) {
      expect(() => checkRelativePath('dockerfile_path', p), p).toThrowError(InvalidRequest);
    }
  });
});

describe('refs of non-git initializers', () => {
  const file = (source: WorkspaceInitializer): BuildSourceDockerfile => ({ source, dockerfileVersion: '', dockerfilePath: 'Dockerfile', contextPath: '' });
  const download = (url: string, digest: string, filePath = 'Dockerfile'): WorkspaceInitializer => ({
    spec: { $case: 'download', download: { targetLocation: '', files: [{ url, filePath, digest }] } },
  });
  const empty: WorkspaceInitializer = { spec: { $case: 'empty', empty: {} } };
  const snapshot = (name: string): WorkspaceInitializer => ({ spec: { $case: 'snapshot', snapshot: { snapshot: name, fromVolumeSnapshot: false } } });
  const composite = (...initializer: WorkspaceInitializer[]): WorkspaceInitializer => ({ spec: { $case: 'composite', composite: { initializer } } });
  const ref = (init: WorkspaceInitializer) => dockerfileBaseRef(file(init), 'registry/base');
  const d1 = `sha256:${'1'.repeat(64)}`;
  const d2 = `sha256:${'2'.repeat(64)}`;

  it('are deterministic', () => {
    expect(ref(download('https://x/a', d1))).toBe(ref(download('https://x/a', d1)));
    expect(ref(snapshot('s3://b/k.tar'))).toBe(ref(snapshot('s3://b/k.tar')));
    expect(ref(composite(download('https://x/a', d1), empty))).toBe(ref(composite(download('https://x/a', d1), empty)));
    expect(ref(empty)).toMatch(/^registry\/base:[a-f0-9]{64}$/);
  });

  it('differ when a content-identifying field differs', () => {
    const refs = [
      ref(download('https://x/a', d1)),
      ref(download('https://x/b', d1)),
      ref(download('https://x/a', d2)),
      ref(download('https://x/a', d1, 'sub/Dockerfile')),
      ref(snapshot('s3://b/k.tar')),
      ref(snapshot('s3://b/other.tar')),
      ref(composite(download('https://x/a', d1), empty)),
      ref(composite(empty, download('https://x/a', d1))),
      ref(empty),
    ];
    expect(new Set(refs).size).toBe(refs.length);
  });

  it('a git target nested in a composite is hashed with the commit it resolved to', () => {
    const git: WorkspaceInitializer = {
      spec: { $case: 'git', git: { remoteUri: 'https://git.example.com/r', upstreamRemoteUri: '', targetMode: CloneTargetMode.REMOTE_BRANCH, cloneTaget: 'main', checkoutLocation: '', config: undefined, fullClone: false } },
    };
    const src = file(composite(git, empty));
    const a = dockerfileBaseRef(src, 'registry/base', { resolvedCommits: { '0': 'a'.repeat(40) } });
    const b = dockerfileBaseRef(src, 'registry/base', { resolvedCommits: { '0': 'b'.repeat(40) } });
    expect(a).not.toBe(b);
  });

  it('credentials in a remote URL do not change the ref', () => {
    const git = (remoteUri: string): BuildSourceDockerfile =>
      file({ spec: { $case: 'git', git: { remoteUri, upstreamRemoteUri: '', targetMode: CloneTargetMode.REMOTE_COMMIT, cloneTaget: 'c'.repeat(40), checkoutLocation: '', config: undefined, fullClone: false } } });
    expect(dockerfileBaseRef(git('https://user:token1@git.example.com/r'), 'registry/base')).toBe(dockerfileBaseRef(git('https://git.example.com/r'), 'registry/base'));
  });
});
