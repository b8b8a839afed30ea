/**
 * The S3 lifecycle rules that fit a pgark repository (`pgark lifecycle`). Only rules that can
 * never delete an object a retained backup needs:
 * - abort multipart uploads left open for a day (a lost CreateMultipartUpload answer, a killed
 *   process on a store that ignores aborts);
 * - on a versioned (or Object Lock) bucket, remove the noncurrent versions that expire's deletes
 *   leave behind, and the delete markers left alone afterwards;
 * - optionally, move WAL and packs to a cheaper, still instantly readable storage class.
 * Deliberately no expiration by age: a pack written by the first full backup stays referenced
 * by every incremental since (unchanged pages are not stored again), and the WAL needed is
 * everything after the oldest retained backup's start, however old — only expire, which reads
 * the manifests, knows what is unreferenced.
 */
import type { LifecycleRule } from '@aws-sdk/client-s3';
import { PgarkError } from '../errors.ts';
import { PACKS_PREFIX, WAL_PREFIX } from './layout.ts';

export interface LifecycleSettings {
  /** The repository's key prefix in the bucket ("" or "a/b/"). */
  prefix: string;
  noncurrentDays: number;
  transitionClass?: string;
  transitionDays: number;
}

/** Classes whose objects need a restore request before a GET: pgark restore would fail. */
const NOT_INSTANTLY_READABLE = new Set(['GLACIER', 'DEEP_ARCHIVE']);

/** Rule ids start with this, so --apply replaces its own rules and keeps everyone else's. */
export function ruleIdPrefix(prefix: string): string {
  return `pgark ${prefix || '/'} `;
}

export function lifecycleRules(settings: LifecycleSettings): LifecycleRule[] {
  const id = ruleIdPrefix(settings.prefix);
  const rules: LifecycleRule[] = [
    {
      ID: `${id}abort-incomplete-uploads`,
      Status: 'Enabled',
      Filter: { Prefix: settings.prefix },
      AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 },
    },
    {
      ID: `${id}noncurrent-versions`,
      Status: 'Enabled',
      Filter: { Prefix: settings.prefix },
      NoncurrentVersionExpiration: { NoncurrentDays: settings.noncurrentDays },
    },
  ];
  if (settings.transitionClass) {
    if (NOT_INSTANTLY_READABLE.has(settings.transitionClass)) {
      throw new PgarkError('CONFIG', `lifecycle-transition-class ${settings.transitionClass} is not readable without a restore request: pgark restore and wal-fetch would fail`, {
        hint: 'use an instantly readable class such as STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING or GLACIER_IR',
      });
    }
    for (const [name, prefix] of [['wal', WAL_PREFIX], ['packs', PACKS_PREFIX]] as const) {
      rules.push({
        ID: `${id}transition-${name}`,
        Status: 'Enabled',
        Filter: { Prefix: settings.prefix + prefix },
        Transitions: [{ Days: settings.transitionDays, StorageClass: settings.transitionClass as never }],
      });
    }
  }
  return rules;
}

/** The bucket's rules with this repository's replaced by `ours`. */
export function mergeRules(existing: readonly LifecycleRule[], ours: readonly LifecycleRule[], prefix: string): { rules: LifecycleRule[]; kept: number } {
  const others = existing.filter((rule) => !rule.ID?.startsWith(ruleIdPrefix(prefix)));
  return { rules: [...others, ...ours], kept: others.length };
}
