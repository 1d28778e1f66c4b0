import { extract, pack } from 'tar-stream';

/** The build context tar with the file `name` given `content` instead (other entries pass through unchanged). */
export function replaceTarEntry(input: NodeJS.ReadableStream, name: string, content: string): NodeJS.ReadableStream {
  const out = pack();
  const ex = extract();
  const wanted = name.replace(/^\.\//, '');
  ex.on('entry', (header, stream, next) => {
    if (header.name.replace(/^\.\//, '') === wanted && header.type === 'file') {
      stream.resume();
      stream.on('end', () => out.entry({ ...header, size: Buffer.byteLength(content) }, content, next));
      return;
    }
    stream.pipe(out.entry(header, next));
  });
  ex.on('finish', () => out.finalize());
  ex.on('error', (err) => out.destroy(err));
  input.on('error', (err) => out.destroy(err));
  input.pipe(ex);
  return out as unknown as NodeJS.ReadableStream;
}
