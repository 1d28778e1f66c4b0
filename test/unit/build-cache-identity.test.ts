import { describe, expect, it } from 'vitest';
import { WorkspaceInitializer } from '@imgbuilder/proto';
import { cacheRefOf, sourceIdentity, type CacheSource } from '../../apps/worker/src/builder/cache-identity.js';

const git = (remoteUri: string, cloneTaget = 'main', checkoutLocation = '') =>
  WorkspaceInitializer.fromPartial({ spec: { $case: 'git', git: { remoteUri, cloneTaget, checkoutLocation } } });
const src = (source: WorkspaceInitializer, dockerfilePath = '.gitpod.Dockerfile', contextPath = ''): CacheSource => ({ source, dockerfilePath, contextPath });
const snapshot = (key: string) => WorkspaceInitializer.fromPartial({ spec: { $case: 'snapshot', snapshot: { snapshot: key } } });

describe('source identity of the layer cache', () => {
  it('the same git remote and Dockerfile path are one identity, whatever the branch, credentials, host case or .git', () => {
    const a = sourceIdentity(src(git('https://github.com/acme/app.git', 'main')));
    expect(a).toBeDefined();
    expect(sourceIdentity(src(git('https://user:token@GitHub.com/acme/app', 'feature/x')))).toBe(a);
    expect(sourceIdentity(src(git('https://github.com/acme/app/')))).toBe(a);
  });

  it('another remote, checkout location, Dockerfile or context path is another identity', () => {
    const a = sourceIdentity(src(git('https://github.com/acme/app')));
    for (const other of [
      src(git('https://github.com/acme/other')),
      src(git('https://github.com/acme/app', 'main', 'sub')),
      src(git('https://github.com/acme/app'), 'Dockerfile'),
      src(git('https://github.com/acme/app'), '.gitpod.Dockerfile', 'ctx'),
    ]) {
      expect(sourceIdentity(other)).not.toBe(a);
    }
  });

  it('a CLI upload counts by its directory name and caller, not by its content', () => {
    const names = new Map([
      ['snapshots/aaa.tar.gz', 'my-app'],
      ['snapshots/bbb.tar.gz', 'my-app'],
      ['snapshots/ccc.tar.gz', 'other-app'],
    ]);
    const id = (key: string, caller: string) => sourceIdentity(src(snapshot(key), 'Dockerfile'), { names, caller });
    expect(id('snapshots/aaa.tar.gz', 'imgbuilder-cli')).toBeDefined();
    expect(id('snapshots/bbb.tar.gz', 'imgbuilder-cli')).toBe(id('snapshots/aaa.tar.gz', 'imgbuilder-cli'));
    expect(id('snapshots/ccc.tar.gz', 'imgbuilder-cli')).not.toBe(id('snapshots/aaa.tar.gz', 'imgbuilder-cli'));
    expect(id('snapshots/aaa.tar.gz', 'someone-else')).not.toBe(id('snapshots/aaa.tar.gz', 'imgbuilder-cli'));
    // A snapshot without a recorded name (not uploaded through the API) has no identity.
    expect(sourceIdentity(src(snapshot('snapshots/ddd.tar.gz')), { names, caller: 'x' })).toBeUndefined();
  });

  it('cache refs are tags of the cache repository that never look like a base ref', () => {
    expect(cacheRefOf('git x', 'reg:5000/team/cache')).toMatch(/^reg:5000\/team\/cache:cache-[0-9a-f]{40}$/);
  });
});
