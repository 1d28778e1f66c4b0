/**
 * How client-supplied values appear in messages. A gRPC status message travels in an HTTP/2 trailer: one that echoes
 * a 150 KB request field exceeds the peer's header-list limit, the call never completes, and grpc-js then stalls
 * the whole channel. So every status message stays within STATUS_MESSAGE_MAX_BYTES, and values from the request are
 * cut short where they are quoted, saying how long they were.
 */
export const STATUS_MESSAGE_MAX_BYTES = 1024;

/** Characters of a client value kept in a message. */
const QUOTED_MAX_CHARS = 100;

/** `"value"`, or `"first 100 characters…" (153600 characters)` for a long one. */
export function quote(value: string, max = QUOTED_MAX_CHARS): string {
  const chars = [...value.slice(0, max * 2 + 2)];
  if (value.length <= max) return JSON.stringify(value);
  return `${JSON.stringify(`${chars.slice(0, max).join('')}…`)} (${value.length} characters)`;
}

/** The message cut to STATUS_MESSAGE_MAX_BYTES of UTF-8, with an ellipsis: the last guard before a status is sent. */
export function limitStatusMessage(message: string): string {
  if (Buffer.byteLength(message) <= STATUS_MESSAGE_MAX_BYTES) return message;
  const suffix = ` … (message cut from ${message.length} characters)`;
  let cut = message.slice(0, STATUS_MESSAGE_MAX_BYTES);
  while (Buffer.byteLength(cut) + Buffer.byteLength(suffix) > STATUS_MESSAGE_MAX_BYTES) cut = cut.slice(0, -16);
  // Never end on half a surrogate pair: the status is percent-encoded, and a lone surrogate cannot be.
  if (/[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1);
  return cut + suffix;
}
