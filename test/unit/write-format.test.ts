import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../../src/config/load.ts';
import { Repository } from '../../src/repo/repository.ts';

const dir = mkdtempSync(join(tmpdir(), 'pgark-write-format-'));

async function levels(settings: string): Promise<{ data: number | undefined; other: number | undefined }> {
  const configPath = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(configPath, `repo: file://${join(dir, 'repo')}\n${settings}`);
  const repo = await Repository.open(loadConfig({ env: {}, flags: {}, configPath }), { requireInit: false });
  try {
    return { data: (await repo.writeFormat('backup data')).level, other: (await repo.writeFormat()).level };
  } finally {
    await repo.close();
  }
}

test('zstd: backup data at level 1, WAL and manifests at 3 by default', async () => {
  assert.deepEqual(await levels(''), { data: 1, other: 3 });
});

test('an explicit compression-level applies to backup data and everything else', async () => {
  assert.deepEqual(await levels('compression-level: 3\n'), { data: 3, other: 3 });
  assert.deepEqual(await levels('compression-level: 7\n'), { data: 7, other: 7 });
});

test('gzip keeps its one default level for everything', async () => {
  assert.deepEqual(await levels('compression: gzip\n'), { data: 6, other: 6 });
});
