import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SeenRegistryRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
}

/**
 * A loopback HTTP server answering registry requests from a handler the test writes: for what the real registry
 * cannot be made to do (redirect manifests to another origin, name a token realm of the test's choosing).
 * It records every request.
 */
export class FakeRegistry {
  readonly requests: SeenRegistryRequest[] = [];

  private constructor(
    private readonly server: Server,
    readonly port: number,
    private readonly address: string,
  ) {}

  /** `address`: a loopback address to listen on (tests of the fetch policy keep 127.0.0.1 for their canary). */
  static async start(handler: (req: SeenRegistryRequest, reply: (status: number, headers?: Record<string, string>, body?: string) => void) => void, address = '127.0.0.1'): Promise<FakeRegistry> {
    let self: FakeRegistry | undefined;
    const server = createServer((req, res) => {
      const seen = { method: req.method ?? '', path: req.url ?? '/', headers: req.headers };
      self!.requests.push(seen);
      req.resume();
      handler(seen, (status, headers = {}, body = '') => void res.writeHead(status, headers).end(body));
    });
    await new Promise<void>((resolve) => server.listen(0, address, resolve));
    self = new FakeRegistry(server, (server.address() as AddressInfo).port, address);
    return self;
  }

  get host(): string {
    return `${this.address}:${this.port}`;
  }

  stop(): void {
    this.server.closeAllConnections();
    this.server.close();
  }
}
