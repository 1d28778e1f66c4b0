/**
 * Every Redis key and channel imgbuilder uses. All carry one hash tag (`{imgb}`, or `{<IMGBUILDER_REDIS_NAMESPACE>}`
 * for several installations sharing one Redis) so that, on Redis Cluster, BullMQ's keys
 * and every key of a build land in the same slot (Lua scripts and MULTI need that).
 */
// Read at load time (not through the config schema) so every module agrees without passing it around; the schema
// validates the same variable at start.
const NAMESPACE = process.env.IMGBUILDER_REDIS_NAMESPACE || 'imgb';
export const HASH_TAG = `{${NAMESPACE}}`;

/** BullMQ `prefix` option: BullMQ keys become `{imgb}:builds:*`. */
export const QUEUE_PREFIX = HASH_TAG;
export const QUEUE_NAME = 'builds';

export const redisKeys = {
  /** Hash: the build record (see BuildRecord). */
  build: (buildId: string) => `${HASH_TAG}:build:${buildId}`,
  /** Stream: the build's log chunks and status changes, in order. */
  events: (buildId: string) => `${HASH_TAG}:build:${buildId}:events`,
  /** String: the build id queued or running for a workspace ref; the dedupe lock. */
  activeByRef: (ref: string) => `${HASH_TAG}:ref:${ref}:active`,
  /** String: the most recent build id of a workspace ref (Logs by ref after the build). */
  lastByRef: (ref: string) => `${HASH_TAG}:ref:${ref}:last`,
  /** Sorted set: ids of queued and running builds, scored by start time. */
  live: `${HASH_TAG}:builds:live`,
  /** Hash: counters of builds started / deduplicated / done (metrics that must survive process restarts). */
  counters: `${HASH_TAG}:counters`,
  /** String: held by the one process whose reaper runs this interval. */
  reaperLock: `${HASH_TAG}:reaper:lock`,
} as const;

export const redisChannels = {
  /** Published after each append to a build's event stream: wakes every API pod tailing it. */
  events: (buildId: string) => `${HASH_TAG}:notify:${buildId}`,
} as const;
