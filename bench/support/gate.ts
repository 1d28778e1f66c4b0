import { createServer, type Server } from 'node:net';
import { allowEgress, bridgeGateway } from '../../testkit/egress.js';

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
    private readonly revoke: () => Promise<void>,
  ) {}

  static async start(): Promise<Gate> {
    const host = bridgeGateway();
    let gate!: Gate;
    const server = createServer((c) => c.end(gate.open_ ? 'go\n' : 'wait\n'));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, host, resolve);
    });
    const port = (server.address() as { port: number }).port;
    // Build steps reach the engine's host only through an exception to the egress policy.
    gate = new Gate(server, host, port, await allowEgress(`${host}:${port}`));
    return gate;
  }

  open(): void {
    this.open_ = true;
  }

  async close(): Promise<void> {
    this.server.close();
    await this.revoke();
  }
}
