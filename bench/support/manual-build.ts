import { spawn } from 'node:child_process';

/**
 * What a user does by hand to get the same images imgbuilder produces: clone, build with the engine's classic
 * builder (the one imgbuilder uses), push the base image, then copy it to the workspace repository (tag + push).
 */
// The @@ lines (bash's µs clock) time each stage, for the comparison with imgbuilder's stages; they cost ~nothing.
const SCRIPT = `set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "@@ start $EPOCHREALTIME"
git clone -q --depth 1 --branch "$BRANCH" "$REMOTE" "$dir/src"
test "$(git -C "$dir/src" rev-parse HEAD)" = "$COMMIT"
echo "@@ cloned $EPOCHREALTIME"
docker build -t "$BASE" "$dir/src"
echo "@@ built $EPOCHREALTIME"
docker push "$BASE"
echo "@@ pushed-base $EPOCHREALTIME"
docker tag "$BASE" "$WORKSPACE"
docker push "$WORKSPACE"
echo "@@ pushed-workspace $EPOCHREALTIME"
`;

export interface ManualRun {
  ms: number;
  /** Stage durations in ms: clone, build, pushBase, pushWorkspace (tag + push). */
  stages: Record<string, number>;
}

/** Runs the manual script; resolves with its wall time in ms, rejects with its output on failure. */
export function manualBuild(opts: { remote: string; branch: string; commit: string; base: string; workspace: string; dockerHost?: string }): Promise<ManualRun> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', SCRIPT], {
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        DOCKER_HOST: opts.dockerHost ?? 'unix:///var/run/docker.sock',
        // The classic builder, as imgbuilder's worker uses (`version: '1'`).
        DOCKER_BUILDKIT: '0',
        REMOTE: opts.remote,
        BRANCH: opts.branch,
        COMMIT: opts.commit,
        BASE: opts.base,
        WORKSPACE: opts.workspace,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // Read the output as a user's terminal would.
    let out = '';
    const keep = (d: Buffer) => {
      out += d.toString();
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve({ ms: Date.now() - t0, stages: stagesOf(out) });
      else reject(new Error(`manual build failed (exit ${code}):\n${out.slice(-4000)}`));
    });
  });
}

function stagesOf(out: string): Record<string, number> {
  const at: Record<string, number> = {};
  for (const m of out.matchAll(/^@@ (\S+) (\d+)[.,](\d{6})$/gm)) at[m[1]] = Number(m[2]) * 1000 + Number(m[3]) / 1000;
  return {
    clone: at.cloned - at.start,
    build: at.built - at.cloned,
    pushBase: at['pushed-base'] - at.built,
    pushWorkspace: at['pushed-workspace'] - at['pushed-base'],
  };
}

/** Removes the manual baseline's tags from the engine (layers stay as build cache, as imgbuilder leaves them). */
export function untag(refs: string[], dockerHost?: string): Promise<void> {
  if (refs.length === 0) return Promise.resolve();
  return new Promise((resolve) => {
    const child = spawn('docker', ['rmi', '--no-prune', ...refs], { env: { PATH: process.env.PATH, HOME: process.env.HOME, DOCKER_HOST: dockerHost ?? 'unix:///var/run/docker.sock' }, stdio: 'ignore' });
    child.on('exit', () => resolve());
    child.on('error', () => resolve());
  });
}
