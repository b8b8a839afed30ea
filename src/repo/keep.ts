/**
 * Keep markers: `pgark keep ID` / `pgark keep --off ID` add an empty marker object instead of
 * rewriting backup.json (the repository stays append-only between expiries). The newest marker
 * of a backup decides; without one, the `keep` flag of its summary (`pgark backup --keep`).
 */
import type { BackupSummary } from './backup-manifest.ts';
import { KEEP_PREFIX, keepMarkerKey, parseKeepMarkerKey } from './layout.ts';
import type { Repository } from './repository.ts';

export interface KeepMarkers {
  /** Newest marker per backup id. */
  newest: Map<string, boolean>;
  /** Every marker key per backup id (expire removes those of deleted backups). */
  keys: Map<string, string[]>;
}

export async function readKeepMarkers(repo: Repository): Promise<KeepMarkers> {
  const newestStamp = new Map<string, string>();
  const newest = new Map<string, boolean>();
  const keys = new Map<string, string[]>();
  for await (const object of repo.storage.list(KEEP_PREFIX)) {
    const marker = parseKeepMarkerKey(object.key);
    if (!marker) continue;
    keys.set(marker.id, [...(keys.get(marker.id) ?? []), object.key]);
    if ((newestStamp.get(marker.id) ?? '') <= marker.stamp) {
      newestStamp.set(marker.id, marker.stamp);
      newest.set(marker.id, marker.keep);
    }
  }
  return { newest, keys };
}

export function isKept(backup: BackupSummary, markers: KeepMarkers): boolean {
  return markers.newest.get(backup.id) ?? backup.keep;
}

export async function writeKeepMarker(repo: Repository, id: string, keep: boolean): Promise<string> {
  const key = keepMarkerKey(id, new Date(), keep);
  await repo.storage.put(key, Buffer.alloc(0), { kind: 'meta' });
  return key;
}
