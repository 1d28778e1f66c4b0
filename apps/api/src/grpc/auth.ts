import type { Metadata, status, ServiceDefinition, ServiceError, UntypedServiceImplementation } from '@grpc/grpc-js';
import { bearerToken, roleAtLeast, type AccessTokens, type Caller, type Role } from '@imgbuilder/common/access-tokens';
import { AccessTokenRejected, ImgbuilderError, RoleInsufficient } from '@imgbuilder/common/errors';
import { domainServiceError } from './grpc-status.js';

/** The role each rpc needs (IMGBUILDER_TOKENS_FILE). Handler names as in the generated service definitions. */
export const REQUIRED_ROLE: Record<string, Role> = {
  listBuilds: 'viewer',
  logs: 'viewer',
  build: 'builder',
  resolveBaseImage: 'builder',
  resolveWorkspaceImage: 'builder',
  upload: 'builder',
  // Further narrowed per build (control/cancel-permission.ts): a builder cancels only the builds it triggered.
  cancelBuild: 'builder',
  listCacheRefs: 'admin',
  pruneCache: 'admin',
};

/** Outcome of checking one request's credentials. */
export type AuthResult = { ok: true; caller: Caller } | { ok: false; error: AccessTokenRejected | RoleInsufficient };

/** Checks a presented token against the tokens file and the role `what` needs. The token itself is never echoed. */
export function authorize(tokens: AccessTokens, token: string | undefined, need: Role, what: string): AuthResult {
  if (!token) return { ok: false, error: new AccessTokenRejected('this API requires an access token: send "authorization: Bearer <token>" (CLI: --token or IMGBUILDER_TOKEN)') };
  const caller = tokens.identify(token);
  if (!caller) return { ok: false, error: new AccessTokenRejected('the access token is not valid (not in the service\'s tokens file)') };
  if (!roleAtLeast(caller.role, need)) return { ok: false, error: new RoleInsufficient(caller.name, need, `token "${caller.name}" has role ${caller.role}; ${what} needs role ${need} or above`) };
  return { ok: true, caller };
}

/** The caller each admitted request came from, by request object (read through caller.ts). */
const admitted = new WeakMap<object, Caller>();

/** The caller whose token let `request` through; undefined without a tokens file. */
export function admittedCaller(request: object): Caller | undefined {
  return admitted.get(request);
}

export interface GuardHooks {
  /**
   * Checks an admitted call's request against what its caller may do beyond its role (installation credentials);
   * a domain error it throws answers the call. `method` is the handler name.
   */
  admit?: (method: string, request: unknown, caller: Caller) => void;
  /** A call refused (for metrics); `rpc` as in the service's path, e.g. "Build". */
  refused?: (rpc: string, code: status) => void;
}

/**
 * Wraps every handler of a gRPC service so that it runs only for a caller whose token has the role REQUIRED_ROLE
 * names; others get UNAUTHENTICATED or PERMISSION_DENIED before the handler sees the call.
 */
export function guardService(definition: ServiceDefinition, impl: UntypedServiceImplementation, tokens: AccessTokens, hooks: GuardHooks = {}): UntypedServiceImplementation {
  const out: UntypedServiceImplementation = {};
  for (const [name, handler] of Object.entries(impl)) {
    const method = definition[name];
    const need = REQUIRED_ROLE[name];
    if (!method || !need) throw new Error(`no required role for rpc ${name}: add it to REQUIRED_ROLE`);
    const rpc = method.path.split('/').pop() ?? name;
    const fn = handler as (...args: unknown[]) => void;
    out[name] = ((call: { metadata: Metadata; request?: unknown; emit(event: 'error', e: ServiceError): void }, cb?: (e: ServiceError) => void) => {
      const header = call.metadata.get('authorization')[0];
      const result = authorize(tokens, bearerToken(typeof header === 'string' ? header : header?.toString('utf8')), need, rpc);
      const refusal = result.ok ? admitRefusal(name, call.request, result.caller, hooks) : result.error;
      if (refusal) {
        const e = domainServiceError(refusal);
        hooks.refused?.(rpc, e.code);
        // Unary and client-streaming calls answer through their callback, server streams by an error event.
        if (!method.responseStream && cb) cb(e);
        else call.emit('error', e);
        return;
      }
      if (result.ok && call.request && typeof call.request === 'object') admitted.set(call.request, result.caller);
      fn(call, cb);
    }) as UntypedServiceImplementation[string];
  }
  return out;
}

/** The error `hooks.admit` refuses a call with, if any. */
function admitRefusal(method: string, request: unknown, caller: Caller, hooks: GuardHooks): ImgbuilderError | undefined {
  try {
    hooks.admit?.(method, request, caller);
    return undefined;
  } catch (err) {
    if (err instanceof ImgbuilderError) return err;
    throw err;
  }
}
