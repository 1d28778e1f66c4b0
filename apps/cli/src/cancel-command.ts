import { EXIT } from './cli-error.js';
import { unary, type Connection } from './connection.js';

/** `imgbuilder cancel BUILD_ID`: returns once the build has ended; prints who it is cancelled by. */
export async function cancelCommand(buildId: string, conn: Connection): Promise<number> {
  // Without a token the server has no name for the caller; with one, an empty requested_by makes the caller the token
  // itself, which acts for all of its callers (caller.ts on the server).
  const res = await unary(conn.control.cancelBuild.bind(conn.control), { buildId, requestedBy: conn.authenticated ? '' : 'imgbuilder-cli' });
  process.stdout.write(`build ${res.buildId} ${res.alreadyCancelled ? 'was already cancelled' : 'cancelled'} by ${res.cancelledBy}\n`);
  return EXIT.ok;
}
