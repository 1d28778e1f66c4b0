/** Replaces every occurrence of the given secrets (longest first) with `***`. */
export function redactSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of [...secrets].filter((x) => x.length >= 3).sort((a, b) => b.length - a.length)) out = out.split(s).join('***');
  return out;
}

/** `censored=true` on Logs: image refs and our repository names are replaced, as Gitpod does. */
export function censorRefs(text: string, refs: readonly string[]): string {
  let out = text;
  for (const r of [...refs].filter(Boolean).sort((a, b) => b.length - a.length)) out = out.split(r).join('[redacted]');
  return out;
}

/**
 * `censorRefs` over a stream of chunks: a ref split across two chunks is still replaced. It holds back the last
 * (longest ref − 1) characters of each chunk until the next one, or `end()`.
 */
export class RefCensor {
  private carry = '';
  private readonly keep: number;

  constructor(private readonly refs: readonly string[]) {
    this.keep = Math.max(0, ...refs.filter(Boolean).map((r) => r.length - 1));
  }

  push(text: string): string {
    const all = censorRefs(this.carry + text, this.refs);
    const cut = Math.max(0, all.length - this.keep);
    this.carry = all.slice(cut);
    return all.slice(0, cut);
  }

  end(): string {
    const rest = censorRefs(this.carry, this.refs);
    this.carry = '';
    return rest;
  }
}
