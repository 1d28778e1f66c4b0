import { createServer, type Server } from 'node:net';
import { allowEgress, bridgeGateway } from './egress.js';

/**
 * A TCP gate a build step polls (waitStep): it answers "wait" until opened, then "go", so "while the build runs" is a
 * state the caller controls, not a sleep. Listens on the Docker bridge's gateway address, which build containers
 * reach through an exception to the egress policy, as an operator would add one.
 */
export class Gate {
  private opened = false;
  private constructor(
    private readonly server: Server,
    readonly host: string,
    readonly port: number,
    private readonly revoke: () => Promise<void>,
  ) {}

  static async start(): Promise<Gate> {
    const host = bridgeGateway();
    let gate!: Gate;
    const server = createServer((c) => c.end(gate.opened ? 'go\n' : 'wait\n'));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, resolve);
    });
    const port = (server.address() as { port: number }).port;
    gate = new Gate(server, host, port, await allowEgress(`${host}:${port}`));
    return gate;
  }

  /** A RUN command that waits for the gate (busybox sh), polling every 50 ms; it fails after ~2 minutes, so a test that crashed leaves no endless build. */
  waitStep(): string {
    return `n=0; until [ "$(nc -w 2 ${this.host} ${this.port} </dev/null)" = go ]; do n=$((n+1)); [ $n -lt 2400 ] || exit 9; usleep 50000; done; echo "gate: open after $n polls"`;
  }

  open(): void {
    this.opened = true;
  }

  async close(): Promise<void> {
    this.server.close();
    await this.revoke();
  }
}
