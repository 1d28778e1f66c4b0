import { execFile } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT, localEnv } from './stack.js';

const run = promisify(execFile);
const SCRIPT = join(ROOT, 'infra/engine/egress-policy.sh');
const extra = new Set<string>();

/** The allow list the local stack was started with (infra/local/up.sh reads IMGBUILDER_BUILD_EGRESS_ALLOW). */
function baseAllow(): string[] {
  const text = process.env.IMGBUILDER_BUILD_EGRESS_ALLOW ?? localEnv().IMGBUILDER_BUILD_EGRESS_ALLOW ?? '';
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}

/** Installs the engine's egress policy with the stack's allow list plus `entries` (replacing the previous rules). */
export async function applyEgressPolicy(entries: string[] = []): Promise<void> {
  const allow = [...baseAllow(), ...entries].join(',');
  await run('sh', [SCRIPT, 'docker0'], { env: { ...process.env, IMGBUILDER_BUILD_EGRESS_ALLOW: allow }, timeout: 30_000 });
}

/**
 * Lets build steps reach `hostPort` (a test endpoint on the bridge gateway, say) until the returned function is
 * called: the same exception an operator would configure with IMGBUILDER_BUILD_EGRESS_ALLOW.
 */
export async function allowEgress(hostPort: string): Promise<() => Promise<void>> {
  extra.add(hostPort);
  await applyEgressPolicy([...extra]);
  return async () => {
    extra.delete(hostPort);
    await applyEgressPolicy([...extra]);
  };
}

/** The engine's default bridge gateway: the engine host as a build step sees it. */
export function bridgeGateway(): string {
  try {
    const out = execFileSync('docker', ['network', 'inspect', 'bridge', '-f', '{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}'], { encoding: 'utf8', timeout: 10_000 }).trim();
    const [gateway, subnet] = out.split(' ');
    if (/^\d+\.\d+\.\d+\.\d+$/.test(gateway)) return gateway;
    // The engine leaves Gateway empty for its default bridge: it is the subnet's first host address.
    const m = /^(\d+\.\d+\.\d+)\.0\/(1[6-9]|2[0-4])$/.exec(subnet ?? '');
    if (m) return `${m[1]}.1`;
  } catch {
    // fall through to Docker's default
  }
  return '172.17.0.1';
}
