const UNIT: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

/** Parses a size setting: plain bytes (`1048576`) or with a binary unit (`64MiB`, `1g`). */
export function parseByteSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  if (!m) return undefined;
  const factor = UNIT[m[2].toLowerCase()];
  return factor === undefined ? undefined : Math.floor(Number(m[1]) * factor);
}
