import type { Caller } from '@imgbuilder/common/access-tokens';
import { actsFor, type BuildCaller } from '../grpc/caller.js';

/**
 * Who may cancel a build attributed to `attributedTo` (its record's triggered_by). Without a tokens file (`token`
 * undefined) anyone may, as anyone may build; `admin` may cancel any build; a `builder` only those it acts for
 * (caller.ts's actsFor: its own, and for a token calling without triggered_by every build of that token's callers).
 */
export function mayCancel(token: Caller | undefined, caller: BuildCaller, attributedTo: string): boolean {
  if (!token) return true;
  if (token.role === 'admin') return true;
  return token.role === 'builder' && actsFor(caller, attributedTo);
}
