/** pgark keygen: a new age identity file (0600, never overwritten) and its public recipient. */
import { open } from 'node:fs/promises';
import type { CommandContext } from '../cli/context.ts';
import { PgarkError } from '../errors.ts';
import { formatIdentityFile, generateIdentity } from '../pipeline/age.ts';

export async function run(ctx: CommandContext): Promise<number> {
  const output = ctx.options.output as string | undefined;
  const { identity, recipient } = generateIdentity();
  const text = formatIdentityFile(identity, recipient, new Date());
  if (output === undefined || output === '-') {
    if (output === undefined && process.stdout.isTTY) {
      throw new PgarkError('USAGE', 'refusing to print a private key to the terminal', { hint: 'use `pgark keygen --output FILE` (or --output - to write it to a pipe)' });
    }
    process.stdout.write(text);
    process.stderr.write(`Public key: ${recipient}\n`);
    return 0;
  }
  let handle;
  try {
    // O_EXCL: an existing key is never replaced (losing it would lose every backup made with it).
    handle = await open(output, 'wx', 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new PgarkError('EXISTS', `${output} already exists; not overwriting an identity`, { hint: 'choose another file name' });
    throw new PgarkError('CRYPTO', `cannot create ${output}: ${code}`, { hint: 'check that the directory exists and is writable' });
  }
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  process.stdout.write(`${recipient}\n`);
  process.stderr.write(`wrote identity to ${output}; its public recipient (for --recipient / PGARK_RECIPIENT) is printed above\n`);
  return 0;
}
