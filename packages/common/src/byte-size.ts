const UNIT: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

/** Parses a size setting: plain bytes (`1048576`) or with a binary unit (`64MiB`, `1g`). */
export function parseByteSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  if (!m) return undefined;
  const factor = UNIT[m[2].toLowerCase()];
  return factor === undefined ? undefined : Math.floor(Number(m[1]) * factor);
}

/**
 * A size for people. `exact` (the default) writes settings and limits in the largest unit that divides them:
 * `1 GiB`, `1536 KiB`, `100 bytes`. `rounded` writes measured sizes to one decimal: `512 B`, `1.5 MiB` (the CLI).
 */
export function formatBytes(n: number, style: 'exact' | 'rounded' = 'exact'): string {
  if (style === 'rounded') {
    if (n < 1024) return `${n} B`;
    const units = ['KiB', 'MiB', 'GiB', 'TiB'];
    let v = n / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return `${v.toFixed(1)} ${units[i]}`;
  }
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1 && Number.isInteger(v / 1024)) {
    v /= 1024;
    i++;
  }
  return `${v} ${units[i]}`;
}
