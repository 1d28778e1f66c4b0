import { BuildRegistryAuth, BuildSource, GitAuthMethod, GitConfig, type BuildRequest, type GitInitializer } from '@imgbuilder/proto';
import { forEachDownload, sealBinding, type BuildJobData, type JobSecrets } from '@imgbuilder/common/build-job';
import { InvalidRequest } from '@imgbuilder/common/errors';
import { splitUrlCredentials } from '@imgbuilder/common/git';
import { forEachGit } from '@imgbuilder/common/refs';
import type { SecretBox } from '@imgbuilder/common/secret-box';
import type { BuildPlan } from './build-plan.js';

/**
 * Largest job payload (source, auth, sealed secrets) put in Redis: a build request is small; bigger ones are refused
 * before anything is stored.
 */
const MAX_JOB_BYTES = 1024 * 1024;

/** The job of a build, sealed for the id it gets once created: the id is part of what its secrets are bound to. */
export type SealJob = (buildId: string) => BuildJobData;

/** A job before it has an id. */
interface JobContent {
  job: Omit<BuildJobData, 'buildId' | 'sealed'>;
  secrets: JobSecrets;
}

/**
 * The job a plan and its request make, with the credentials it must carry sealed by `box`; `tokenName` is the access
 * token the request came with. Refuses (INVALID_ARGUMENT) a job too large to queue, before anything is stored.
 */
export function composeJob(plan: BuildPlan, req: BuildRequest, tokenName: string | undefined, box: SecretBox): SealJob {
  const content = jobContent(plan, req, tokenName);
  const seal: SealJob = (buildId) => {
    const data = { buildId, ...content.job };
    return { ...data, sealed: box.seal(content.secrets, sealBinding(data)) };
  };
  const jobBytes = Buffer.byteLength(JSON.stringify(seal('00000000-0000-0000-0000-000000000000')));
  if (jobBytes > MAX_JOB_BYTES) {
    throw new InvalidRequest(`build request is too large: ${jobBytes} bytes of source, auth and secrets, more than the ${MAX_JOB_BYTES} bytes a queued build may carry; send less (large files belong in the build context)`);
  }
  return seal;
}

/** Everything of the job but its id and seal, with the credentials it must carry taken out for sealing. */
function jobContent(plan: BuildPlan, req: BuildRequest, tokenName: string | undefined): JobContent {
  const secrets: JobSecrets = { additional: { ...(req.auth?.additional ?? {}) }, git: [], downloads: [] };
  // Strip credentials out of the source (passwords, OTS URLs, user:password@ in URLs, custom_config, download
  // URLs); they travel sealed.
  const source = BuildSource.fromPartial(req.source ?? {});
  if (source.from?.$case === 'file') {
    forEachGit(source.from.file.source, (g) => secrets.git.push(sealGitSecrets(g)));
    forEachDownload(source.from.file.source, (f) => {
      secrets.downloads!.push(f.url);
      f.url = '';
    });
  }
  const auth = BuildRegistryAuth.fromPartial({ ...(req.auth ?? {}), additional: {} });
  const job = {
    ref: plan.ref,
    baseRef: plan.baseRef,
    source: BuildSource.toJSON(source),
    plan: plan.kind,
    copyFrom: plan.copyFrom,
    auth: BuildRegistryAuth.toJSON(auth),
    triggeredBy: req.triggeredBy,
    tokenName,
    resolvedCommits: plan.resolvedCommits,
    notes: plan.fallbackNote ? [plan.fallbackNote] : undefined,
    ...(req.forceRebuild ? { noCache: true } : {}),
  };
  return { job, secrets };
}

/** Moves a git initializer's secrets out of it (in place) and returns them for sealing. */
function sealGitSecrets(g: GitInitializer): JobSecrets['git'][number] {
  const config = g.config ?? GitConfig.fromPartial({});
  const inUrl = splitUrlCredentials(g.remoteUri);
  g.remoteUri = inUrl.url;
  if (g.upstreamRemoteUri) g.upstreamRemoteUri = splitUrlCredentials(g.upstreamRemoteUri).url;
  let password = config.authPassword;
  if (inUrl.credentials && config.authentication === GitAuthMethod.NO_AUTH) {
    // `https://user:token@host/repo` becomes BASIC_AUTH, so the bare URL is all the job and the checkout hold.
    config.authentication = GitAuthMethod.BASIC_AUTH;
    config.authUser = inUrl.credentials.username;
    password = inUrl.credentials.password;
  }
  const sealed = { password, ots: config.authOts, config: { ...config.customConfig } };
  config.authPassword = '';
  config.authOts = '';
  config.customConfig = {};
  g.config = config;
  return sealed;
}
