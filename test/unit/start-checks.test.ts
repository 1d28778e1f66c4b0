import { describe, expect, it } from 'vitest';
import { loadEnv } from '@imgbuilder/common/config';
import { ConfigError } from '@imgbuilder/common/errors';
import { isLoopback, openGrpcWarning, refuseDevKeyOnNetwork } from '../../apps/api/src/startup/start-checks.js';

const dev = (env: Record<string, string> = {}) => loadEnv({ NODE_ENV: 'development', IMGBUILDER_METRICS_ADDR: '', IMGBUILDER_HTTP_ADDR: '', IMGBUILDER_GRPC_ADDR: '127.0.0.1:8080', ...env });

describe('start-up checks of the API', () => {
  it('tells loopback listeners from reachable ones', () => {
    for (const a of ['127.0.0.1:8080', 'localhost:1', '[::1]:8080', '127.8.9.10:1']) expect(isLoopback(a), a).toBe(true);
    for (const a of ['0.0.0.0:8080', '[::]:8080', '10.0.0.1:8080', 'imgbuilder:8080', '128.0.0.1:1']) expect(isLoopback(a), a).toBe(false);
  });

  it('refuses the fixed development key on any non-loopback listener, saying what to set', () => {
    expect(() => refuseDevKeyOnNetwork(dev())).not.toThrow();
    expect(() => refuseDevKeyOnNetwork(dev({ IMGBUILDER_GRPC_ADDR: '0.0.0.0:8080' }))).toThrow(ConfigError);
    // The dashboard stays off without tokens: its address is no listener then.
    expect(() => refuseDevKeyOnNetwork(dev({ IMGBUILDER_HTTP_ADDR: '0.0.0.0:8081' }))).not.toThrow();
    expect(() => refuseDevKeyOnNetwork(dev({ IMGBUILDER_HTTP_ADDR: '0.0.0.0:8081', IMGBUILDER_DASHBOARD_TOKEN: 'x'.repeat(16) }))).toThrow(/IMGBUILDER_HTTP_ADDR=0\.0\.0\.0:8081 is reachable from other machines: set IMGBUILDER_SECRET_KEY .*IMGBUILDER_INSECURE_DEV_KEY=true/);
    // The metrics address defaults to 0.0.0.0:9090 when unset.
    expect(() => refuseDevKeyOnNetwork(loadEnv({ NODE_ENV: 'development', IMGBUILDER_HTTP_ADDR: '', IMGBUILDER_GRPC_ADDR: '127.0.0.1:8080' }))).toThrow(/IMGBUILDER_METRICS_ADDR=0\.0\.0\.0:9090/);
    expect(() => refuseDevKeyOnNetwork(dev({ IMGBUILDER_GRPC_ADDR: '0.0.0.0:8080', IMGBUILDER_INSECURE_DEV_KEY: 'true' }))).not.toThrow();
    expect(() => refuseDevKeyOnNetwork(dev({ IMGBUILDER_GRPC_ADDR: '0.0.0.0:8080', IMGBUILDER_SECRET_KEY: Buffer.alloc(32, 7).toString('base64') }))).not.toThrow();
  });

  it('warns when gRPC runs without tokens, naming the setting', () => {
    expect(openGrpcWarning(dev({ IMGBUILDER_GRPC_ADDR: '0.0.0.0:8080' }), false)).toBe(
      'gRPC on 0.0.0.0:8080 is open to anyone who reaches it: every rpc runs without an access token; set IMGBUILDER_TOKENS_FILE (`imgbuilder token <name>` makes entries) or require client certificates (IMGBUILDER_TLS_CA)',
    );
    expect(openGrpcWarning(dev(), true)).toBeUndefined();
    expect(openGrpcWarning(dev({ IMGBUILDER_TLS_CA: '/etc/imgbuilder/ca.pem' }), false)).toBeUndefined();
  });
});
