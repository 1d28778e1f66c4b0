import { describe, expect, it } from 'vitest';
import { CloneTargetMode } from '@imgbuilder/proto';
import { dockerfileBaseRef, workspaceRef } from '@imgbuilder/common/refs';

const gitSource = (cloneTaget: string) => ({
  source: { spec: { $case: 'git' as const, git: { remoteUri: 'https://github.com/AlexTugarev/test.repo', upstreamRemoteUri: '', targetMode: CloneTargetMode.REMOTE_BRANCH, cloneTaget, checkoutLocation: '', config: undefined, fullClone: false } } },
  dockerfileVersion: '',
  dockerfilePath: '.gitpod.dockerfile',
  contextPath: '.',
});

describe('refs (REFERENCE.md test vectors)', () => {
  it('hashes a git Dockerfile source into the base ref Gitpod computes', () => {
    expect(dockerfileBaseRef(gitSource('good-workspace-image'), 'registry/base')).toBe(
      'registry/base:3efd79682470adfce9a2d4ddbc1a96e0ef592d0ca0b7c4b3be932a108cb9a4d4',
    );
  });

  it('derives the workspace ref from the base ref and build-process version 2', () => {
    expect(workspaceRef('source-image:latest', 'registry/workspace')).toBe(
      'registry/workspace:2b1325adbf901167f47a914a62d377c98f1e32e0837dafb95ca86ca9d08ab14e',
    );
  });

  it('a resolved commit replaces the clone target, so a moved branch changes the ref', () => {
    const plain = dockerfileBaseRef(gitSource('main'), 'registry/base');
    const atA = dockerfileBaseRef(gitSource('main'), 'registry/base', { resolvedCommit: 'a'.repeat(40) });
    const atB = dockerfileBaseRef(gitSource('main'), 'registry/base', { resolvedCommit: 'b'.repeat(40) });
    expect(new Set([plain, atA, atB]).size).toBe(3);
  });
});
