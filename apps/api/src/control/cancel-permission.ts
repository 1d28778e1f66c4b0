import type { Caller } from '@imgbuilder/common/access-tokens';
import { parseCaller } from '@imgbuilder/common/build-job';

/**
 * Who may cancel a build. Without a tokens file (`caller` undefined) anyone may, as anyone may build; `admin` may
 * cancel any build; a `builder` only the builds it triggered: those queued under its token's name (callerOf, which
 * the build's record keeps). The one place that decides; the caller identity of the access work plugs in here.
 */
export function mayCancel(caller: Caller | undefined, buildCaller: string | undefined): boolean {
  if (!caller) return true;
  if (caller.role === 'admin') return true;
  if (caller.role !== 'builder' || !buildCaller) return false;
  return parseCaller(buildCaller).tokenName === caller.name;
}
