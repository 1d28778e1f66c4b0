import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { Agent, request, type ClientRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import puppeteer, { type Browser } from 'puppeteer-core';
import { hashToken, newToken } from '@imgbuilder/common/access-tokens';
import { loadEnv } from '@imgbuilder/common/config';
import { ObjectStore, objectStoreOptions } from '@imgbuilder/common/object-store';
import { dropNamespace } from '../../testkit/redis-server.js';
import { httpRequest } from '../support/http.js';
import { freePort, startStack, type Stack } from '../../testkit/stack.js';

declare const document: { cookie: string };

const CHROMIUM = '/usr/bin/chromium';
const TOKENS = { viewer: newToken(), admin: newToken() };
const STREAMS_PER_CALLER = 3;
const SESSION_COOKIE = '__Host-imgbuilder_session';

let stack: Stack;
let browser: Browser;
let base: string;
/** Seeded builds: finished with a 16 MiB log, running (its log stream stays open), failed without a log object. */
const ids = { big: randomUUID(), running: randomUUID(), failed: randomUUID() };

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) execFileSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', 'chromium', 'fonts-dejavu-core'], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeout: 600_000 });
  const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-dash-access-'));
  const file = join(dir, 'tokens.json');
  writeFileSync(file, JSON.stringify({ tokens: [{ name: 'ops-viewer', role: 'viewer', sha256: hashToken(TOKENS.viewer) }, { name: 'ops-admin', role: 'admin', sha256: hashToken(TOKENS.admin) }] }));
  const httpPort = await freePort();
  // No worker: every build these tests look at is seeded.
  [stack, browser] = await Promise.all([
    startStack({
      apis: 1,
      workers: 0,
      env: { IMGBUILDER_TOKENS_FILE: file, IMGBUILDER_HTTP_ADDR: `127.0.0.1:${httpPort}`, IMGBUILDER_DASHBOARD_STREAMS_PER_CALLER: String(STREAMS_PER_CALLER), IMGBUILDER_SLOW_CLIENT_TIMEOUT: '2s' },
    }),
    puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--headless=new'] }),
  ]);
  base = `http://127.0.0.1:${httpPort}`;
  await seed();
});

afterAll(async () => {
  await browser?.close();
  await stack?.stop();
  if (stack) await dropNamespace(stack.env.REDIS_URL, stack.env.IMGBUILDER_REDIS_NAMESPACE);
});

async function seed(): Promise<void> {
  const redis = new Redis(stack.env.REDIS_URL, { maxRetriesPerRequest: 2 });
  const ns = `{${stack.env.IMGBUILDER_REDIS_NAMESPACE}}`;
  const now = Math.floor(Date.now() / 1000);
  const record = (id: string, state: string) => ({ id, ref: `127.0.0.1:5000/seed/workspace:${id}`, baseRef: `127.0.0.1:5000/seed/base:${id}`, state, startedAt: String(now - 60), finishedAt: state === 'running' ? '' : String(now), message: '', logKey: `logs/${id}.log`, triggeredBy: 'seed', logPending: '0' });
  const pipe = redis.pipeline();
  for (const [id, state] of [[ids.big, 'done_success'], [ids.running, 'running'], [ids.failed, 'done_failure']] as const) {
    pipe.hset(`${ns}:build:${id}`, record(id, state));
    pipe.pexpire(`${ns}:build:${id}`, 3_600_000);
    pipe.zadd(`${ns}:builds:recent`, String(now), id);
  }
  await pipe.exec();
  redis.disconnect();
  await new ObjectStore(objectStoreOptions(loadEnv({ ...stack.env }))).put(`logs/${ids.big}.log`, randomBytes(12 * 1024 * 1024).toString('base64'));
}

const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
const formHeaders = { 'content-type': 'application/x-www-form-urlencoded' };
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** A request whose answer is not read: resolves at the response head, for streams held open or left unread. */
function openStream(path: string, headers: Record<string, string>): Promise<{ res: IncomingMessage; req: ClientRequest }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, headers, timeout: 10_000 }, (res) => resolve({ res, req }));
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer in 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

describe('dashboard sessions', () => {
  it('in a browser: login sets a signed __Host- session (not the token), lands on next, logout ends it', async () => {
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.goto(`${base}/builds/${ids.failed}?from=test`);
    expect(new URL(page.url()).pathname).toBe('/login');
    await page.type('input[name=token]', TOKENS.viewer);
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    expect(page.url()).toBe(`${base}/builds/${ids.failed}?from=test`);
    const cookies = await context.cookies();
    expect(cookies.map((c) => c.name)).toEqual([SESSION_COOKIE]);
    expect(cookies[0]).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict', path: '/' });
    expect(cookies[0].value).not.toContain(TOKENS.viewer);
    expect(cookies[0].value).not.toContain(hashToken(TOKENS.viewer));
    expect(await page.evaluate(() => document.cookie)).toBe('');
    const me = await page.evaluate(() => fetch('/api/whoami').then((r) => r.json() as Promise<unknown>));
    expect(me).toEqual({ name: 'ops-viewer', role: 'viewer' });

    // The session works where the browser sends it, and nowhere once altered.
    const session = cookies[0].value;
    expect((await httpRequest(base, '/api/whoami', { headers: { cookie: `${SESSION_COOKIE}=${session}` } })).status).toBe(200);
    const [body, mac] = session.split('.');
    const forged = Buffer.from(JSON.stringify({ n: 'ops-admin', r: 'admin', e: Date.now() + 3_600_000 })).toString('base64url');
    for (const bad of [`${forged}.${mac}`, `${body}x.${mac}`, TOKENS.viewer]) {
      expect((await httpRequest(base, '/api/whoami', { headers: { cookie: `${SESSION_COOKIE}=${bad}` } })).status, bad).toBe(401);
    }
    // A cookie holding the token itself (what the login used to set) opens nothing.
    expect((await httpRequest(base, '/api/whoami', { headers: { cookie: `imgbuilder_token=${TOKENS.viewer}` } })).status).toBe(401);

    // Another site cannot log this browser out; the page's own button does.
    const crossSite = await httpRequest(base, '/logout', { method: 'POST', headers: { origin: 'http://attacker.invalid', cookie: `${SESSION_COOKIE}=${session}` } });
    expect(crossSite.status).toBe(403);
    expect(crossSite.headers['set-cookie']).toBeUndefined();
    await page.goto(`${base}/`);
    await Promise.all([page.waitForNavigation(), page.click('header form button')]);
    expect(await context.cookies()).toEqual([]);
    await page.goto(`${base}/`);
    expect(new URL(page.url()).pathname).toBe('/login');
    await context.close();
  });

  it('after login, next is resolved against the dashboard origin: anything leaving it goes to /', async () => {
    for (const [next, location] of [
      ['/\t/evil.example/', '/'],
      ['//evil.example/', '/'],
      ['https://evil.example/', '/'],
      ['/builds/x?status=failure', '/builds/x?status=failure'],
    ]) {
      const res = await httpRequest(base, '/login', { method: 'POST', headers: formHeaders, body: form({ token: TOKENS.admin, next }) });
      expect(res.status).toBe(303);
      expect(res.headers.location, JSON.stringify(next)).toBe(location);
    }
  });

  it('failed logins are limited per client address, and refusals are logged without the token', async () => {
    const guesses = Array.from({ length: 10 }, () => newToken());
    for (const token of guesses) {
      expect((await httpRequest(base, '/login', { method: 'POST', headers: formHeaders, body: form({ token }), localAddress: '127.0.0.2' })).status).toBe(401);
    }
    const limited = await httpRequest(base, '/login', { method: 'POST', headers: formHeaders, body: form({ token: TOKENS.viewer }), localAddress: '127.0.0.2' });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(limited.body).toMatch(/too many failed logins/);
    // Another address is another client.
    expect((await httpRequest(base, '/login', { method: 'POST', headers: formHeaders, body: form({ token: TOKENS.viewer }), localAddress: '127.0.0.3' })).status).toBe(303);
    // The API's log arrives through a pipe: wait (bounded) for the refusal's line, then look at everything before it.
    await stack.apis[0].waitForLine(/dashboard login refused: too many failed logins/);
    const apiLog = stack.apis[0].lines.join('\n');
    for (const t of [...guesses, TOKENS.viewer]) expect(apiLog).not.toContain(t);
  });
});

describe('dashboard input', () => {
  it('bad numbers and malformed paths are 400s, never a 500 or a range past the log', async () => {
    const h = { headers: bearer(TOKENS.viewer) };
    const cases: [string, RegExp][] = [
      [`/api/builds/${ids.big}/log?from=1e21`, /from must be an integer/],
      [`/api/builds/${ids.big}/log/range?start=1e21&end=1e22`, /start must be an integer/],
      [`/api/builds/${ids.big}/log/range?start=10&end=5`, /end must be an integer from 10/],
      ['/api/builds?limit=-5', /limit must be an integer from 1 to 1000/],
      ['/api/builds/%ff%fe', /malformed percent-encoding/],
      ['/api/builds/%E0%A4%A/log', /malformed percent-encoding/],
      [`/api/builds?ref=${'x'.repeat(300)}`, /ref must be at most 256 characters/],
    ];
    for (const [path, message] of cases) {
      const res = await httpRequest(base, path, h);
      expect(res.status, path).toBe(400);
      expect(res.body, path).toMatch(message);
    }
  });

  it(`log streams are capped at ${STREAMS_PER_CALLER} per caller, and a client that reads nothing is dropped`, async () => {
    const open = await Promise.all(Array.from({ length: STREAMS_PER_CALLER }, () => openStream(`/api/builds/${ids.running}/log`, bearer(TOKENS.viewer))));
    expect(open.map((s) => s.res.statusCode)).toEqual(Array(STREAMS_PER_CALLER).fill(200));
    const over = await httpRequest(base, `/api/builds/${ids.running}/log`, { headers: bearer(TOKENS.viewer) });
    expect(over.status).toBe(429);
    expect(over.body).toMatch(/IMGBUILDER_DASHBOARD_STREAMS_PER_CALLER/);
    // Other callers are not affected, and a closed stream frees its place.
    const other = await openStream(`/api/builds/${ids.running}/log`, bearer(TOKENS.admin));
    expect(other.res.statusCode).toBe(200);
    other.req.destroy();
    open[0].req.destroy();
    const again = await waitFor(async () => {
      const s = await openStream(`/api/builds/${ids.running}/log`, bearer(TOKENS.viewer));
      if (s.res.statusCode === 200) return s;
      s.req.destroy();
      return undefined;
    });
    for (const s of [...open, again]) s.req.destroy();

    // 12 MiB of log to a client that reads none of it: dropped after IMGBUILDER_SLOW_CLIENT_TIMEOUT (2s here).
    const slow = await openStream(`/api/builds/${ids.big}/log`, bearer(TOKENS.admin));
    expect(slow.res.statusCode).toBe(200);
    slow.res.pause();
    const closed = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 30_000);
      slow.res.socket.once('close', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    expect(closed).toBe(true);
    await stack.apis[0].waitForLine(/slow dashboard log client dropped/);
  });
});

describe('dashboard fuzz', () => {
  it('thousands of odd requests to every route: no 5xx', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 16, localAddress: '127.0.0.4' });
    const rnd = (n: number) => Math.floor(Math.random() * n);
    const pick = <T>(xs: readonly T[]): T => xs[rnd(xs.length)];
    const odd = () =>
      pick([
        '',
        '%',
        '%ff%fe',
        '%E0%A4%A',
        '%00',
        '..%2f..%2fetc%2fpasswd',
        '1e21',
        '-1',
        '9'.repeat(30),
        'NaN',
        '0x10',
        '%C3%A9',
        '\u00e9',
        randomBytes(rnd(24)).toString('hex'),
        encodeURIComponent(randomBytes(rnd(24)).toString('latin1')),
        'x'.repeat(rnd(2000)),
        ids.big,
        ids.failed,
        randomUUID(),
      ]);
    const paths = () =>
      pick([
        () => `/`,
        () => `/login?next=${odd()}`,
        () => `/logout`,
        () => `/static/${odd()}`,
        () => `/builds/${odd()}`,
        () => `/api/whoami`,
        () => `/api/builds?limit=${odd()}&status=${odd()}&ref=${odd()}&id=${odd()}`,
        () => `/api/charts`,
        () => `/api/builds/${odd()}`,
        () => `/api/builds/${pick([ids.failed, odd()])}/log?from=${odd()}`,
        () => `/api/builds/${pick([ids.big, ids.failed, odd()])}/log/range?start=${odd()}&end=${odd()}`,
        () => `/${odd()}/${odd()}`,
        () => `//${odd()}`,
      ])();
    const methods = ['GET', 'GET', 'GET', 'GET', 'GET', 'GET', 'POST', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS'] as const;
    const auths: Record<string, string>[] = [{}, bearer(TOKENS.viewer), bearer(TOKENS.admin), { cookie: `${SESSION_COOKIE}=${odd()}` }, { authorization: odd() }];
    const TOTAL = 3000;
    const statuses = new Map<number, number>();
    const fiveHundreds: string[] = [];
    let errors = 0;
    let sent = 0;
    const worker = async () => {
      while (sent < TOTAL) {
        sent++;
        const method = pick(methods);
        const path = paths();
        const body = method === 'POST' ? pick([form({ token: odd(), next: odd() }), odd(), 'token=' + 'a'.repeat(5000)]) : undefined;
        try {
          const res = await httpRequest(base, path, { method, body, headers: { ...pick(auths), ...(body ? formHeaders : {}) }, agent, timeoutMs: 15_000 });
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          if (res.status >= 500) fiveHundreds.push(`${method} ${path} -> ${res.status} ${res.body.slice(0, 200)}`);
        } catch {
          // A connection the server closed (an oversized form, a refused target) is no 5xx; counted for the note.
          errors++;
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    agent.destroy();
    console.log(`dashboard fuzz: ${TOTAL} requests, statuses ${JSON.stringify(Object.fromEntries(statuses))}, ${errors} closed connections`);
    expect(fiveHundreds).toEqual([]);
    expect([...statuses.values()].reduce((a, b) => a + b, 0) + errors).toBe(TOTAL);
  }, 120_000);
});

/** Retries `fn` until it returns something, for at most 10 s. */
async function waitFor<T>(fn: () => Promise<T | undefined>): Promise<T> {
  for (const deadline = Date.now() + 10_000; ; ) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('condition not met within 10 s');
    await new Promise((r) => setTimeout(r, 20));
  }
}
