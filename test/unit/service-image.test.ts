import { readdirSync, readFileSync, statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { repoPath } from '../support/manifests.js';

describe('service image (Dockerfile)', () => {
  const dockerfile = readFileSync(repoPath('Dockerfile'), 'utf8');
  const pkg = JSON.parse(readFileSync(repoPath('package.json'), 'utf8'));
  /** Stages by name, each with its FROM and instructions (continuation lines joined). */
  const stages = (() => {
    const lines = dockerfile.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    const args = Object.fromEntries(lines.filter((l) => /^ARG \w+=/.test(l)).map((l) => l.slice(4).split('=')));
    const out: { name: string; from: string; steps: string[] }[] = [];
    for (const l of lines) {
      const m = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?$/i.exec(l);
      if (m) out.push({ from: m[1].replace(/\$\{(\w+)\}/, (_, a) => args[a]), name: m[2] ?? String(out.length), steps: [] });
      else out.at(-1)?.steps.push(l);
    }
    return out;
  })();
  const stage = (name: string) => stages.find((s) => s.name === name)!;
  /** A stage's steps with those of the stages it is built FROM (a shared manifests stage, say), oldest first. */
  const inherited = (name: string): string[] => {
    const s = stage(name);
    return stages.some((p) => p.name === s.from) ? [...inherited(s.from), ...s.steps] : s.steps;
  };
  const runtime = stages.at(-1)!;

  it('final stage: node:24-bookworm-slim with git and the static busybox the egress probe is made of, running as the node user', () => {
    expect(runtime.from).toBe('node:24-bookworm-slim');
    const install = runtime.steps.find((s) => s.startsWith('RUN') && s.includes('apt-get install'));
    expect(install).toMatch(/\bgit\b/);
    expect(install).toMatch(/\bbusybox-static\b/);
    const users = runtime.steps.filter((s) => s.startsWith('USER '));
    expect(users.at(-1)).toBe('USER node');
  });

  it('final stage gets production dependencies only; tsx is a development dependency', () => {
    const copy = runtime.steps.find((s) => s.includes('node_modules'))!;
    const from = /--from=(\S+)/.exec(copy)![1];
    expect(stage(from).steps).toContain('RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force');
    expect(Object.keys(pkg.dependencies)).not.toContain('tsx');
    expect(Object.keys(pkg.devDependencies)).toContain('tsx');
  });

  it('final stage runs what the build stage compiled, not TypeScript sources', () => {
    expect(stage('build').steps).toContain('RUN npm run build');
    const fromBuild = runtime.steps.filter((s) => s.startsWith('COPY --from=build '));
    expect(fromBuild.map((s) => s.split(/\s+/)[2])).toEqual(['/app/apps/api/dist/', '/app/apps/worker/dist/', '/app/apps/cli/dist/']);
    const copied = runtime.steps.filter((s) => s.startsWith('COPY ') && !s.startsWith('COPY --from=')).flatMap((s) => s.split(/\s+/).slice(1, -1));
    expect(copied.filter((p) => p === '.' || p.includes('src'))).toEqual([]);
    // The API's bundle reads the dashboard's files beside it (apps/api/dashboard).
    expect(copied).toContain('apps/api/dashboard/');
  });

  it('engines admits both the Node of development machines (20) and that of the image (24)', () => {
    expect(pkg.engines.node).toBe('^20.19.0 || >=22');
  });

  it('the dependency stages see every workspace, so npm ci links each one', () => {
    const workspaces = (pkg.workspaces as string[]).flatMap((glob) => {
      const dir = glob.replace(/\/\*$/, '');
      return readdirSync(repoPath(dir)).filter((d) => statSync(repoPath(dir, d, 'package.json'), { throwIfNoEntry: false })).map((d) => `${dir}/${d}/package.json`);
    });
    for (const name of ['deps', 'build']) {
      const copied = inherited(name).filter((s) => s.startsWith('COPY ')).flatMap((s) => s.split(/\s+/).slice(1, -1));
      expect(workspaces.filter((w) => !copied.includes(w))).toEqual([]);
      expect(copied).toEqual(expect.arrayContaining(['package.json', 'package-lock.json']));
    }
  });

  it('.dockerignore lets in what the entry point runs and keeps out dependencies, tests and env files', () => {
    const rules = readFileSync(repoPath('.dockerignore'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(rules[0]).toBe('*');
    for (const p of ['!package.json', '!package-lock.json', '!apps/', '!packages/', '!bin/', '!infra/docker/', '!scripts/build.mjs']) expect(rules).toContain(p);
    for (const p of ['**/node_modules', '**/dist', '**/.env']) expect(rules).toContain(p);
  });

  it('entry point: api, worker and cli are what the image runs; the script is executable', () => {
    expect(runtime.steps.find((s) => s.startsWith('ENTRYPOINT'))).toContain('/app/infra/docker/entrypoint.sh');
    expect(runtime.steps.find((s) => s.startsWith('CMD'))).toBe('CMD ["api"]');
    const script = repoPath('infra/docker/entrypoint.sh');
    expect(statSync(script).mode & 0o111).not.toBe(0);
    const text = readFileSync(script, 'utf8');
    for (const app of ['api', 'worker', 'cli']) expect(text).toContain(`exec node --enable-source-maps apps/${app}/dist/main.js`);
    expect(text).not.toContain('tsx');
  });
});
