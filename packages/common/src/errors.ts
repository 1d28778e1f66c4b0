/**
 * The one home of common's errors, imported as `@imgbuilder/common/errors`:
 * - errors/domain.ts: what a caller may see (ImgbuilderError and its family), each mapped to a gRPC status by the
 *   API's status table and to a build outcome by the worker;
 * - errors/faults.ts: faults of common's own parts (InternalError), converted by the layer that called them;
 * - errors/outages.ts: which raw errors (a socket's, a Redis client's) mean "the other side is away", and the domain
 *   error that stands for it.
 * Other layers keep theirs in one module each: apps/api/src/errors.ts, apps/worker/src/errors.ts.
 */
export * from './errors/domain.js';
export * from './errors/faults.js';
export * from './errors/outages.js';
