/** Which of the engine's builders runs Dockerfiles (IMGBUILDER_BUILDER). */
export type BuilderKind = 'buildkit' | 'classic';

export interface BuildOptions {
  tag: string;
  dockerfile: string;
  /** The Dockerfile's text (BuildKit reads its FROM lines to pull private bases with the build's credentials). */
  dockerfileText?: string;
  /** Pull credentials per registry host (the X-Registry-Config header). */
  registryconfig: Record<string, Record<string, string>>;
  signal: AbortSignal;
  /** Resource limits for the steps (cgroup parent, memory, CPU), from the build sandbox. */
  limits?: object;
  /**
   * Put into every BuildKit step's environment as `no_proxy` (BuildKit leaves proxy variables out of its cache
   * keys), so the build sandbox can tell this build's step processes from others' on the same engine.
   */
  stepMarker?: string;
  /** Called with the (short) id of each step container the engine starts, where the builder has them. */
  onStepContainer?: (id: string) => void;
  /** The caller's prefix for cache mount ids (BuildKit: BUILDKIT_CACHE_MOUNT_NS, also for ONBUILD triggers). */
  cacheNamespace?: string;
  /** Reuse no cached step (force_rebuild). */
  noCache?: boolean;
  /** A named stage to build instead of the final one (BuildKit: the layer cache keeps stages this way). */
  target?: string;
  /** Images whose cache metadata the build may reuse (BuildKit: inline cache). */
  cacheFrom?: string[];
  /** The context again, for a second attempt with another builder (BuildKit's stuck progress stream). */
  contextAgain?: () => NodeJS.ReadableStream;
}

/**
 * Builds a context tar into an image on the engine and forwards the build's log as plain text. A failing step
 * throws UserBuildError naming the step and the engine's message (its exit code included).
 */
export interface ImageBuilder {
  readonly kind: BuilderKind;
  /** Returns the built image's id. */
  build(context: NodeJS.ReadableStream, opts: BuildOptions, write: (text: string) => void): Promise<string>;
}
