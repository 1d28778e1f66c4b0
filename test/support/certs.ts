import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestPki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate signed by a CA the server does not trust. */
  strangerCert: string;
  strangerKey: string;
  read(path: string): Buffer;
}

/** A throw-away CA with a server certificate for 127.0.0.1 and client certificates, made with the openssl CLI. */
export function makePki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'imgbuilder-pki-'));
  const p = (name: string) => join(dir, name);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string) => ssl('req', '-x509', ...ecKey, '-keyout', p(`${name}.key`), '-out', p(`${name}.crt`), '-days', '2', '-subj', `/CN=${name}`);
  const issue = (name: string, cn: string, ext: string, caName: string) => {
    writeFileSync(p(`${name}.ext`), ext);
    ssl('req', ...ecKey, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${cn}`);
    ssl('x509', '-req', '-in', p(`${name}.csr`), '-CA', p(`${caName}.crt`), '-CAkey', p(`${caName}.key`), '-CAcreateserial', '-out', p(`${name}.crt`), '-days', '2', '-extfile', p(`${name}.ext`));
  };
  ca('ca');
  ca('stranger-ca');
  issue('server', '127.0.0.1', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n', 'ca');
  issue('client', 'imgbuilder-test-client', 'extendedKeyUsage=clientAuth\n', 'ca');
  issue('stranger', 'stranger', 'extendedKeyUsage=clientAuth\n', 'stranger-ca');
  return {
    dir,
    caCert: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    strangerCert: p('stranger.crt'),
    strangerKey: p('stranger.key'),
    read: (path) => readFileSync(path),
  };
}
