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
