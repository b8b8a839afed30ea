// The WAL block map (src/postgres/wal-records.ts, src/repo/wal-block-map.ts) against real
// PostgreSQL 13, 15 and 18, with the pages themselves as the oracle. Between two checkpoints, a
// workload of every kind of change an incremental must see — updates, inserts, deletes, VACUUM
// that truncates, TRUNCATE, CREATE/DROP TABLE, CREATE INDEX, VACUUM FULL, CLUSTER, TOAST,
// CREATE DATABASE, a table moved to another tablespace, a sequence — then the segments of pg_wal
// (1 MiB, so that many records straddle two of them) are decoded, and every page of every
// relation whose LSN is past the first checkpoint's redo point must be one the map says changed.
// Full-page images are compressed (wal_compression), whose block headers differ.
// (That is exactly what an incremental needs: a page it does not read must be the base's.)
// The map must also leave most untouched pages out, or it would save nothing.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { pageLsn } from '../../src/postgres/page.ts';
import { joinSplitRecord, segmentChanges, WalChanges } from '../../src/postgres/wal-records.ts';
import { parseLsn, segmentName, segmentNumberOfLsn } from '../../src/postgres/wal.ts';
import { ChangedBlocks } from '../../src/repo/wal-block-map.ts';
import { mkdirTestUser } from '../support/wal.ts';
import { createCluster, type Cluster } from '../support/postgres.ts';

const SEGMENT = 1024 * 1024;
const BLOCK = 8192;

async function workload(c: Cluster, tablespaceDir: string): Promise<void> {
  await c.sql(`UPDATE t SET v = md5(v) WHERE id % 97 = 0`);
  await c.sql(`INSERT INTO t SELECT g, md5(g::text) FROM generate_series(30001, 31000) g`);
  await c.sql(`DELETE FROM t WHERE id > 28000`);
  await c.sql('VACUUM t'); // truncates the emptied tail
  await c.sql('TRUNCATE small');
  await c.sql(`INSERT INTO small SELECT g, repeat('x', 100) FROM generate_series(1, 200) g`);
  await c.sql(`CREATE TABLE fresh (id int PRIMARY KEY, big text)`);
  await c.sql(`INSERT INTO fresh SELECT g, repeat(md5(g::text), 400) FROM generate_series(1, 50) g`); // TOAST
  await c.sql('DROP TABLE gone');
  await c.sql('CREATE INDEX t_v ON t (v)');
  await c.sql('VACUUM FULL rewritten');
  await c.sql('CLUSTER clustered USING clustered_pkey');
  await c.sql(`SELECT nextval('s') FROM generate_series(1, 100)`);
  await c.sql('CREATE DATABASE db2');
  await c.sql(`CREATE TABLESPACE ts1 LOCATION '${tablespaceDir}'`);
  await c.sql('ALTER TABLE moved SET TABLESPACE ts1');
  await c.sql(`UPDATE moved SET v = 'moved' WHERE id < 10`);
  await c.sql(`UPDATE t SET v = 'last' WHERE id = 1`);
}

/** Relation main-fork files under `dir`, as paths relative to PGDATA. */
function relationFiles(dataDir: string): string[] {
  const out: string[] = [];
  const walk = (relative: string) => {
    for (const name of readdirSync(path.join(dataDir, relative))) {
      const child = relative ? `${relative}/${name}` : name;
      const stat = statSync(path.join(dataDir, child));
      if (stat.isDirectory()) walk(child);
      else if (/^(?:global|base\/\d+|pg_tblspc\/\d+\/[^/]+\/\d+)\/\d+(?:\.\d+)?$/.test(child)) out.push(child);
    }
  };
  for (const top of ['base', 'global', 'pg_tblspc']) walk(top);
  return out;
}

for (const major of [13, 15, 18]) {
  test(`PostgreSQL ${major}: every page changed between two checkpoints is in the WAL block map`, { timeout: 300_000 }, async (t) => {
    // Compressed full-page images have another block-header layout (and 15 changed its flags).
    const walCompression = major < 15 ? 'on' : 'pglz';
    const c = await createCluster({ major, walSegmentSizeMB: 1, settings: { wal_keep_size: '1GB', max_wal_size: '2GB', autovacuum: 'off', wal_level: 'replica', wal_compression: walCompression } });
    t.after(() => c.destroy());
    const tablespaceDir = mkdirTestUser(path.join(c.baseDir, 'ts1'));
    await c.sql(`CREATE TABLE t (id int PRIMARY KEY, v text)`);
    await c.sql(`INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 30000) g`);
    for (const name of ['small', 'gone', 'rewritten', 'clustered', 'moved']) {
      await c.sql(`CREATE TABLE ${name} (id int PRIMARY KEY, v text)`);
      await c.sql(`INSERT INTO ${name} SELECT g, md5(g::text) FROM generate_series(1, 3000) g`);
    }
    await c.sql('CREATE SEQUENCE s');
    await c.sql('CHECKPOINT');
    const fromLsn = parseLsn(await c.sql('SELECT redo_lsn FROM pg_control_checkpoint()'));

    await workload(c, tablespaceDir);
    await c.sql('CHECKPOINT');
    const toLsn = parseLsn(await c.sql('SELECT redo_lsn FROM pg_control_checkpoint()'));
    const timeline = Number(await c.sql('SELECT timeline_id FROM pg_control_checkpoint()'));

    // Decode the segments from the first redo point to the second, as a backup would.
    const changed = new ChangedBlocks();
    const first = segmentNumberOfLsn(fromLsn, SEGMENT);
    const last = segmentNumberOfLsn(toLsn, SEGMENT);
    let previousTail: Buffer | undefined;
    let joins = 0;
    for (let segno = first; segno <= last; segno++) {
      const name = segmentName(timeline, segno, SEGMENT);
      const content = readFileSync(path.join(c.dataDir, 'pg_wal', name));
      const decoded = segmentChanges(content, segno === last ? toLsn : undefined);
      assert.ok(decoded.complete, `${name} decoded to its end`);
      changed.add(decoded.changes);
      if (previousTail) {
        assert.ok(decoded.head, `${name} continues the record the previous segment ends with`);
        const split = new WalChanges();
        assert.ok(joinSplitRecord(previousTail, decoded.head, content.readUInt16LE(0), split), `the record split before ${name} decodes`);
        changed.add(split);
        joins++;
      }
      previousTail = decoded.tail;
    }

    let changedPages = 0;
    let unchangedPages = 0;
    let unchangedLeftOut = 0;
    const missed: string[] = [];
    for (const file of relationFiles(c.dataDir)) {
      const data = readFileSync(path.join(c.dataDir, file));
      const changes = changed.forFile(file);
      assert.ok(changes, file);
      for (let block = 0; block * BLOCK < data.length; block++) {
        const lsn = pageLsn(data, block * BLOCK);
        const inMap = changes.kind === 'all' || block >= changes.limit || changes.changed(block);
        if (lsn >= Number(fromLsn)) {
          changedPages++;
          if (!inMap && missed.length < 10) missed.push(`${file} block ${block} (LSN ${lsn.toString(16)})`);
        } else if (lsn > 0) {
          unchangedPages++;
          if (!inMap) unchangedLeftOut++;
        }
      }
    }
    t.diagnostic(`PostgreSQL ${major}: ${last - first + 1} segments (${joins} records split between two), ${changedPages} pages changed, ${unchangedPages} unchanged of which ${unchangedLeftOut} left out of the map`);
    assert.deepEqual(missed, [], 'changed pages the map does not name');
    assert.ok(changedPages > 500, 'the workload changed pages');
    assert.ok(unchangedLeftOut > unchangedPages * 0.5, 'the map leaves most unchanged pages out');
  });
}
