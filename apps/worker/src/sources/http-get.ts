import * as http from 'node:http';
import * as https from 'node:https';
import { checkHttpUrl } from '@imgbuilder/common/source-policy';
import { fetchPolicy, fetchTargetOf, pinnedLookup } from '@imgbuilder/common/fetch-policy';
import { SourceRefused } from '@imgbuilder/common/errors';
import { asSource, SourceError } from '../errors.js';

/**
 * GET with the URL and fetch policies applied on every redirect hop: each hop's host is resolved and checked, and
 * the connection goes to the address checked (a redirect or a changed DNS answer reaches nothing refused). A
 * refusal is a SourceError naming the URL without credentials or query (nor path, with `showPath: false`).
 */
export async function httpGet(url: string, what: string, signal: AbortSignal, timeoutMs: number, hops = 5, shown: { showPath?: boolean } = {}): Promise<http.IncomingMessage> {
  let current = url;
  const deadline = AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]);
  for (let hop = 0; ; hop++) {
    const hopWhat = hop ? `${what} (redirect)` : what;
    asSource(() => checkHttpUrl(current, hopWhat, shown));
    const target = await fetchPolicy()
      .resolve(fetchTargetOf(current, hopWhat, shown))
      .catch((err: NodeJS.ErrnoException) => {
        if (err instanceof SourceRefused) throw new SourceError(err.message);
        throw new Error(err.code ?? err.message);
      });
    const res = await new Promise<http.IncomingMessage>((resolvePromise, reject) => {
      const mod = current.startsWith('https:') ? https : http;
      const req = mod.get(current, { lookup: pinnedLookup(target.address, target.family) as never, signal: deadline, headers: { 'user-agent': 'imgbuilder' } }, resolvePromise);
      req.on('error', (err: NodeJS.ErrnoException) => {
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
