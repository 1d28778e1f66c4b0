import { FetchPolicy, installFetchPolicy } from '@imgbuilder/common/fetch-policy';

/**
 * Test servers (git daemon, HTTP sources, fake registries) listen on 127.0.0.1, which the fetch policy refuses by
 * default: stacks and in-process tests re-allow it. Tests of the policy itself allow single host:port entries instead.
 */
export const TEST_SERVERS_ALLOW = '127.0.0.1/32';

/** For in-process tests: this process's fetches may reach the test servers. */
export function allowTestServers(): void {
  installFetchPolicy(new FetchPolicy({ allow: [TEST_SERVERS_ALLOW] }));
}
