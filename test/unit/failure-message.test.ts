import { describe, expect, it } from 'vitest';
import { RegistryUnavailable, WorkspaceImageMissing } from '@imgbuilder/common/errors';
import { EngineError, EngineUnavailableError, UserBuildError } from '../../apps/worker/src/docker-engine.js';
import { failureLogLine, failureMessage } from '../../apps/worker/src/report/failure-message.js';
import { SourceError } from '../../apps/worker/src/sources/source-error.js';

describe('failureMessage: only what the user caused starts "build failed: " (Gitpod pages its operators for the rest)', () => {
  it('prefixes failing steps, unpullable images and source errors', () => {
    expect(failureMessage(new UserBuildError('step "Step 2/3 : RUN exit 7": returned a non-zero code: 7'))).toBe('build failed: step "Step 2/3 : RUN exit 7": returned a non-zero code: 7');
    expect(failureMessage(new UserBuildError('pull of r.example.com/a@sha256:ab failed: manifest unknown'))).toMatch(/^build failed: pull of/);
    expect(failureMessage(new SourceError('Dockerfile not found: Dockerfile does not exist in the build context'))).toMatch(/^build failed: Dockerfile not found/);
  });

  it('leaves engine, registry, storage and internal failures unprefixed', () => {
    const infra = [
      new EngineUnavailableError('Docker engine at unix:///x.sock is unreachable (ECONNREFUSED)'),
      new EngineError('push of r/base:1 failed: registry r is unreachable (connection refused)'),
      new UserBuildError('step "Step 2/3 : COPY . /src": write /var/lib/docker/tmp/x: no space left on device'),
      new SourceError('snapshot s cannot be read: connect ECONNREFUSED 127.0.0.1:4568', true),
      new WorkspaceImageMissing('r/workspace:1'),
      new RegistryUnavailable('r', 'cannot resolve image r/a:1: registry r is unreachable (ECONNREFUSED)'),
      new Error('boom'),
    ];
    for (const err of infra) expect(failureMessage(err)).not.toMatch(/^build failed:/);
    expect(failureMessage(new Error('boom'))).toBe('internal error: boom');
  });

  it('the log line says "build failed" once either way', () => {
    expect(failureLogLine('build failed: step "Step 1/1 : RUN x": y')).toBe('build failed: step "Step 1/1 : RUN x": y');
    expect(failureLogLine('push of r/base:1 failed: denied')).toBe('build failed: push of r/base:1 failed: denied');
  });
});
