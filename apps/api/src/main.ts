import { ConfigError } from '@imgbuilder/common/errors';
import { createLogger } from '@imgbuilder/common/logger';
import { startTracing } from '@imgbuilder/common/tracing';
import { configure } from './startup/config.js';
import { connect } from './startup/connect.js';
import { makeServices } from './startup/services.js';
import { listen } from './startup/listen.js';
import { stopOnSignals } from './startup/shutdown.js';

const log = createLogger('imgbuilder-api');

async function main(): Promise<void> {
  const cfg = configure(log);
  await startTracing(cfg.env, 'imgbuilder-api');
  const backends = connect(cfg, log);
  const services = makeServices(cfg, backends, log);
  const listeners = await listen(cfg, backends, services, log);
  stopOnSignals(listeners, backends, log);
}

main().catch((err) => {
  if (err instanceof ConfigError) log.fatal(err.message);
  else log.fatal({ err }, 'API failed to start');
  process.exit(1);
});
