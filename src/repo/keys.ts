/**
 * Loading the keys pgark encrypts to (recipients, public) and decrypts with (identities, a
 * private key file). An identity file that others can read is refused, as ssh does.
 */
import { readFile, stat } from 'node:fs/promises';
import { PgarkError } from '../errors.ts';

export async function loadIdentityFile(path: string): Promise<string[]> {
  // The key itself pasted where its file's path belongs: never echo it (logs keep it forever).
  if (/AGE-SECRET-KEY-/i.test(path)) {
    throw new PgarkError('CRYPTO', 'the identity setting holds a secret key itself, not the path of an identity file', {
      hint: 'write the key to a file readable by its owner only (as `pgark keygen --output FILE` does) and set identity to that path',
    });
  }
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new PgarkError('CRYPTO', `cannot read identity file ${path}: ${code === 'ENOENT' ? 'no such file' : code}`, {
      hint: 'create one with `pgark keygen --output FILE`, or point the identity setting at it',
    });
  }
  if (!info.isFile()) throw new PgarkError('CRYPTO', `identity file ${path} is not a regular file`);
  if ((info.mode & 0o077) !== 0) {
    throw new PgarkError('CRYPTO', `identity file ${path} is accessible by others (mode ${(info.mode & 0o777).toString(8).padStart(4, '0')})`, {
      hint: `a private key must be readable by its owner only: chmod 600 ${path}`,
    });
  }
  const { parseIdentityFile } = await import('../pipeline/age.ts');
  const text = await readFile(path, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new PgarkError('CRYPTO', `cannot read identity file ${path}: ${error.code}`, { hint: 'run pgark as the owner of the file' });
  });
  try {
    return parseIdentityFile(text);
  } catch (error) {
    if (error instanceof PgarkError) throw new PgarkError(error.code, `identity file ${path}: ${error.message}`, { hint: error.hint });
    throw error;
  }
}

/** Checks every recipient now, so a typo fails before any upload. */
export async function validateRecipients(recipients: readonly string[], source: string): Promise<string[]> {
  const { parseRecipient } = await import('../pipeline/age.ts');
  return recipients.map((recipient) => {
    try {
      parseRecipient(recipient);
      return recipient;
    } catch (error) {
      if (error instanceof PgarkError) throw new PgarkError('CRYPTO', `${source}: ${error.message}`, { hint: error.hint });
      throw error;
    }
  });
}
