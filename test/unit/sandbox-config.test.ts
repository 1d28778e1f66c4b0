import { describe, expect, it } from 'vitest';
import { loadEnv } from '@imgbuilder/common/config';

describe('build sandbox settings', () => {
  it('limits default to 4GiB memory, 2 CPUs, 1024 processes, 20GiB disk, and keep the text they were given', () => {
    const env = loadEnv({ NODE_ENV: 'development' });
    expect(env.IMGBUILDER_BUILD_MEMORY).toEqual({ bytes: 4 * 1024 ** 3, text: '4GiB' });
    expect(env.IMGBUILDER_BUILD_CPUS).toBe(2);
    expect(env.IMGBUILDER_BUILD_PIDS).toBe(1024);
    expect(env.IMGBUILDER_BUILD_DISK).toEqual({ bytes: 20 * 1024 ** 3, text: '20GiB' });
    expect(env.IMGBUILDER_BUILD_EGRESS_CHECK).toBe('on');
    expect(loadEnv({ NODE_ENV: 'development', IMGBUILDER_BUILD_MEMORY: '512m' }).IMGBUILDER_BUILD_MEMORY).toEqual({ bytes: 512 * 1024 ** 2, text: '512m' });
  });

  it('egress exceptions are CIDRs or host:port; anything else stops the start naming the variable', () => {
    expect(loadEnv({ NODE_ENV: 'development', IMGBUILDER_BUILD_EGRESS_ALLOW: '10.20.0.0/16, mirror.internal:443,[fd00::1]:80,192.168.1.5:3128' }).IMGBUILDER_BUILD_EGRESS_ALLOW).toEqual([
      '10.20.0.0/16',
      'mirror.internal:443',
      '[fd00::1]:80',
      '192.168.1.5:3128',
    ]);
    expect(() => loadEnv({ IMGBUILDER_BUILD_EGRESS_ALLOW: 'http://mirror/' })).toThrow(/IMGBUILDER_BUILD_EGRESS_ALLOW/);
    expect(() => loadEnv({ IMGBUILDER_BUILD_EGRESS_CHECK: 'maybe' })).toThrow(/IMGBUILDER_BUILD_EGRESS_CHECK/);
    expect(() => loadEnv({ IMGBUILDER_BUILD_PIDS: '2' })).toThrow(/IMGBUILDER_BUILD_PIDS/);
  });
});
