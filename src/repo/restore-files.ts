/**
 * Writing one file of a backup into a target directory: fetch each blob its extents need (one
 * ranged GET each), decode, write the blocks at their offsets. With `delta`, an existing file's
 * blocks are compared and only differing blocks written.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Extent, ManifestEntry } from './backup-manifest.ts';
import { readBlob } from './packs.ts';
import type { Repository } from './repository.ts';
import type { Semaphore } from '../util/concurrency.ts';

type FileEntry = Extract<ManifestEntry, { t: 'f' }>;

export interface RestoreFileOptions {
  blockSize: number;
  /** Bounds blob downloads in flight across all files. */
  fetchers: Semaphore;
  identities: readonly string[];
  delta: boolean;
  onBytes?: (bytes: number) => void;
}

export async function restoreFile(repo: Repository, entry: FileEntry, absolute: string, options: RestoreFileOptions): Promise<{ written: number }> {
  // O_NOFOLLOW: never write through a symlink planted at the file's own name.
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW | (options.delta ? 0 : constants.O_TRUNC);
  const handle = await open(absolute, options.delta ? constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW : flags, entry.m & 0o777);
  let written = 0;
  try {
    // Blobs are fetched and written in parallel (bounded by the shared `fetchers`), each once
    // for all the extents that point into it.
    const byBlob = new Map<string, Extent[]>();
    for (const extent of entry.x as Extent[]) {
      const key = `${extent[2]}@${extent[3]}`;
      const group = byBlob.get(key);
      if (group) group.push(extent);
      else byBlob.set(key, [extent]);
    }
    await Promise.all([...byBlob.values()].map(async (extents) => {
      const [, , packId, offset, length] = extents[0]!;
      const release = await options.fetchers.acquire();
      try {
        const content = await readBlob(repo, { packId, offset, length }, options.identities);
        for (const [first, count, , , , skip] of extents) {
          const start = skip * options.blockSize;
          const end = Math.min(start + count * options.blockSize, content.length);
          const data = content.subarray(start, end);
          const position = first * options.blockSize;
          if (options.delta) {
            written += await writeChangedBlocks(handle, data, position, options.blockSize);
          } else {
            await handle.write(data, 0, data.length, position);
            written += data.length;
          }
          options.onBytes?.(data.length);
        }
      } finally {
        release();
      }
    }));
    await handle.truncate(entry.s);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return { written };
}

async function writeChangedBlocks(handle: import('node:fs/promises').FileHandle, data: Buffer, position: number, blockSize: number): Promise<number> {
  const existing = Buffer.alloc(data.length);
  const { bytesRead } = await handle.read(existing, 0, data.length, position);
  let written = 0;
  for (let offset = 0; offset < data.length; offset += blockSize) {
    const end = Math.min(offset + blockSize, data.length);
    if (end <= bytesRead && existing.subarray(offset, end).equals(data.subarray(offset, end))) continue;
    await handle.write(data, offset, end - offset, position + offset);
    written += end - offset;
  }
  return written;
}
