// PackWriter under slow uploads: blobs added concurrently while a seal waits for an upload slot
// must each land whole in a pack within the target size, exactly where add() said — real
// files, uploads slowed down. (A blob that no longer fitted the pack the others had opened
// meanwhile was appended anyway and cut at the end of the buffer: a pack shorter than the
// manifest said.)
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { test } from 'node:test';
import { packKey } from '../../src/repo/layout.ts';
import { PackWriter } from '../../src/repo/packs.ts';
import type { Repository } from '../../src/repo/repository.ts';
import { DelegatingStorage } from '../../src/storage/delegating.ts';
import { FileStorage } from '../../src/storage/file.ts';
import type { PutOptions } from '../../src/storage/types.ts';
import { prng } from '../support/random.ts';

class SlowStorage extends DelegatingStorage {
  override async put(key: string, body: Readable | Buffer, options: PutOptions): Promise<{ size: number }> {
    await new Promise((resolve) => setTimeout(resolve, 30));
    return super.put(key, body, options);
  }
}

test('blobs added while a pack waits for an upload slot land whole, within the target size', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'pgark-packs-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const storage = new SlowStorage(new FileStorage(root));
  const repo = { storage } as unknown as Repository;
  const targetSize = 4096;
  const packs = new PackWriter(repo, '.zst', { targetSize, maxUploads: 1 });
  const random = prng(5);
  const blobs = Array.from({ length: 400 }, (_, i) => Buffer.alloc(200 + Math.floor(random() * 1800), i % 251));
  // As the backup's encoders do: several adds in flight at once.
  const locations = await Promise.all(blobs.map(async (blob, i) => {
    await new Promise((resolve) => setTimeout(resolve, Math.floor(i / 8)));
    return packs.add(blob);
  }));
  await packs.finish();
  const contents = new Map<string, Buffer>();
  blobs.forEach((blob, i) => {
    const { packId, offset, length } = locations[i]!;
    const pack = contents.get(packId) ?? readFileSync(join(root, packKey(packId)));
    contents.set(packId, pack);
    assert.ok(pack.length <= targetSize, `pack ${packId} is ${pack.length} bytes`);
    assert.equal(length, blob.length);
    assert.ok(pack.subarray(offset, offset + length).equals(blob), `blob ${i} is whole at ${offset} in pack ${packId} (${pack.length} bytes)`);
  });
  assert.ok(contents.size > 100, `${contents.size} packs`);
});
