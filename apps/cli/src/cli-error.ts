import { status, type ServiceError } from '@grpc/grpc-js';

/** Exit codes: the contract scripts rely on. */
export const EXIT = {
  ok: 0,
  /** The build ran and failed (done_failure). */
  buildFailed: 1,
  /** Bad usage, unreachable server, or the server refused the request. */
  error: 2,
  /** Ctrl-C: detached from a build that keeps running. */
  interrupted: 130,
} as const;

/** An error shown as one line, `imgbuilder: <CODE>: <message>`, ending the process with `exitCode`. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(
    readonly code: string,
    message: string,
    readonly exitCode: number = EXIT.error,
  ) {
    super(message);
  }
}

export const usageError = (message: string) => new CliError('USAGE', message);

export function isServiceError(err: unknown): err is ServiceError {
  return typeof (err as ServiceError)?.code === 'number' && 'details' in (err as object);
}

/** Turns any error into the one line printed on stderr (no stack traces) and its status name. */
export function describeError(err: unknown, server: string): { code: string; message: string } {
  if (err instanceof CliError) return { code: err.code, message: oneLine(err.message) };
  if (isServiceError(err)) {
    const code = status[err.code] ?? String(err.code);
    let message = err.details || err.message;
    // grpc-js reports connection failures as "No connection established. Last error: Error: connect ECONNREFUSED
    // 127.0.0.1:1. Resolution note: ..." (sometimes with a timestamp): keep the cause only.
    if (err.code === status.UNAVAILABLE && /No connection established|Failed to connect/.test(message)) {
      const cause = /Last error: (?:Error: )?(.*?)(?:\.? Resolution note:.*| \(\d{4}-\d\d-\d\dT[^)]*\).*)?\.?$/s.exec(message)?.[1];
      // OpenSSL's "80BC…:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:<file>:<line>:…"
      const ssl = cause && /:SSL routines:[^:]*:([^:]+):/.exec(cause)?.[1];
      message = `cannot connect to ${server}${ssl ? `: TLS handshake failed: ${ssl}` : cause ? `: ${cause}` : ''}`;
    }
    return { code, message: oneLine(message) };
  }
  return { code: 'ERROR', message: oneLine((err as Error)?.message ?? String(err)) };
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, '; ').trim();
}
