/** What every command receives from the CLI layer. */
import type { LoadedConfig } from '../config/load.ts';

export interface CommandContext {
  /** Positional arguments after the command name. */
  args: string[];
  /** Command-specific option values (not settings). */
  options: Record<string, string | boolean | string[] | undefined>;
  /** The configuration; commands that do not use it get the defaults. */
  loaded: LoadedConfig;
  json: boolean;
  /** The --config and non-secret setting flags of this invocation, for a child pgark process. */
  forwardArgs: string[];
  /** Secret settings given as flags, as PGARK_* variables for a child's environment. */
  forwardEnv: Record<string, string>;
  /** Aborted on SIGINT/SIGTERM: commands stop and clean up (no open uploads left). */
  signal: AbortSignal;
}
