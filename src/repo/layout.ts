/**
 * Where things live in a repository. This module is the only one that spells out keys;
 * docs/FORMAT.md describes the same layout for independent readers.
 */
export const REPO_FORMAT_VERSION = 1;

export const IDENTITY_KEY = 'pgark.json';
export const STREAMS_PREFIX = 'streams/';
/** Written by `pgark check` to prove write access, then deleted. */
export const CHECK_PREFIX = 'check/';

const STREAM_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

export function isValidStreamName(name: string): boolean {
  return STREAM_NAME.test(name) && !name.includes('..');
}

export function streamManifestKey(name: string): string {
  return `${STREAMS_PREFIX}${name}/manifest.json`;
}

/** Data objects carry a unique tag, so an interrupted upload never collides with a later one. */
export function streamDataKey(name: string, tag: string, suffix: string): string {
  return `${STREAMS_PREFIX}${name}/data-${tag}${suffix}`;
}

/** The stream name of a manifest key, or undefined for any other key. */
export function streamNameOfManifestKey(key: string): string | undefined {
  const match = /^streams\/([^/]+)\/manifest\.json$/.exec(key);
  return match?.[1];
}

// ---- WAL archive ----------------------------------------------------------------------------
// wal/<timeline><log>/<segment>-<sha256>.<codec>[.age]    segments, .partial and .backup files
// wal/history/<timeline>.history-<sha256>.<codec>[.age]   timeline history files
// The SHA-256 of the file's content is part of the key: an archived file is never rewritten,
// a duplicate push is recognised from a LIST alone, and a fetch verifies what it got.

export const WAL_PREFIX = 'wal/';

export interface WalObjectName {
  /** The WAL file name as PostgreSQL knows it. */
  name: string;
  sha256: string;
}

export function walDirectoryOf(name: string): string {
  return name.endsWith('.history') ? `${WAL_PREFIX}history/` : `${WAL_PREFIX}${name.slice(0, 16)}/`;
}

/** The common prefix of every object holding WAL file `name` (one per distinct content). */
export function walObjectPrefix(name: string): string {
  return `${walDirectoryOf(name)}${name}-`;
}

export function walObjectKey(name: string, sha256: string, suffix: string): string {
  return `${walObjectPrefix(name)}${sha256}${suffix}`;
}

const WAL_OBJECT_KEY = /^wal\/(?:[0-9A-F]{16}|history)\/([0-9A-F]{8}(?:[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup)?|\.history))-([0-9a-f]{64})(?:\.zst|\.lz4|\.gz)?(?:\.age)?$/;

export function parseWalObjectKey(key: string): WalObjectName | undefined {
  const match = WAL_OBJECT_KEY.exec(key);
  return match ? { name: match[1]!, sha256: match[2]! } : undefined;
}

// ---- WAL block maps (repo/wal-block-map.ts) --------------------------------------------------
// walsum/<TTTTTTTTXXXXXXXX>/<segment>-<sha256 of the segment><suffix>: which blocks the records
// of that archived segment change.

export const WAL_SUMMARY_PREFIX = 'walsum/';

export function walSummaryKey(name: string, sha256: string, suffix: string): string {
  return `${walSummaryPrefix(name)}${sha256}${suffix}`;
}

/** The directory of the block maps of WAL segment `name` and the segments next to it. */
export function walSummaryDirectoryOf(name: string): string {
  return `${WAL_SUMMARY_PREFIX}${name.slice(0, 16)}/`;
}

/** The common prefix of the block maps of WAL segment `name` (one per archived content). */
export function walSummaryPrefix(name: string): string {
  return `${walSummaryDirectoryOf(name)}${name}-`;
}

const WAL_SUMMARY_KEY = /^walsum\/[0-9A-F]{16}\/([0-9A-F]{24})-([0-9a-f]{64})(?:\.zst|\.lz4|\.gz)?(?:\.age)?$/;

export function parseWalSummaryKey(key: string): WalObjectName | undefined {
  const match = WAL_SUMMARY_KEY.exec(key);
  return match ? { name: match[1]!, sha256: match[2]! } : undefined;
}

// ---- base backups ---------------------------------------------------------------------------
// backups/<id>/manifest.jsonl<suffix>   every file, directory and link, with block extents
// backups/<id>/backup.json              summary; written last: a backup exists iff this exists
// backups/<id>/manifest.g<n>.jsonl…, backup.g<n>.json   generation n > 1, written by repack
// packs/<xx>/<pack-id><suffix>          immutable packs of independently encoded blobs

export const BACKUPS_PREFIX = 'backups/';
export const PACKS_PREFIX = 'packs/';

const BACKUP_ID = /^\d{8}T\d{6}[FI]$/;

export function isValidBackupId(id: string): boolean {
  return BACKUP_ID.test(id);
}

/**
 * Summaries and manifests have generations: a backup is written as generation 1
 * (`backup.json`, `manifest.jsonl<suffix>`); expire's repack writes generation n > 1 under new
 * keys (`backup.g<n>.json`, `manifest.g<n>.jsonl<suffix>`) rather than rewriting an object.
 * Readers take the summary of the highest generation (backup-manifest.ts, latestSummaryKeys).
 */
const generationPart = (generation: number) => (generation > 1 ? `.g${generation}` : '');

export function backupSummaryKey(id: string, generation = 1): string {
  return `${BACKUPS_PREFIX}${id}/backup${generationPart(generation)}.json`;
}

export function backupManifestKey(id: string, suffix: string, generation = 1): string {
  return `${BACKUPS_PREFIX}${id}/manifest${generationPart(generation)}.jsonl${suffix}`;
}

const SUMMARY_KEY = /^backups\/(\d{8}T\d{6}[FI])\/backup(?:\.g([1-9]\d{0,5}))?\.json$/;
const MANIFEST_KEY = /^backups\/(\d{8}T\d{6}[FI])\/manifest(?:\.g([1-9]\d{0,5}))?\.jsonl(?:\.zst|\.lz4|\.gz)?(?:\.age)?$/;

/** The backup id and generation of a summary key (any generation), or undefined. */
export function parseBackupSummaryKey(key: string): { id: string; generation: number } | undefined {
  const match = SUMMARY_KEY.exec(key);
  return match ? { id: match[1]!, generation: match[2] ? Number(match[2]) : 1 } : undefined;
}

/** The backup id and generation of a manifest key (any generation), or undefined. */
export function parseBackupManifestKey(key: string): { id: string; generation: number } | undefined {
  const match = MANIFEST_KEY.exec(key);
  return match ? { id: match[1]!, generation: match[2] ? Number(match[2]) : 1 } : undefined;
}

/** Written when a backup starts: lets the next backup resume an interrupted one. */
export function backupStartKey(id: string): string {
  return `${BACKUPS_PREFIX}${id}/start.json`;
}

/** Checkpoint n (from 1) of a running backup: the files stored since checkpoint n-1. */
export function backupCheckpointKey(id: string, n: number, suffix: string): string {
  return `${BACKUPS_PREFIX}${id}/partial-${String(n).padStart(6, '0')}.jsonl${suffix}`;
}

/** The backup id and checkpoint number of a checkpoint key, or undefined. */
export function parseBackupCheckpointKey(key: string): { id: string; n: number } | undefined {
  const match = /^backups\/(\d{8}T\d{6}[FI])\/partial-(\d{6})\.jsonl(?:\.zst|\.lz4|\.gz)?(?:\.age)?$/.exec(key);
  return match ? { id: match[1]!, n: Number(match[2]) } : undefined;
}

/** The backup id of any key under backups/, or undefined. */
export function backupIdOfKey(key: string): string | undefined {
  const match = /^backups\/(\d{8}T\d{6}[FI])\//.exec(key);
  return match?.[1];
}

/** The backup id of a summary key of any generation, or undefined. */
export function backupIdOfSummaryKey(key: string): string | undefined {
  return parseBackupSummaryKey(key)?.id;
}

/** A pack id is random hex plus the encoding suffix of its blobs: "3f9a…c1.zst.age". */
const PACK_ID = /^[0-9a-f]{24}(?:\.zst|\.lz4|\.gz)?(?:\.age)?$/;

export function isValidPackId(packId: string): boolean {
  return PACK_ID.test(packId);
}

export function packKey(packId: string): string {
  return `${PACKS_PREFIX}${packId.slice(0, 2)}/${packId}`;
}

// ---- verification results -------------------------------------------------------------------
// verify/<run>.json.zst   what `pgark verify` found intact (cumulative); the newest one counts

export const VERIFY_PREFIX = 'verify/';

/** Run ids sort by time: "20261121T190000-1a2b3c4d". */
export function verifyStateKey(run: string): string {
  return `${VERIFY_PREFIX}${run}.json.zst`;
}

export function verifyRunOfKey(key: string): string | undefined {
  const match = /^verify\/(\d{8}T\d{6}-[0-9a-f]{8})\.json\.zst$/.exec(key);
  return match?.[1];
}

// ---- keep markers -----------------------------------------------------------------------------
// keep/<backup-id>/<yyyymmddThhmmssmmmZ>-<on|off>   empty objects; the newest marker of a backup
// overrides the `keep` flag of its backup.json, which is never rewritten.

export const KEEP_PREFIX = 'keep/';

export function keepMarkerKey(id: string, at: Date, keep: boolean): string {
  return `${KEEP_PREFIX}${id}/${at.toISOString().replace(/[-:.]/g, '')}-${keep ? 'on' : 'off'}`;
}

export function parseKeepMarkerKey(key: string): { id: string; stamp: string; keep: boolean } | undefined {
  const match = /^keep\/(\d{8}T\d{6}[FI])\/(\d{8}T\d{9}Z)-(on|off)$/.exec(key);
  return match ? { id: match[1]!, stamp: match[2]!, keep: match[3] === 'on' } : undefined;
}

// ---- locks --------------------------------------------------------------------------------------
// locks/<holder>.<exclusive|shared>.<lease seconds>.<generation>.json   one lease object per
// holder and refresh; the body says who holds it (host, pid, command, since).

export const LOCKS_PREFIX = 'locks/';

export type LockKind = 'exclusive' | 'shared';

export interface LeaseKey {
  holder: string;
  kind: LockKind;
  leaseSeconds: number;
  generation: number;
}

export function leaseKey(lease: LeaseKey): string {
  return `${LOCKS_PREFIX}${lease.holder}.${lease.kind}.${lease.leaseSeconds}.${String(lease.generation).padStart(8, '0')}.json`;
}

export function parseLeaseKey(key: string): LeaseKey | undefined {
  const match = /^locks\/([0-9a-f]{16})\.(exclusive|shared)\.(\d{1,9})\.(\d{8})\.json$/.exec(key);
  return match ? { holder: match[1]!, kind: match[2] as LockKind, leaseSeconds: Number(match[3]), generation: Number(match[4]) } : undefined;
}
