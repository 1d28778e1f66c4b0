/** BullMQ queue name; its keys carry the installation's prefix (RedisKeys.queuePrefix). */
export const QUEUE_NAME = 'builds';

/**
 * Every Redis key and channel of one installation. All carry one hash tag (`{imgb}`, or
 * `{<IMGBUILDER_REDIS_NAMESPACE>}` for several installations sharing one Redis) so that, on Redis Cluster, BullMQ's keys
 * and every key of a build land in the same slot (Lua scripts and MULTI need that). Made once at start from the
 * parsed configuration and handed to whatever touches Redis.
 */
export function redisKeys(namespace: string) {
  const tag = `{${namespace}}`;
  return {
    /** The hash tag every key starts with. */
    hashTag: tag,
    /** BullMQ `prefix` option: BullMQ keys become `{imgb}:builds:*`. */
    queuePrefix: tag,
    /** Hash: the build record (see BuildRecord). */
    build: (buildId: string) => `${tag}:build:${buildId}`,
    /** Stream: the build's log chunks and status changes, in order. */
    events: (buildId: string) => `${tag}:build:${buildId}:events`,
    /** Channel: published after each append to a build's event stream; wakes every API pod tailing it. */
    eventsNotify: (buildId: string) => `${tag}:notify:${buildId}`,
    /** String: the build id queued or running for a workspace ref; the dedupe lock. */
    activeByRef: (ref: string) => `${tag}:ref:${ref}:active`,
    /** String: the most recent build id of a workspace ref (Logs by ref after the build). */
    lastByRef: (ref: string) => `${tag}:ref:${ref}:last`,
    /** Sorted set: ids of queued and running builds, scored by start time. */
    live: `${tag}:builds:live`,
    /** Sorted set: ids of the most recent builds (any state), scored by queue time; capped (RECENT_BUILDS_CAP). */
    recent: `${tag}:builds:recent`,
    /** Sorted set: queue-depth samples of the last hour (`<ms>:<queued>:<running>:<pod>`, scored by time). */
    queueSamples: `${tag}:stats:queue`,
    /** Hash: counters of builds started / deduplicated / done (metrics that must survive process restarts). */
    counters: `${tag}:counters`,
    /** Channel: `{id, by}` of each build someone asked to cancel; every worker listens (cancel-requests.ts). */
    cancelRequests: `${tag}:cancel`,
    /** Sorted set: one caller's queued and running build ids (the caller, an attributed triggered_by, hashed), for its fair-share rank (fair-share.ts). */
    callerBuilds: (callerHash: string) => `${tag}:caller:${callerHash}:builds`,
    /** Set: one caller's builds holding a worker slot (IMGBUILDER_MAX_RUNNING_PER_CALLER). */
    callerRunning: (callerHash: string) => `${tag}:caller:${callerHash}:running`,
    /** String: held by the one process whose reaper runs this interval. */
    reaperLock: `${tag}:reaper:lock`,
    /** Hash: each layer-cache ref's tag and when a build last imported or pushed it (ms); retention reads it. */
    cacheLastUse: `${tag}:cache:last-use`,
    /** String: set by the reaper pass that ran the cache retention; while it lives no other pass runs it. */
    cacheRetentionDone: `${tag}:cache:retention-done`,
  } as const;
}

export type RedisKeys = ReturnType<typeof redisKeys>;
