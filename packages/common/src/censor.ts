/** Secrets shorter than this are not redacted: they would blank out ordinary words. */
const MIN_SECRET_LENGTH = 3;

/**
 * The strings worth replacing (at least `minLength` long), each once, longest first so that a string containing
 * another is replaced whole. The stream censors keep this and reuse it for every chunk.
 */
function prepare(list: readonly string[], minLength: number): readonly string[] {
  // Boolean(x) first: a ref read back from a Redis hash may be missing at run time, whatever its type says.
  return [...new Set(list)].filter((x) => Boolean(x) && x.length >= minLength).sort((a, b) => b.length - a.length);
}

function replaceAll(text: string, prepared: readonly string[], by: string): string {
  let out = text;
  for (const s of prepared) out = out.split(s).join(by);
  return out;
}

/** Replaces every occurrence of the given secrets (longest first) with `***`. */
export function redactSecrets(text: string, secrets: readonly string[]): string {
  return replaceAll(text, prepare(secrets, MIN_SECRET_LENGTH), '***');
}

/**
 * `redactSecrets` over a stream of chunks: a secret the engine's output splits across two chunks is still replaced.
 * Unlike RefCensor it holds back only a chunk's end that could begin a secret, so live output waits only when it
 * must; `end()` releases what is held.
 */
export class SecretCensor {
  private carry = '';
  private secrets: readonly string[];

  constructor(secrets: readonly string[]) {
    this.secrets = prepare(secrets, MIN_SECRET_LENGTH);
  }

  add(more: readonly string[]): void {
    this.secrets = prepare([...this.secrets, ...more], MIN_SECRET_LENGTH);
  }

  push(text: string): string {
    const all = replaceAll(this.carry + text, this.secrets, '***');
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
  return replaceAll(text, prepare(refs, 1), '[redacted]');
}

/**
 * `censorRefs` over a stream of chunks: a ref split across two chunks is still replaced. It holds back the last
 * (longest ref − 1) characters of each chunk until the next one, or `end()`.
 */
export class RefCensor {
  private carry = '';
  private readonly refs: readonly string[];
  private readonly keep: number;

  constructor(refs: readonly string[]) {
    this.refs = prepare(refs, 1);
    this.keep = Math.max(0, (this.refs[0]?.length ?? 0) - 1);
  }

  push(text: string): string {
    const all = replaceAll(this.carry + text, this.refs, '[redacted]');
    const cut = Math.max(0, all.length - this.keep);
    this.carry = all.slice(cut);
    return all.slice(0, cut);
  }

  end(): string {
    const rest = replaceAll(this.carry, this.refs, '[redacted]');
    this.carry = '';
    return rest;
  }
}
