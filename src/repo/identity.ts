/**
 * The repository's description (pgark.json): which PostgreSQL cluster it belongs to and how
 * its objects are encrypted. Public information only — recipients, never identities.
 */
import { z } from 'zod';
import { PgarkError } from '../errors.ts';
import type { Storage } from '../storage/types.ts';
import { IDENTITY_KEY, REPO_FORMAT_VERSION } from './layout.ts';

const RepoIdentitySchema = z.object({
  format: z.number().int(),
  createdAt: z.string(),
  createdBy: z.string(),
  postgres: z.object({
    systemIdentifier: z.string().regex(/^\d+$/),
    majorVersion: z.number().int(),
    walSegmentSize: z.number().int().positive(),
  }),
  encryption: z.object({
    recipients: z.array(z.string()),
  }),
});

export type RepoIdentity = z.infer<typeof RepoIdentitySchema>;

export async function readRepoIdentity(storage: Storage): Promise<RepoIdentity | undefined> {
  let text: string;
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of await storage.get(IDENTITY_KEY)) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  } catch (error) {
    if (error instanceof PgarkError && error.code === 'NOT_FOUND') return undefined;
    throw error;
  }
  return parseRepoIdentity(text, `${IDENTITY_KEY} in ${storage.description}`);
}

export function parseRepoIdentity(text: string, where: string): RepoIdentity {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new PgarkError('INTEGRITY', `${where} is not valid JSON`, { hint: 'the repository description is damaged; restore it from a copy or re-run `pgark init` in a new location' });
  }
  const result = RepoIdentitySchema.safeParse(parsed);
  if (!result.success) {
    throw new PgarkError('INTEGRITY', `${where} is malformed at ${result.error.issues[0]?.path.join('.') || 'top level'}`);
  }
  if (result.data.format > REPO_FORMAT_VERSION) {
    throw new PgarkError('REPO_MISMATCH', `repository format ${result.data.format} is newer than this pgark understands (${REPO_FORMAT_VERSION})`, { hint: 'upgrade pgark' });
  }
  return result.data;
}

export async function writeRepoIdentity(storage: Storage, identity: RepoIdentity): Promise<void> {
  await storage.put(IDENTITY_KEY, Buffer.from(JSON.stringify(identity, null, 2) + '\n'), { kind: 'meta' });
}
