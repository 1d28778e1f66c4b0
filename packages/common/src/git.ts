import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { SECRET_GIT_CONFIG, stripUrlCredentials } from './source-policy.js';
import { fetchProxySession, type ProxySession } from './fetch-proxy.js';
import { GitError } from './errors.js';

export interface GitCredentials {
  username: string;
  password: string;
}

let askpassPath: string | undefined;

/**
 * A GIT_ASKPASS program that answers from the environment of the git process, so credentials never appear in
 * argv, in a file, or in git's config.
 */
function askpass(): string {
  if (!askpassPath) {
    const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-askpass-'));
    askpassPath = join(dir, 'askpass.sh');
    writeFileSync(askpassPath, '#!/bin/sh\ncase "$1" in\n  Username*) printf "%s" "$IMGBUILDER_GIT_USER" ;;\n  *) printf "%s" "$IMGBUILDER_GIT_PASSWORD" ;;\nesac\n');
    chmodSync(askpassPath, 0o700);
  }
  return askpassPath;
}

/** Splits `https://user:token@host/x` into the bare URL and its credentials. */
export function splitUrlCredentials(url: string): { url: string; credentials?: GitCredentials } {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^@/\s]+)@(.*)$/i.exec(url);
  if (!m || !/^https?:/i.test(url)) return { url };
  const [user, ...rest] = m[2].split(':');
  return { url: m[1] + m[3], credentials: { username: decodeURIComponent(user), password: decodeURIComponent(rest.join(':')) } };
}

export interface RunGitOptions {
  cwd?: string;
  credentials?: GitCredentials;
  /**
   * The initializer's custom_config (already checked by checkGitConfig). Passed through GIT_CONFIG_COUNT in the
   * environment, never as `-c` arguments: values such as http.extraHeader carry tokens, and argv is world-readable.
   */
  config?: Record<string, string>;
  /** What git fetches, for fetch-policy refusals ("git remote_uri"). */
  what?: string;
  /** Allow the file transport (IMGBUILDER_ALLOW_LOCAL_SOURCES). */
  allowFile?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Secrets to scrub from anything git prints before it reaches an error message. */
  secrets?: string[];
  onOutput?: (text: string) => void;
}

/**
 * Settings every git run gets, before the user's: no credential helper or prompt but our askpass, only the
 * transports the URL policy allows, no hooks or fsmonitor (a restored snapshot brings its own .git), and no
 * attributes file from the worker's home. Repository config can only come from the fresh `.git` git init wrote
 * (downloads and snapshots may not write `.git`; a prebuild's is rewritten): see the worker's initializers.
 */
function baseConfig(allowFile: boolean): string[] {
  const pairs: [string, string][] = [
    ['credential.helper', ''],
    ['core.askPass', askpass()],
    ['core.hooksPath', '/dev/null'],
    ['core.fsmonitor', 'false'],
    ['core.attributesFile', '/dev/null'],
    ['protocol.allow', 'never'],
    ['protocol.https.allow', 'always'],
    ['protocol.http.allow', 'always'],
    ['protocol.ssh.allow', 'always'],
    ['protocol.git.allow', 'always'],
    ['protocol.file.allow', allowFile ? 'always' : 'never'],
  ];
  return pairs.flatMap(([k, v]) => ['-c', `${k}=${v}`]);
}

/**
 * Runs git non-interactively; resolves with stdout, rejects with a GitError whose message has no secrets, or with
 * FetchRefused when the fetch policy refused a connection git tried (through the fetch proxy, fetch-proxy.ts).
 */
export async function runGit(args: string[], opts: RunGitOptions = {}): Promise<string> {
  const proxy = await fetchProxySession(opts.what ?? 'git remote');
  try {
    return await spawnGit(args, opts, proxy);
  } catch (err) {
    throw proxy.refusal() ?? err;
  } finally {
    proxy.end();
  }
}

function spawnGit(args: string[], opts: RunGitOptions, proxy: ProxySession): Promise<string> {
  const configArgs = baseConfig(opts.allowFile ?? false);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME ?? tmpdir(),
    GIT_TERMINAL_PROMPT: '0',
    GIT_ASKPASS: askpass(),
    GIT_CONFIG_NOSYSTEM: '1',
    // The worker's own ~/.gitconfig is not the user's business (and may hold helpers or rewrites).
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_ATTR_NOSYSTEM: '1',
    // Never look for a repository above the directory git runs in: a checkout nested in another's work tree must
    // not pick up the outer repository's config.
    ...(opts.cwd ? { GIT_CEILING_DIRECTORIES: dirname(resolve(opts.cwd)) } : {}),
    ...proxy.env,
    LC_ALL: 'C',
    IMGBUILDER_GIT_USER: opts.credentials?.username ?? '',
    IMGBUILDER_GIT_PASSWORD: opts.credentials?.password ?? '',
  };
  const custom = Object.entries(opts.config ?? {});
  // The proxy's settings first; checkGitConfig keeps the user's entries from overriding them.
  const entries = [...proxy.config, ...custom];
  env.GIT_CONFIG_COUNT = String(entries.length);
  entries.forEach(([k, v], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = k;
    env[`GIT_CONFIG_VALUE_${i}`] = v;
  });
  const secretValues = [...(opts.secrets ?? []), opts.credentials?.password ?? '', ...custom.filter(([k]) => SECRET_GIT_CONFIG.test(k)).map(([, v]) => v)];
  const scrub = (s: string) => {
    let out = stripUrlCredentials(s);
    for (const secret of secretValues) if (secret.length >= 3) out = out.split(secret).join('***');
    return out;
  };
  return new Promise((resolve, reject) => {
    const child = spawn('git', [...configArgs, ...args], { cwd: opts.cwd, env, stdio: ['ignore', 'pipe', 'pipe'], signal: opts.signal });
    let out = '';
    let err = '';
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      const text = d.toString();
      err += text;
      opts.onOutput?.(scrub(text));
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new GitError(`git ${args[0]} could not run: ${scrub(e.message)}`));
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      if (code === 0) return resolve(out);
      const last = scrub(err.trim()).split('\n').filter(Boolean).slice(-3).join('; ');
      reject(new GitError(`git ${args[0]} failed${sig ? ` (${sig === 'SIGKILL' && timer ? 'timed out' : sig})` : ''}: ${last || `exit code ${code}`}`));
    });
  });
}

/** The commit `ref` (branch, tag or HEAD) points to on the remote, without cloning. */
export async function lsRemote(url: string, ref: string, opts: RunGitOptions = {}): Promise<string | undefined> {
  const out = await runGit(['ls-remote', '--', url, ref || 'HEAD'], { timeoutMs: 30_000, ...opts });
  const lines = out.trim().split('\n').filter(Boolean).map((l) => l.split('\t'));
  if (!ref || ref === 'HEAD') return lines.find((l) => l[1] === 'HEAD')?.[0];
  const exact = lines.find((l) => l[1] === `refs/heads/${ref}`) ?? lines.find((l) => l[1] === `refs/tags/${ref}^{}`) ?? lines.find((l) => l[1] === `refs/tags/${ref}`) ?? lines.find((l) => l[1] === ref);
  return exact?.[0];
}
