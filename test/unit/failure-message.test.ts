import { describe, expect, it } from 'vitest';
import { RegistryUnavailable, WorkspaceImageMissing } from '@imgbuilder/common/errors';
import * as workerErrors from '../../apps/worker/src/errors.js';
import { failureLogLine, failureMessage, isKnownFailure } from '../../apps/worker/src/report/failure-message.js';

const { EngineError, EngineUnavailableError, SourceError, UserBuildError } = workerErrors;

/** Raised and turned into a SourceError where they arise (context-fs.ts, dockerfile-rewrite.ts): never reach failureMessage. */
const CONVERTED_TO_SOURCE_ERROR = new Set<unknown>([workerErrors.ContextWriteError, workerErrors.DockerfileSyntaxError]);

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

  it('words every error class of the worker\'s errors module itself (none ends as "internal error")', () => {
    const classes = (Object.values(workerErrors) as unknown[]).filter((v): v is new (message: string) => Error => typeof v === 'function' && v.prototype instanceof Error && !CONVERTED_TO_SOURCE_ERROR.has(v));
    expect(classes.length).toBeGreaterThanOrEqual(7);
    const limits = { memory: { text: '1GiB' }, pids: 8, disk: { text: '1GiB' } };
    for (const cls of classes) {
      const err = (cls as unknown) === workerErrors.BuildLimitError ? new workerErrors.BuildLimitError('memory', limits) : new cls('x');
      expect(isKnownFailure(err), cls.name).toBe(true);
      expect(failureMessage(err), cls.name).not.toMatch(/^internal error/);
    }
  });

  it('the log line says "build failed" once either way', () => {
    expect(failureLogLine('build failed: step "Step 1/1 : RUN x": y')).toBe('build failed: step "Step 1/1 : RUN x": y');
    expect(failureLogLine('push of r/base:1 failed: denied')).toBe('build failed: push of r/base:1 failed: denied');
  });
});
