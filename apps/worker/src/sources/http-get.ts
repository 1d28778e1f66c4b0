import * as http from 'node:http';
import * as https from 'node:https';
import { checkHttpUrl, guardedLookup } from '@imgbuilder/common/source-policy';
import { asSource, SourceError } from './source-error.js';

/**
 * GET with the URL policy applied on every redirect hop, and a lookup that refuses link-local answers at connect
 * time (a redirect or a changed DNS answer must not reach the metadata endpoint).
 */
export async function httpGet(url: string, what: string, signal: AbortSignal, timeoutMs: number, hops = 5): Promise<http.IncomingMessage> {
  let current = url;
  const deadline = AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]);
  for (let hop = 0; ; hop++) {
    asSource(() => checkHttpUrl(current, hop ? `${what} (redirect)` : what));
    const res = await new Promise<http.IncomingMessage>((resolvePromise, reject) => {
      const mod = current.startsWith('https:') ? https : http;
      const req = mod.get(current, { lookup: guardedLookup as never, signal: deadline, headers: { 'user-agent': 'imgbuilder' } }, resolvePromise);
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'EREFUSEDADDRESS') return reject(new SourceError(`${what}: ${err.message}`));
        reject(new Error(deadline.aborted && !signal.aborted ? 'timed out' : (err.code ?? err.message)));
      });
    });
    const status = res.statusCode ?? 0;
    if ([301, 302, 303, 307, 308].includes(status) && res.headers.location) {
      res.resume();
      if (hop >= hops) throw new SourceError(`${what}: more than ${hops} redirects`);
      current = new URL(res.headers.location, current).toString();
      continue;
    }
    return res;
  }
}

/** The answer's body, refused past `max` bytes. */
export async function readBody(res: http.IncomingMessage, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > max) throw new Error('answer too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}
