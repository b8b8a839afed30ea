/**
 * pgark check: every precondition of archiving and backing up, each reported on its own line
 * with what to do when it fails. Exit 0 only when all pass.
 */
import { randomBytes } from 'node:crypto';
import type { CommandContext } from '../cli/context.ts';
import { PgarkError } from '../errors.ts';
import { clusterInfo, connect, connectionTarget, describeTarget, type ClusterInfo } from '../postgres/connection.ts';
import { readRepoIdentity, type RepoIdentity } from '../repo/identity.ts';
import { loadIdentityFile, validateRecipients } from '../repo/keys.ts';
import { CHECK_PREFIX } from '../repo/layout.ts';
import { openStorage } from '../storage/open.ts';
import type { Storage } from '../storage/types.ts';

interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
  hint?: string;
}

async function attempt(results: CheckResult[], name: string, body: () => Promise<string>): Promise<boolean> {
  try {
    results.push({ name, ok: true, detail: await body() });
    return true;
  } catch (error) {
    const e = error instanceof PgarkError ? error : new PgarkError('INTERNAL', (error as Error).message);
    results.push({ name, ok: false, detail: e.message, hint: e.hint });
    return false;
  }
}

async function readBack(storage: Storage, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of await storage.get(key)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function run(ctx: CommandContext): Promise<number> {
  const { config, origin, configPath } = ctx.loaded;
  const results: CheckResult[] = [];
  results.push({ name: 'configuration', ok: true, detail: configPath ? `loaded ${configPath}` : 'no config file; environment and flags only' });

  let storage: Storage | undefined;
  let identity: RepoIdentity | undefined;
  let cluster: ClusterInfo | undefined;
  try {
    const url = config.repo;
    if (!url) {
      results.push({ name: 'repository', ok: false, detail: 'no repository configured', hint: 'set --repo, PGARK_REPO or "repo:" in the config file' });
    } else if (await attempt(results, 'repository reachable', async () => {
      storage = await openStorage(url, config);
      identity = await readRepoIdentity(storage);
      return `${storage.description}${identity ? '' : ' (not initialised yet: run `pgark init`)'}`;
    })) {
      await attempt(results, 'repository writable', async () => {
        const key = `${CHECK_PREFIX}${Date.now()}-${randomBytes(4).toString('hex')}`;
        const probe = randomBytes(64);
        await storage!.put(key, probe, { kind: 'meta' });
        const back = await readBack(storage!, key);
        await storage!.delete([key]);
        if (!back.equals(probe)) throw new PgarkError('INTEGRITY', 'an object read back differs from what was written');
        return 'wrote, read back and deleted a test object';
      });
    }

    const recipients = config.recipient?.length ? config.recipient : identity?.encryption.recipients ?? [];
    await attempt(results, 'encryption', async () => {
      if (recipients.length === 0) return 'off (objects are stored unencrypted)';
      await validateRecipients(recipients, origin.get('recipient') ?? 'pgark.json');
      if (config.identity) await loadIdentityFile(config.identity);
      return `${recipients.length} recipient(s)${config.identity ? '; identity file readable' : '; no identity here (not needed to write)'}`;
    });

    if (!ctx.options['no-postgres']) {
      const target = connectionTarget(config);
      if (await attempt(results, 'database connection', async () => {
        const client = await connect(config);
        try {
          cluster = await clusterInfo(client);
        } finally {
          await client.end();
        }
        return `${describeTarget(target)}: PostgreSQL ${cluster.serverVersion}${cluster.inRecovery ? ' (standby)' : ''}`;
      })) {
        const info = cluster!;
        if (identity) {
          await attempt(results, 'repository matches cluster', async () => {
            if (identity!.postgres.systemIdentifier !== info.systemIdentifier) {
              throw new PgarkError('REPO_MISMATCH', `repository belongs to system ${identity!.postgres.systemIdentifier}, the database is ${info.systemIdentifier}`, { hint: 'point repo at this cluster\'s repository' });
            }
            return `system identifier ${info.systemIdentifier}`;
          });
        }
        await attempt(results, 'archiving', async () => {
          if (info.archiveMode === 'off') {
            throw new PgarkError('CONFIG', 'archive_mode is off', { hint: "set archive_mode = on and archive_command = 'pgark wal-push %p' in postgresql.conf, then restart PostgreSQL" });
          }
          if (!/\bpgark(\.mjs)?["']?\s+wal-push\b/.test(info.archiveCommand)) {
            throw new PgarkError('CONFIG', `archive_command does not call pgark wal-push (it is ${JSON.stringify(info.archiveCommand)})`, { hint: "set archive_command = 'pgark wal-push %p' and reload PostgreSQL" });
          }
          return `archive_mode=${info.archiveMode}, archive_command calls pgark wal-push`;
        });
      }
    }
  } finally {
    await storage?.close();
  }

  const failed = results.filter((r) => !r.ok).length;
  if (ctx.json) {
    process.stdout.write(JSON.stringify({ ok: failed === 0, checks: results }) + '\n');
  } else {
    for (const r of results) {
      process.stdout.write(`${r.ok ? 'ok  ' : 'FAIL'}  ${r.name}: ${r.detail}\n`);
      if (!r.ok && r.hint) process.stdout.write(`      hint: ${r.hint}\n`);
    }
    process.stdout.write(failed === 0 ? 'all checks passed\n' : `${failed} check(s) failed\n`);
  }
  return failed === 0 ? 0 : 2;
}
