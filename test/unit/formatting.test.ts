import { describe, expect, it } from 'vitest';
import { formatBytes } from '@imgbuilder/common/byte-size';
import { formatDuration } from '@imgbuilder/common/duration';

describe('durations and sizes for people', () => {
  it('settings and limits are written as one would set them', () => {
    expect([3_600_000, 90_000, 250, 1_500, 7 * 86_400_000].map((ms) => formatDuration(ms))).toEqual(['1h', '90s', '250ms', '1.5s', '7d']);
    expect([1024 ** 3, 1536 * 1024, 100].map((n) => formatBytes(n))).toEqual(['1 GiB', '1536 KiB', '100 bytes']);
  });

  it('measured time and sizes (the CLI) are rounded', () => {
    expect([3_240, 59_940, 65_000, 600_400].map((ms) => formatDuration(ms, 'elapsed'))).toEqual(['3.2s', '59.9s', '1m05s', '10m00s']);
    expect([512, 1536 * 1024, 3 * 1024 ** 3].map((n) => formatBytes(n, 'rounded'))).toEqual(['512 B', '1.5 MiB', '3.0 GiB']);
  });
});
