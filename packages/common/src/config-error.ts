// Apart from config.ts so that code which only reports bad settings (the tokens file, which the CLI loads too)
// does not load zod's EnvSchema with it.
import { ConfigError } from './errors.js';


/** The error for bad settings: one problem a line, each naming the variable (or file) it is about. */
export function invalidConfiguration(problems: readonly string[]): ConfigError {
  return new ConfigError(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
}
