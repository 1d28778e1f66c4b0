import { Command, CommanderError, Option } from 'commander';
import { buildCommand } from './build-command.js';
import { cacheLsCommand, cachePruneCommand } from './cache-commands.js';
import { CliError, describeError, EXIT } from './cli-error.js';
import { connect, type Connection, type ConnectionOptions } from './connection.js';
import { logsCommand } from './logs-command.js';
import { hashToken, newToken, ROLES, type Role } from '@imgbuilder/common/access-tokens';
import { lsCommand, resolveBaseCommand, resolveWorkspaceCommand } from './query-commands.js';
import { cancelCommand } from './cancel-command.js';

// Node's own warnings (e.g. about TLS server names that are IP addresses) are noise on a CLI's stderr.
process.noDeprecation = true;

const program = new Command('imgbuilder')
  .description('Build container images with an imgbuilder service (Gitpod builder.ImageBuilder API).')
  .exitOverride()
  .configureOutput({ outputError: (text, write) => write(`imgbuilder: ${text.replace(/^error: /, '').trim().replace(/\s*\n\s*/g, ' ')}\n`) })
  .addOption(new Option('--server <host:port>', 'imgbuilder API').env('IMGBUILDER_SERVER').default('127.0.0.1:8080'))
  .addOption(new Option('--tls', 'use TLS with the system CAs (implied by the other --tls options)').env('IMGBUILDER_CLI_TLS'))
  .addOption(new Option('--tls-ca <file>', 'CA certificate (PEM) that signed the server certificate: TLS').env('IMGBUILDER_CLI_TLS_CA'))
  .addOption(new Option('--tls-cert <file>', 'client certificate (PEM) for mutual TLS; needs --tls-key').env('IMGBUILDER_CLI_TLS_CERT'))
  .addOption(new Option('--tls-key <file>', 'client private key (PEM) for mutual TLS').env('IMGBUILDER_CLI_TLS_KEY'))
  .addOption(new Option('--tls-server-name <name>', 'name to verify the server certificate against (default: the --server host)').env('IMGBUILDER_CLI_TLS_SERVER_NAME'))
  .addOption(new Option('--token <token>', 'access token, sent as "authorization: Bearer" (APIs with a tokens file)').env('IMGBUILDER_TOKEN'))
  .addHelpText(
    'after',
    `
Progress and build logs go to stderr; results (the workspace image ref) to stdout.
Exit codes: 0 success, 1 build failed, 2 usage/connection/server error, 130 detached with Ctrl-C.`,
  );

/** Runs a command with a connection built from the global options; the exit code becomes the process's. */
function withConnection<A extends unknown[]>(fn: (conn: Connection, ...args: A) => Promise<number>) {
  return async (...args: A) => {
    const cmd = args[args.length - 1] as Command;
    const conn = connect(cmd.optsWithGlobals<ConnectionOptions>());
    try {
      process.exitCode = await fn(conn, ...args);
    } finally {
      conn.close();
    }
  };
}

program
  .command('build')
  .description('build DIR (default .) like `docker build`, or a git repository with --git; prints the workspace image ref')
  .argument('[dir]', 'build context directory (its .dockerignore applies)')
  .option('-f, --file <path>', 'Dockerfile, relative to DIR (or to the repository root with --git)')
  .option('--git <url[#ref]>', 'build a git repository: #branch, #<40-hex commit>, or the remote HEAD')
  .option('--context <path>', 'with --git: context directory inside the repository (Dockerfile defaults to PATH/Dockerfile)')
  .option('--force', 'rebuild even if the image exists')
  .option('--json', 'one JSON event per line on stdout (upload, status, log, done)')
  .action(withConnection((conn, dir: string | undefined, opts: Parameters<typeof buildCommand>[1]) => buildCommand(dir, opts, conn)));

program
  .command('logs')
  .description("print a build's log (by build id or workspace ref): what exists now, or with -f follow it until the build ends")
  .argument('<build>', 'build id or workspace image ref')
  .option('-f, --follow', 'follow a running build until it ends')
  .action(withConnection((conn, target: string, opts: { follow?: boolean }) => logsCommand(target, opts, conn)));

program
  .command('ls')
  .description('list running builds')
  .option('--json', 'one JSON object per build')
  .action(withConnection((conn, opts: { json?: boolean }) => lsCommand(opts, conn)));

program
  .command('cancel')
  .description('cancel a queued or running build: everyone waiting for it gets a failure; nothing is pushed')
  .argument('<build-id>', 'build id (`imgbuilder ls` lists them)')
  .action(withConnection((conn, buildId: string) => cancelCommand(buildId, conn)));

const resolveCmd = program.command('resolve').description('resolve image references without building');
resolveCmd
  .command('base')
  .description('print the digest form of an image ref')
  .argument('<ref>', 'image reference, e.g. registry/repo:tag')
  .action(withConnection((conn, ref: string) => resolveBaseCommand(ref, conn)));
resolveCmd
  .command('workspace')
  .description('print the workspace ref, base ref and status a source builds to')
  .option('--git <url[#ref]>', 'git repository source')
  .option('-f, --file <path>', 'with --git: Dockerfile relative to the repository root')
  .option('--context <path>', 'with --git: context directory inside the repository')
  .option('--ref <image>', 'an existing image as the source')
  .option('--json', 'print one JSON object')
  .action(withConnection((conn, opts: Parameters<typeof resolveWorkspaceCommand>[0]) => resolveWorkspaceCommand(opts, conn)));

const cacheCmd = program.command('cache').description("the service's layer cache refs in the registry (token role admin)");
cacheCmd
  .command('ls')
  .description('list the cache refs: ref, size, last use (least recently used first)')
  .option('--json', 'one JSON object per ref')
  .action(withConnection((conn, opts: { json?: boolean }) => cacheLsCommand(opts, conn)));
cacheCmd
  .command('prune')
  .description('delete the cache refs no build used for longer than AGE (default: the service\'s IMGBUILDER_CACHE_RETENTION)')
  .option('--older-than <age>', 'e.g. 7d, 36h, or seconds')
  .option('--json', 'one JSON object per deleted ref')
  .action(withConnection((conn, opts: { olderThan?: string; json?: boolean }) => cachePruneCommand(opts, conn)));

program
  .command('token')
  .description('make an access token for IMGBUILDER_TOKENS_FILE (no server needed)')
  .argument('<name>', "the token's name (becomes triggered_by of its builds)")
  .addOption(new Option('--role <role>', 'what the token may do').choices([...ROLES]).default('builder'))
  .action((name: string, opts: { role: Role }) => {
    const token = newToken();
    // The token goes to stdout alone (for `$(...)`); the entry for the tokens file goes to stderr.
    process.stderr.write(`add to IMGBUILDER_TOKENS_FILE's "tokens" list:\n${JSON.stringify({ name, role: opts.role, sha256: hashToken(token) })}\n`);
    process.stdout.write(`${token}\n`);
  });

/** Any error, expected or not, ends as one line on stderr (and an `error` event with --json), never a stack trace. */
function fail(err: unknown): never {
  const server = program.opts<ConnectionOptions>().server;
  const { code, message } = describeError(err, server);
  if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify({ event: 'error', code, message })}\n`);
  process.stderr.write(`imgbuilder: ${code}: ${message}\n`);
  process.exit(err instanceof CliError ? err.exitCode : EXIT.error);
}

process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

async function main(): Promise<void> {
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version are not errors; commander already printed its one-line message otherwise.
      process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.error);
    }
    fail(err);
  }
  process.exit(process.exitCode ?? EXIT.ok);
}

await main();
