import type { Caller } from '@imgbuilder/common/access-tokens';
import { InvalidRequest } from '@imgbuilder/common/errors';
import { admittedCaller } from './auth.js';

/**
 * Who a call acts for: the one identity builds are attributed to (build records, jobs, the dashboard), cache refs
 * are keyed by, and "own builds" are compared by. With tokens it is the token's name plus the triggered_by the
 * client sends (`gitpod-server/<user id>`: Gitpod's server sends its users' ids through one token), so no client can
 * act as another token's callers; without tokens it is triggered_by alone.
 */
export interface BuildCaller {
  /** `<token>/<triggered_by>`, `<token>` when triggered_by is empty, or triggered_by without tokens. */
  id: string;
  /** Name of the access token the call came with; undefined without a tokens file. */
  token?: string;
  /** What the client sent as triggered_by. */
  triggeredBy: string;
}

/** The longest triggered_by taken: Gitpod sends user ids (36 characters); the rest is someone's mistake. */
const MAX_TRIGGERED_BY = 256;

/** The caller of a call admitted with `token` (undefined without tokens) that sent `triggeredBy`. */
export function buildCaller(token: Caller | undefined, triggeredBy: string | undefined): BuildCaller {
  const sent = triggeredBy ?? '';
  if (sent.length > MAX_TRIGGERED_BY || /[\p{Cc}]/u.test(sent)) {
    throw new InvalidRequest(`triggered_by must be at most ${MAX_TRIGGERED_BY} characters without control characters (send a user id)`);
  }
  if (!token) return { id: sent, triggeredBy: sent };
  return { id: sent ? `${token.name}/${sent}` : token.name, token: token.name, triggeredBy: sent };
}

/** The caller of a request the guard (auth.ts) let through, or of an open API's request. */
export function callerOf(request: object, triggeredBy: string | undefined): BuildCaller {
  return buildCaller(admittedCaller(request), triggeredBy);
}

/**
 * Whether `caller` may act on a build attributed to `attributedTo` (a record's triggeredBy): its own builds, and for
 * a token calling without triggered_by, every build of that token's callers.
 */
export function actsFor(caller: BuildCaller, attributedTo: string): boolean {
  if (caller.id === attributedTo) return true;
  return caller.token !== undefined && caller.triggeredBy === '' && attributedTo.startsWith(`${caller.token}/`);
}

const attributed = new WeakSet<object>();

/**
 * Gives a Build request its caller's id as triggered_by, once, so everything downstream (record, job, log lines, the
 * worker's cache refs) attributes the build to the caller, never to a value the client chose alone.
 */
export function attributeBuild(request: { triggeredBy: string }): void {
  if (attributed.has(request)) return;
  request.triggeredBy = callerOf(request, request.triggeredBy).id;
  attributed.add(request);
}
