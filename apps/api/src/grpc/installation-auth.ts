import type { BuildRegistryAuth } from '@imgbuilder/proto';
import type { Caller } from '@imgbuilder/common/access-tokens';
import { InstallationAuthDenied } from '@imgbuilder/common/errors';
import { normaliseRegistryHost, type CredentialTable } from '@imgbuilder/common/registry-auth';

/**
 * Which part of a request's BuildRegistryAuth would hand it the installation's registry credentials, or undefined.
 * With them a caller pulls whatever the installation may (other users' workspace images, whose refs ListBuilds shows).
 */
export function installationAuthAsked(auth: BuildRegistryAuth | undefined, installation: CredentialTable): string | undefined {
  const mode = auth?.mode;
  if (mode?.$case === 'total') return mode.total.allowAll ? 'total.allow_all' : undefined;
  if (mode?.$case !== 'selective') return undefined;
  const sel = mode.selective;
  if (sel.allowBaserep) return 'selective.allow_baserep';
  if (sel.allowWorkspacerep) return 'selective.allow_workspacerep';
  const host = sel.anyOf.find((h) => installation.has(normaliseRegistryHost(h)));
  return host === undefined ? undefined : `selective.any_of (${host})`;
}

/**
 * Refuses a request that asks for the installation's credentials when its token lacks `"installationAuth": true` in
 * IMGBUILDER_TOKENS_FILE; admins always may. Only called with a tokens file: without one nothing changes.
 */
export function checkInstallationAuth(request: unknown, caller: Caller, installation: CredentialTable): void {
  const auth = (request as { auth?: BuildRegistryAuth } | undefined)?.auth;
  if (caller.role === 'admin' || caller.installationAuth) return;
  const asked = installationAuthAsked(auth, installation);
  if (asked) {
    throw new InstallationAuthDenied(
      `token "${caller.name}" may not use the installation's registry credentials (${asked}): give its entry in IMGBUILDER_TOKENS_FILE "installationAuth": true, or send credentials in auth.additional instead`,
    );
  }
}
