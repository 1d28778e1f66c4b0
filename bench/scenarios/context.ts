import type { GitServer } from '../../testkit/git-server.js';
import type { ScenarioResult } from '../support/report.js';

export interface BenchContext {
  quick: boolean;
  git: GitServer;
  /** The local stack's environment (REDIS_URL, DOCKER_HOST, registry log path, …). */
  env: Record<string, string>;
  /** Profile the API process (`node --cpu-prof`) where a scenario looks at API CPU; always done when a target is missed. */
  cpuProf: boolean;
  /** Where profiles and other artefacts go. */
  artefactDir: string;
  progress(msg: string): void;
}

export interface Scenario {
  name: string;
  title: string;
  run(ctx: BenchContext): Promise<Omit<ScenarioResult, 'name' | 'title' | 'seconds'>>;
}
