import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:net';

/**
 * A TCP gate a build step polls: it answers "wait" until opened, then "go". Listens on the Docker bridge's gateway
 * address, which build containers reach.
 */
export class Gate {
  private open_ = false;
  private constructor(
    private readonly server: Server,
    readonly host: string,
    readonly port: number,
  ) {}

  static async start(): Promise<Gate> {
    const host = bridgeGateway();
    let gate!: Gate;
    const server = createServer((c) => c.end(gate.open_ ? 'go\n' : 'wait\n'));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, resolve);
    });
    gate = new Gate(server, host, (server.address() as { port: number }).port);
    return gate;
  }

  open(): void {
    this.open_ = true;
  }

  close(): void {
    this.server.close();
  }
}

function bridgeGateway(): string {
  try {
    const out = execFileSync('docker', ['network', 'inspect', 'bridge', '--format', '{{(index .IPAM.Config 0).Gateway}}'], { encoding: 'utf8', timeout: 10_000 }).trim();
    if (/^\d+\.\d+\.\d+\.\d+$/.test(out)) return out;
  } catch {
    /* fall through */
  }
  return '172.17.0.1';
}
