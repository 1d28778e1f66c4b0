/** The gRPC status names imgbuilder answers with; the API maps them to codes in one place. */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'UNAUTHENTICATED'
  | 'PERMISSION_DENIED'
  | 'FAILED_PRECONDITION'
  | 'RESOURCE_EXHAUSTED'
  | 'UNAVAILABLE'
  | 'DEADLINE_EXCEEDED'
  | 'INTERNAL';

/** An error whose message is safe to show the caller (it never carries credentials). */
export class ImgbuilderError extends Error {
  override name = 'ImgbuilderError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export const invalidArgument = (msg: string) => new ImgbuilderError('INVALID_ARGUMENT', msg);
export const notFound = (msg: string) => new ImgbuilderError('NOT_FOUND', msg);
export const unavailable = (msg: string, cause?: unknown) => new ImgbuilderError('UNAVAILABLE', msg, { cause });

/** True for errors that mean "the other side could not be reached" rather than "it said no". */
export function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: string; cause?: { code?: string } } | undefined)?.code ?? (err as { cause?: { code?: string } })?.cause?.code;
  return (
    typeof code === 'string' &&
    ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET', 'ENOENT', 'ECONNABORTED'].includes(code)
  );
}
