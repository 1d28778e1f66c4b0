/** Secrets shorter than this are not redacted: they would blank out ordinary words. */
const MIN_SECRET_LENGTH = 3;

/** Replaces every occurrence of the given secrets (longest first) with `***`. */
export function redactSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of [...secrets].filter((x) => x.length >= MIN_SECRET_LENGTH).sort((a, b) => b.length - a.length)) out = out.split(s).join('***');
  return out;
}

/**
 * `redactSecrets` over a stream of chunks: a secret the engine's output splits across two chunks is still replaced.
 * Unlike RefCensor it holds back only a chunk's end that could begin a secret, so live output waits only when it
 * must; `end()` releases what is held.
 */
export class SecretCensor {
  private carry = '';

  constructor(private secrets: readonly string[]) {}

  add(more: readonly string[]): void {
    this.secrets = [...this.secrets, ...more];
  }

  push(text: string): string {
    const all = redactSecrets(this.carry + text, this.secrets);
    const held = heldBack(all, this.secrets);
    this.carry = all.slice(all.length - held);
    return all.slice(0, all.length - held);
  }

  end(): string {
    const rest = this.carry;
    this.carry = '';
    return rest;
  }
}

/** Length of the longest end of `text` that is the start of a secret (and so may be completed by the next chunk). */
function heldBack(text: string, secrets: readonly string[]): number {
  let held = 0;
  for (const s of secrets) {
    if (s.length < MIN_SECRET_LENGTH) continue;
    for (let n = Math.min(s.length - 1, text.length); n > held; n--) {
      if (text.endsWith(s.slice(0, n))) {
        held = n;
        break;
      }
    }
  }
  return held;
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
