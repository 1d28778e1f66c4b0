import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { createInterface } from 'node:readline';

const sh = (...args: string[]) => execFileSync(args[0], args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], timeout: 15_000 });

/**
 * A test host in a network namespace this test creates: a veth pair to it, a private address on each end, extra
 * addresses (a cloud-metadata address, say) inside, and an HTTP server there answering `token`. Traffic to it never
 * leaves this machine.
 */
export class NetnsHost {
  private constructor(
    private readonly ns: string,
    private readonly hostVeth: string,
    private readonly routes: string[],
    private readonly server: ChildProcess,
    /** The namespace's own private address (on the veth). */
    readonly address: string,
  ) {}

  /** Connections the test host has accepted so far. */
  hits = 0;

  static async start(opts: { extraAddresses: string[]; token: string; port?: number; ports?: number[] }): Promise<NetnsHost> {
    const id = randomBytes(3).toString('hex');
    const ns = `imgbt-${id}`;
    const hostVeth = `ibt${id}h`;
    const nsVeth = `ibt${id}n`;
    const net = `10.231.${randomInt(1, 254)}`;
    const port = opts.port ?? 80;
    sh('ip', 'netns', 'add', ns);
    const inNs = (...args: string[]) => sh('ip', 'netns', 'exec', ns, ...args);
    const routes: string[] = [];
    try {
      sh('ip', 'link', 'add', hostVeth, 'type', 'veth', 'peer', 'name', nsVeth);
      sh('ip', 'link', 'set', nsVeth, 'netns', ns);
      sh('ip', 'addr', 'add', `${net}.1/24`, 'dev', hostVeth);
      sh('ip', 'link', 'set', hostVeth, 'up');
      inNs('ip', 'addr', 'add', `${net}.2/24`, 'dev', nsVeth);
      for (const a of opts.extraAddresses) inNs('ip', 'addr', 'add', `${a}/32`, 'dev', nsVeth);
      inNs('ip', 'link', 'set', nsVeth, 'up');
      inNs('ip', 'link', 'set', 'lo', 'up');
      inNs('ip', 'route', 'add', 'default', 'via', `${net}.1`);
      for (const a of opts.extraAddresses) {
        sh('ip', 'route', 'add', `${a}/32`, 'via', `${net}.2`, 'dev', hostVeth);
        routes.push(`${a}/32`);
      }
      // A bare TCP server speaking just enough HTTP; it reports every connection, so a test can tell none came.
      const body = JSON.stringify(opts.token);
      const ports = opts.ports ?? [port];
      const code = `const net = require('net'); let up = 0; for (const p of ${JSON.stringify(ports)}) net.createServer((c) => { console.log('hit'); c.on('error', () => {}); c.end('HTTP/1.1 200 OK\\r\\nContent-Length: ' + Buffer.byteLength(${body}) + '\\r\\nConnection: close\\r\\n\\r\\n' + ${body}); }).listen(p, '0.0.0.0', () => { if (++up === ${ports.length}) console.log('listening'); });`;
      let host: NetnsHost | undefined;
      const server = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('netns test host did not start within 15 s')), 15_000);
        createInterface({ input: server.stdout! }).on('line', (l) => {
          if (l === 'hit' && host) host.hits++;
          if (l === 'listening') {
            clearTimeout(timer);
            resolve();
          }
        });
        server.on('exit', (c) => reject(new Error(`netns test host exited (${c})`)));
      });
      host = new NetnsHost(ns, hostVeth, routes, server, `${net}.2`);
      return host;
    } catch (err) {
      for (const r of routes) sh('ip', 'route', 'del', r);
      sh('ip', 'netns', 'del', ns);
      throw err;
    }
  }

  stop(): void {
    this.server.kill('SIGKILL');
    for (const r of this.routes) {
      try {
        sh('ip', 'route', 'del', r);
      } catch {
        // gone with the veth already
      }
    }
    try {
      sh('ip', 'link', 'del', this.hostVeth);
    } catch {
      // deleting the namespace removes the pair too
    }
    sh('ip', 'netns', 'del', this.ns);
  }
}
