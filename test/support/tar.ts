import { gzipSync } from 'node:zlib';
import * as tarStream from 'tar-stream';

/** A tar (gzipped with `gzip`) of files (name → content) or of entries, directories among them. */
export async function tarOf(files: Record<string, string> | { name: string; type?: 'directory'; content?: string }[], { gzip = false } = {}): Promise<Buffer> {
  const entries = Array.isArray(files) ? files : Object.entries(files).map(([name, content]) => ({ name, content, type: undefined }));
  const pack = tarStream.pack();
  for (const e of entries) {
    if (e.type === 'directory') pack.entry({ name: e.name, type: 'directory', mode: 0o755 });
    else pack.entry({ name: e.name, mode: 0o644 }, e.content ?? '');
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack as unknown as AsyncIterable<Buffer>) chunks.push(c);
  const tar = Buffer.concat(chunks);
  return gzip ? gzipSync(tar) : tar;
}
