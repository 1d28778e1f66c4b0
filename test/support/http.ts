import { get, request, type Agent, type IncomingHttpHeaders } from 'node:http';
import type { ServiceProcess } from '../../testkit/stack.js';

/** GET over plain HTTP, bounded; resolves with status and body. */
export function httpGet(url: string, timeoutMs = 10_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get(url, { timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} took over ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** `http://host:port` of a process's health/metrics server, read from its start-up log line. */
export async function metricsUrl(p: ServiceProcess): Promise<string> {
  const line = await p.waitForLine(/"metrics":"[^"]+:\d+"/);
  const addr = (JSON.parse(line) as { metrics: string }).metrics;
  return `http://${addr}`;
}

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * One HTTP request, bounded, from `localAddress` when given (another loopback address is another client to the
 * server). `path` is sent as it is, odd bytes included.
 */
export function httpRequest(
  base: string,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string; localAddress?: string; agent?: Agent; timeoutMs?: number } = {},
): Promise<HttpAnswer> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, method: opts.method ?? 'GET', headers: opts.headers, localAddress: opts.localAddress, agent: opts.agent, timeout: opts.timeoutMs ?? 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${opts.method ?? 'GET'} ${path} took over ${opts.timeoutMs ?? 10_000} ms`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}
