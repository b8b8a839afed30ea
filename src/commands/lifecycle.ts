/** pgark lifecycle: print (or --apply) the S3 lifecycle configuration for this repository. */
import type { CommandContext } from '../cli/context.ts';
import { requireSetting } from '../config/load.ts';
import { PgarkError } from '../errors.ts';
import { lifecycleRules, mergeRules } from '../repo/lifecycle.ts';
import { s3SettingsOf } from '../storage/open.ts';
import { parseRepoUrl } from '../storage/url.ts';
import { log } from '../util/log.ts';

export async function run(ctx: CommandContext): Promise<number> {
  const { config } = ctx.loaded;
  const location = parseRepoUrl(requireSetting(ctx.loaded, 'repo', 'where is the repository?'));
  if (location.scheme !== 's3') {
    throw new PgarkError('USAGE', `lifecycle rules are an S3 feature; ${location.scheme}:// repositories have none`, {
      hint: location.scheme === 'azure' ? 'Azure: use a lifecycle management policy that only moves blobs between tiers (never deletes); expire deletes' : 'expire deletes what retention no longer needs',
    });
  }
  const rules = lifecycleRules({
    prefix: location.prefix,
    noncurrentDays: config['lifecycle-noncurrent-days'],
    transitionClass: config['lifecycle-transition-class'] || undefined,
    transitionDays: config['lifecycle-transition-days'],
  });
  let applied: { kept: number } | undefined;
  if (ctx.options.apply) {
    const { S3Storage } = await import('../storage/s3.ts');
    const storage = new S3Storage(s3SettingsOf(location, config));
    try {
      const merged = mergeRules(await storage.getLifecycleRules(), rules, location.prefix);
      await storage.putLifecycleRules(merged.rules);
      applied = { kept: merged.kept };
      log.info(`lifecycle configuration applied to bucket ${location.bucket}`, { rules: rules.length, otherRulesKept: merged.kept });
    } finally {
      await storage.close();
    }
  }
  if (ctx.json) {
    process.stdout.write(JSON.stringify({ bucket: location.bucket, prefix: location.prefix, Rules: rules, applied: applied !== undefined, otherRulesKept: applied?.kept ?? null }) + '\n');
  } else {
    // The format of `aws s3api put-bucket-lifecycle-configuration --lifecycle-configuration file://…`.
    process.stdout.write(JSON.stringify({ Rules: rules }, null, 2) + '\n');
    if (!applied) log.info('no expiration by age on purpose: packs stay referenced by later incrementals and WAL is needed from the oldest kept backup, however old; pgark expire deletes. Apply with --apply (other rules of the bucket are kept)');
  }
  return 0;
}
