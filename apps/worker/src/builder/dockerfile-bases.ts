/**
 * The images a Dockerfile's stages start FROM, as far as they can be known before the build: build args get their
 * defaults (the API passes none), stage names and `scratch` are not images, and a name still holding a variable
 * is left out.
 */
export function baseImagesOf(dockerfile: string): string[] {
  const lines = dockerfile.replace(/\\\r?\n/g, ' ').split(/\r?\n/);
  const args = new Map<string, string>();
  const stages = new Set<string>();
  const images: string[] = [];
  let seenFrom = false;
  for (const raw of lines) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [instr, ...rest] = line.split(/\s+/);
    const upper = instr.toUpperCase();
    if (upper === 'ARG' && !seenFrom) {
      for (const a of rest) {
        const [k, ...v] = a.split('=');
        args.set(k, v.join('=').replace(/^"(.*)"$/, '$1'));
      }
    } else if (upper === 'FROM') {
      seenFrom = true;
      const words = rest.filter((w) => !w.startsWith('--'));
      const image = (words[0] ?? '').replace(/\$\{(\w+)\}|\$(\w+)/g, (m, a: string, b: string) => args.get(a ?? b) ?? m);
      if (words[1]?.toUpperCase() === 'AS' && words[2]) stages.add(words[2].toLowerCase());
      if (!image || image.includes('$') || image === 'scratch' || stages.has(image.toLowerCase())) continue;
      if (!images.includes(image)) images.push(image);
    }
  }
  return images;
}

/**
 * The Dockerfile with the image of each FROM line that names a key of `names` (as baseImagesOf reads it) replaced by
 * its value. Only single-line FROM instructions are rewritten; anything else keeps its original name.
 */
export function withBases(dockerfile: string, names: ReadonlyMap<string, string>): string {
  const args = new Map<string, string>();
  let seenFrom = false;
  return dockerfile
    .split('\n')
    .map((line) => {
      const arg = /^\s*ARG\s+(.*)$/i.exec(line);
      if (arg && !seenFrom) {
        for (const a of arg[1].trim().split(/\s+/)) {
          const [k, ...v] = a.split('=');
          args.set(k, v.join('=').replace(/^"(.*)"$/, '$1'));
        }
      }
      const from = /^(\s*FROM\s+(?:--\S+\s+)*)(\S+)(.*)$/i.exec(line);
      if (!from) return line;
      seenFrom = true;
      const image = from[2].replace(/\$\{(\w+)\}|\$(\w+)/g, (m, a: string, b: string) => args.get(a ?? b) ?? m);
      const to = names.get(image);
      return to ? `${from[1]}${to}${from[3]}` : line;
    })
    .join('\n');
}
