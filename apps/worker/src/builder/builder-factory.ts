import type { DockerEngine } from '../docker-engine.js';
import { BuildkitBuilder } from './buildkit-builder.js';
import { ClassicBuilder } from './classic-builder.js';
import type { BuilderKind, ImageBuilder } from './image-builder.js';

/**
 * The builder IMGBUILDER_BUILDER names. BuildKit keeps a classic builder to retry with when the engine's BuildKit
 * stops sending a build's progress (see BuildkitBuilder). Apart from the interface file, which its implementations
 * import: the factory importing them there would close a cycle.
 */
export function createImageBuilder(kind: BuilderKind, engine: DockerEngine): ImageBuilder {
  const classic = new ClassicBuilder(engine);
  return kind === 'classic' ? classic : new BuildkitBuilder(engine, classic);
}
