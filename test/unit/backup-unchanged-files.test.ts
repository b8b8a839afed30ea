// An incremental's relation files that the WAL block map says did not change since the base
// (src/repo/backup-files.ts): referenced from the base whole, without being opened — most files
// of a small incremental (a database's catalogs) — but only while the file is as long as the
// base's; one that grew, or whose blocks the map names, is read as before. Real files and a
// real pack writer on a file repository; the map from WAL changes as wal-push decodes them.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { WalChanges } from '../../src/postgres/wal-records.ts';
import type { Extent, ManifestEntry } from '../../src/repo/backup-manifest.ts';
import { backupFile, BLOCKS_PER_BLOB, BufferPool, type FileBackupContext } from '../../src/repo/backup-files.ts';
import { packKey } from '../../src/repo/layout.ts';
import { PackWriter } from '../../src/repo/packs.ts';
import type { Repository } from '../../src/repo/repository.ts';
import { ChangedBlocks } from '../../src/repo/wal-block-map.ts';
import { FileStorage } from '../../src/storage/file.ts';
import { Semaphore } from '../../src/util/concurrency.ts';
import { DirectReads } from '../../src/util/direct-io.ts';

const BLOCK = 8192;
const BASE_START_LSN = 0x3000000;

/** `count` pages whose LSN is `lsn` and whose bytes tell them apart. */
function pages(count: number, lsn: number, seed: number): Buffer {
  const out = Buffer.alloc(count * BLOCK);
  for (let i = 0; i < count; i++) {
    out.writeUInt32LE(0, i * BLOCK); // pd_lsn: high half
    out.writeUInt32LE(lsn, i * BLOCK + 4); // low half
    out.fill((seed + i) % 251, i * BLOCK + 24, (i + 1) * BLOCK);
  }
  return out;
}

function setup(t: { after: (fn: () => void) => void }, changes: WalChanges) {
  const root = mkdtempSync(join(tmpdir(), 'pgark-unchanged-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const repo = { storage: new FileStorage(join(root, 'repo')) } as unknown as Repository;
  const packs = new PackWriter(repo, '', { targetSize: 4 * 1024 * 1024, maxUploads: 1 });
  const walChanges = new ChangedBlocks();
  walChanges.add(changes);
  const format = { codec: 'none' as const, recipients: [] };
  const ctx: FileBackupContext = {
    blockSize: BLOCK,
    encoders: new Semaphore(2),
    buffers: new BufferPool(BLOCKS_PER_BLOB * BLOCK),
    reads: new DirectReads(false),
    format,
    scatteredFormat: format,
    packs,
    baseStartLsn: BASE_START_LSN,
    walChanges,
    verifyChecksumsBefore: undefined,
  };
  return { root, ctx, packs };
}

const BASE_EXTENTS: Extent[] = [[0, 3, 'base-pack', 0, 3 * BLOCK, 0], [3, 2, 'other-pack', 100, 2 * BLOCK, 0]];
const base = (size: number): Extract<ManifestEntry, { t: 'f' }> => ({ t: 'f', p: 'base/5/16384', m: 0o600, s: size, mt: 1, x: BASE_EXTENTS });

test('a relation file the WAL did not touch, as long as the base\'s, is the base\'s: not opened, not read', async (t) => {
  const wal = new WalChanges();
  wal.addBlock(1663, 5, 16999, 0, 1); // another relation changed
  wal.addBlock(1663, 5, 16384, 0, 131072 + 4); // this relation's next segment file changed, not this one
  const { root, ctx } = setup(t, wal);
  // No file at that path: opening it would fail (ENOENT).
  const file = { path: 'base/5/16384', absolute: join(root, 'missing'), mode: 0o600, size: 5 * BLOCK, mtimeMs: 2000, relation: true };
  const result = await backupFile(file, base(5 * BLOCK), ctx);
  assert.deepEqual(result.entry, { t: 'f', p: 'base/5/16384', m: 0o600, s: 5 * BLOCK, mt: 2000, x: BASE_EXTENTS });
  assert.equal(result.readBytes, 0);
  assert.equal(result.blocksStored, 0);
  assert.equal(result.blocksReferenced, 5);
});

test('a file longer than the base\'s, or with a changed block, is read: the new and changed blocks are stored', async (t) => {
  const wal = new WalChanges();
  wal.addBlock(1663, 5, 16385, 0, 2); // block 2 of the second relation
  const { root, ctx, packs } = setup(t, wal);
  // grew by two blocks after the base (not named by the map: written before it, or unlogged)
  const grown = Buffer.concat([pages(5, 0x1000, 1), pages(2, 0x1000, 9)]);
  writeFileSync(join(root, '16384'), grown);
  const first = await backupFile({ path: 'base/5/16384', absolute: join(root, '16384'), mode: 0o600, size: grown.length, mtimeMs: 1, relation: true }, base(5 * BLOCK), ctx);
  assert.equal(first.entry.s, 7 * BLOCK);
  assert.equal(first.blocksReferenced, 5);
  assert.equal(first.blocksStored, 2);
  assert.equal(first.readBytes, 2 * BLOCK, 'only the blocks past the base\'s end were read');

  const changed = pages(5, 0x1000, 20);
  writeFileSync(join(root, '16385'), changed);
  const second = await backupFile({ path: 'base/5/16385', absolute: join(root, '16385'), mode: 0o600, size: changed.length, mtimeMs: 1, relation: true }, { ...base(5 * BLOCK), p: 'base/5/16385' }, ctx);
  assert.equal(second.blocksStored, 1);
  assert.equal(second.blocksReferenced, 4);
  await packs.finish();
  // the stored blocks are the file's own
  const stored = [...first.entry.x, ...second.entry.x].filter(([, , packId]) => !['base-pack', 'other-pack'].includes(packId));
  const contents = stored.map(([, count, packId, offset, , skip]) => readFileSync(join(root, 'repo', packKey(packId))).subarray(offset + skip * BLOCK, offset + (skip + count) * BLOCK));
  assert.ok(contents[0]!.equals(grown.subarray(5 * BLOCK)), 'blocks 5-6 of the grown file');
  assert.ok(contents[1]!.equals(changed.subarray(2 * BLOCK, 3 * BLOCK)), 'block 2 of the changed file');
});
