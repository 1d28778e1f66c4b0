import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../../testkit/stack.js';

/**
 * infra/engine/egress-policy.sh in a network namespace of its own (`unshare -n`), on a bridge made there: its rules
 * land in that namespace's tables only, and no traffic is sent.
 */

const SCRIPT = join(ROOT, 'infra/engine/egress-policy.sh');
const BRIDGE = 'imgbt0';
const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-egress-policy-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the script on a fresh bridge carrying an IPv6 address, then prints the resulting chains. */
function policyInNetns(env: Record<string, string>, path = process.env.PATH ?? '') {
  const script = [
    `ip link add ${BRIDGE} type bridge && ip link set ${BRIDGE} up && ip -6 addr add fd00:5eed::1/64 dev ${BRIDGE} nodad`,
    `sh ${SCRIPT} ${BRIDGE} || exit $?`,
    'echo ---v4; iptables -w -S IMGBUILDER-EGRESS; echo ---v6; ip6tables -w -S IMGBUILDER-EGRESS',
  ].join('\n');
  return spawnSync('unshare', ['-n', '/bin/sh', '-c', script], { env: { PATH: path, ...env }, encoding: 'utf8', timeout: 30_000 });
}

describe('egress-policy.sh', () => {
  it('denies Azure WireServer, the NAT64 prefixes and the IMGBUILDER_BUILD_EGRESS_DENY ranges', () => {
    const r = policyInNetns({ IMGBUILDER_BUILD_EGRESS_DENY: '203.0.113.0/24, 2001:db8::/32', IMGBUILDER_BUILD_EGRESS_DNS: 'off' });
    expect(r.status, r.stderr).toBe(0);
    const [v4, v6] = r.stdout.split('---v6');
    for (const range of ['168.63.129.16/32', '203.0.113.0/24', '169.254.0.0/16']) expect(v4).toContain(`-d ${range} -p tcp -j REJECT`);
    for (const range of ['64:ff9b::/96', '64:ff9b:1::/48', '2001:db8::/32']) expect(v6).toContain(`-d ${range} -p tcp -j REJECT`);
  });

  it('refuses a deny entry that is no CIDR', () => {
    const r = policyInNetns({ IMGBUILDER_BUILD_EGRESS_DENY: 'metadata.internal' });
    expect(r.status).toBe(64);
    expect(r.stderr).toContain('IMGBUILDER_BUILD_EGRESS_DENY entry "metadata.internal" is not a CIDR');
  });

  it('fails saying why when the bridge carries IPv6 and ip6tables cannot be used', () => {
    // An ip6tables that cannot talk to the kernel, ahead of the real one on PATH.
    const bin = join(dir, 'bin');
    spawnSync('mkdir', ['-p', bin]);
    writeFileSync(join(bin, 'ip6tables'), '#!/bin/sh\necho "ip6tables: can\'t initialize ip6tables table filter" >&2\nexit 3\n');
    chmodSync(join(bin, 'ip6tables'), 0o755);
    const r = policyInNetns({ IMGBUILDER_BUILD_EGRESS_DNS: 'off' }, `${bin}:${process.env.PATH}`);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${BRIDGE} carries IPv6 but ip6tables cannot be used here`);
    // Nothing half-installed: the IPv4 chain was never created.
    expect(r.stdout).not.toContain('---v4');
  });
});
