/**
 * The one error type pgark raises on purpose. The CLI prints `error: <message>` and, on a
 * second line, `hint: <hint>`; the stack only with --debug. `code` is stable and meant for
 * tests and scripts; `exitCode` lets a command say "not found" (1) apart from failures (2+).
 */
export type PgarkErrorCode =
  | 'CONFIG'          // bad or missing configuration
  | 'USAGE'           // bad command-line usage
  | 'REPO_URL'        // malformed repository URL
  | 'STORAGE'         // the object store failed or refused
  | 'UNREACHABLE'     // the object store could not be reached in time
  | 'AUTH'            // missing or rejected credentials
  | 'NOT_FOUND'       // an object or stream does not exist
  | 'EXISTS'          // refusing to overwrite
  | 'CONFLICT'        // same name, different content
  | 'INTEGRITY'       // checksum or authentication failure while reading
  | 'CRYPTO'          // key files, recipients, decryption
  | 'REPO_MISMATCH'   // repository belongs to another cluster
  | 'POSTGRES'        // database connection or query failed
  | 'LOCKED'          // another pgark process holds the repository lock
  | 'INTERNAL';

export class PgarkError extends Error {
  readonly code: PgarkErrorCode;
  readonly hint: string | undefined;
  readonly exitCode: number;

  constructor(code: PgarkErrorCode, message: string, options: { hint?: string; cause?: unknown; exitCode?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PgarkError';
    this.code = code;
    this.hint = options.hint;
    this.exitCode = options.exitCode ?? (code === 'NOT_FOUND' ? 1 : 2);
  }
}

export function isPgarkError(error: unknown, code?: PgarkErrorCode): error is PgarkError {
  return error instanceof PgarkError && (code === undefined || error.code === code);
}
