/**
 * A build's life in Redis, owned here and nowhere else: the record and its state machine, the event stream (state
 * changes and log entries), the recent index, the ref's dedupe lock, the reaper's lock, their TTLs, the dashboard's
 * queue samples, cancel requests and each caller's fair-share line. Every transition is one Lua script (lua/, with
 * the terminal and fencing checks written once in lua/includes/). Other modules import this file only (package.json closes the folder's other files); the
 * key names (redis-keys.ts) are handed out only for BullMQ's prefix and for tests that look at Redis directly.
 */
export { CancelRequests, type CancelNotice, type CancelOutcome } from './cancel-requests.js';
export { DEFER_MS, DEMAND_STATES, FairShare } from './fair-share.js';
export { BuildStore, RECENT_BUILDS_CAP, type BuildFinish, type CreateBuildInput } from './build-store.js';
export { LogStore, LOG_KEY_PREFIX, missingLine } from './log-store.js';
export { QueueSamples, type QueueSample } from './queue-samples.js';
export { QUEUE_NAME, redisKeys, type RedisKeys } from './redis-keys.js';
export { compareStreamIds, isTerminal, TERMINAL_STATES, type BuildEvent, type BuildRecord, type BuildState, type TerminalState } from './state.js';
export { ENQUEUE_LOCK_TTL_MS, fairShareTtlMs, lockTtlMs } from './ttl.js';
