import type { AddressInfo, Server } from 'node:net';

/** Listens on a `host:port` setting (`[::1]:8081` for IPv6); resolves with the port bound (0 picks a free one). */
export function listenOn(server: Server, addr: string): Promise<number> {
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i).replace(/^\[(.*)\]$/, '$1') || '0.0.0.0';
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(addr.slice(i + 1)), host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
