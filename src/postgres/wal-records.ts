/**
 * Which relation blocks the WAL records of one segment change: the block references of every
 * record, plus the file-level operations that change blocks without naming them (creating or
 * truncating a relation fork, creating or dropping a database). PostgreSQL 17's WAL summarizer
 * (walsummarizer.c) keeps the same facts for its incremental backups; pgark extracts them
 * while it archives each segment (wal-block-map.ts), so that an incremental backup reads only
 * the blocks the WAL says changed instead of every page of every relation.
 *
 * Only record headers are decoded, never their data. Facts from PostgreSQL 13-18's
 * xlog_internal.h, xlogrecord.h and xlogreader.c (DecodeXLogRecord):
 * - A segment is a run of XLOG_BLCKSZ pages; each page starts with a header (24 bytes; the first
 *   page of a segment has a 40-byte long header). A record may continue on following pages
 *   (and segments): each such page has XLP_FIRST_IS_CONTRECORD and xlp_rem_len = the bytes of
 *   the record still to come. Records start MAXALIGNed (8 bytes).
 * - A record: XLogRecord (24 bytes: xl_tot_len u32, xl_xid u32, xl_prev u64, xl_info u8,
 *   xl_rmid u8, 2 pad, xl_crc u32), then headers introduced by an id byte: 0-32 a block
 *   reference, 255/254 the main data length (1 or 4 bytes; last header), 253 a replication
 *   origin (2 bytes), 252 the top-level xid (4 bytes, 14+). Then block data, then main data.
 * - A block reference: fork_flags u8 (fork in the low 4 bits, 0x10 has image, 0x20 has data,
 *   0x40 will init, 0x80 same relation as the previous one), data_length u16; with an image
 *   bimg_len u16, hole_offset u16, bimg_info u8 and, if the image is compressed and has a hole,
 *   hole_length u16; unless "same relation": RelFileLocator (spcOid, dbOid, relNumber: 3 × u32);
 *   then the block number u32.
 */

/** XLogRecord and page header sizes. */
const RECORD_HEADER = 24;
const SHORT_PAGE_HEADER = 24;
const LONG_PAGE_HEADER = 40;
const XLP_FIRST_IS_CONTRECORD = 0x0001;
const XLP_LONG_HEADER = 0x0002;

const XLR_MAX_BLOCK_ID = 32;
const XLR_BLOCK_ID_DATA_SHORT = 255;
const XLR_BLOCK_ID_DATA_LONG = 254;
const XLR_BLOCK_ID_ORIGIN = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID = 252;

const BKPBLOCK_FORK_MASK = 0x0f;
const BKPBLOCK_HAS_IMAGE = 0x10;
const BKPBLOCK_SAME_REL = 0x80;
const BKPIMAGE_HAS_HOLE = 0x01;
/** bimg_info's compression bits: one flag up to 14, one per method from 15 on. */
const BKPIMAGE_COMPRESSED_UPTO_14 = 0x02;
const BKPIMAGE_COMPRESSED_FROM_15 = 0x04 | 0x08 | 0x10;
/** XLOG_PAGE_MAGIC of PostgreSQL 15 (0xD110); 13 is 0xD106, 14 0xD10D, 18 0xD118. */
const PAGE_MAGIC_15 = 0xd110;

const RM_XLOG_ID = 0;
const RM_SMGR_ID = 2;
const RM_DBASE_ID = 4;
const XLOG_SWITCH = 0x40;
const XLOG_SMGR_CREATE = 0x10;
const XLOG_SMGR_TRUNCATE = 0x20;
const SMGR_TRUNCATE_HEAP = 0x0001;
const SMGR_TRUNCATE_VM = 0x0002;
const SMGR_TRUNCATE_FSM = 0x0004;
const MAIN_FORKNUM = 0;
const FSM_FORKNUM = 1;
const VISIBILITYMAP_FORKNUM = 2;

/**
 * The most bytes of a record's beginning that its headers can take: XLogRecord, 33 block
 * references of at most 27 bytes, origin, top-level xid and main data length come to 928. A
 * record split between two segments is joined from this much of either side.
 */
export const RECORD_HEAD_MAX = 1024;

/** Blocks of one relation fork that WAL changed. */
export interface ForkChanges {
  /** Block numbers named by records (unsorted, may repeat). */
  blocks: number[];
  /**
   * The fork was created or truncated: every block from here on changed (0 = the whole fork).
   * The lowest seen.
   */
  limit?: number;
}

/** What one stretch of WAL changed, keyed by forkKey(). */
export class WalChanges {
  readonly forks = new Map<string, ForkChanges>();
  /** Databases created or dropped (and so every file in them changed), by OID. */
  readonly databases = new Set<number>();
  /**
   * The same forks by relation number, for the hot path: a segment names 100,000s of blocks,
   * and a string key for each cost more than decoding the records.
   */
  private readonly byRelation = new Map<number, { spc: number; db: number; fork: number; changes: ForkChanges }[]>();

  private fork(spc: number, db: number, rel: number, fork: number): ForkChanges {
    let candidates = this.byRelation.get(rel);
    if (!candidates) this.byRelation.set(rel, (candidates = []));
    for (const candidate of candidates) if (candidate.spc === spc && candidate.db === db && candidate.fork === fork) return candidate.changes;
    const changes: ForkChanges = { blocks: [] };
    candidates.push({ spc, db, fork, changes });
    this.forks.set(forkKey(spc, db, rel, fork), changes);
    return changes;
  }

  // The fork of the last addBlock: records often name the same relation, and page, as the one before.
  private lastSpc = -1;
  private lastDb = -1;
  private lastRel = -1;
  private lastFork = -1;
  private lastChanges: ForkChanges | undefined;

  addBlock(spc: number, db: number, rel: number, fork: number, block: number): void {
    let changes = this.lastChanges;
    if (!changes || rel !== this.lastRel || spc !== this.lastSpc || db !== this.lastDb || fork !== this.lastFork) {
      changes = this.lastChanges = this.fork(spc, db, rel, fork);
      this.lastSpc = spc;
      this.lastDb = db;
      this.lastRel = rel;
      this.lastFork = fork;
    }
    const { blocks } = changes;
    if (blocks[blocks.length - 1] !== block) blocks.push(block);
  }

  addLimit(spc: number, db: number, rel: number, fork: number, limit: number): void {
    const changes = this.fork(spc, db, rel, fork);
    changes.limit = changes.limit === undefined ? limit : Math.min(changes.limit, limit);
  }

  merge(other: WalChanges): void {
    for (const [key, theirs] of other.forks) {
      const [spc, db, rel, fork] = key.split('/').map(Number) as [number, number, number, number];
      const ours = this.fork(spc, db, rel, fork);
      for (const block of theirs.blocks) ours.blocks.push(block);
      if (theirs.limit !== undefined) ours.limit = ours.limit === undefined ? theirs.limit : Math.min(ours.limit, theirs.limit);
    }
    for (const db of other.databases) this.databases.add(db);
  }
}

export function forkKey(spc: number, db: number, rel: number, fork: number): string {
  return `${spc}/${db}/${rel}/${fork}`;
}

/** The result of decoding one segment. */
export interface SegmentChanges {
  changes: WalChanges;
  /**
   * Every record of the segment was decoded up to its end (or up to a WAL switch, or to
   * `stopAt`), except the ones split at its edges, which `head` and `tail` hold. False when the
   * segment holds something this decoder does not understand: then nothing can be concluded
   * from it.
   */
  complete: boolean;
  /** The segment starts inside a record begun in the previous one: up to RECORD_HEAD_MAX of its remaining bytes. */
  head?: Buffer;
  /** The last record starts here and continues in the next segment, before its headers ended: its bytes here. */
  tail?: Buffer;
}

class UnknownWal extends Error {}

/** A cursor over the record bytes of a segment, stepping over page headers. */
class SegmentReader {
  readonly data: Buffer;
  readonly pageSize: number;
  readonly startLsn: bigint;
  readonly magic: number;
  /** Physical offset in the segment. */
  position = 0;

  constructor(data: Buffer) {
    this.data = data;
    if (data.length < LONG_PAGE_HEADER || (data.readUInt16LE(2) & XLP_LONG_HEADER) === 0) throw new UnknownWal('no long page header');
    this.magic = data.readUInt16LE(0);
    this.startLsn = data.readBigUInt64LE(8);
    this.pageSize = data.readUInt32LE(36);
    const segmentSize = data.readUInt32LE(32);
    if (segmentSize !== data.length || this.pageSize < 1024 || segmentSize % this.pageSize !== 0) throw new UnknownWal('unexpected segment or page size');
  }

  get atEnd(): boolean {
    return this.position >= this.data.length;
  }

  /** Checks the header of the page starting at `offset` and returns its xlp_info and xlp_rem_len. */
  pageHeader(offset: number): { info: number; remaining: number; size: number } {
    const { data } = this;
    if (data.readUInt16LE(offset) !== this.magic) throw new UnknownWal(`bad page magic at ${offset}`);
    if (data.readBigUInt64LE(offset + 8) !== this.startLsn + BigInt(offset)) throw new UnknownWal(`page at ${offset} has another address`);
    const info = data.readUInt16LE(offset + 2);
    return { info, remaining: data.readUInt32LE(offset + 16), size: (info & XLP_LONG_HEADER) !== 0 ? LONG_PAGE_HEADER : SHORT_PAGE_HEADER };
  }

  /** Moves past the page header when at a page boundary. */
  skipPageHeader(): { info: number; remaining: number } | undefined {
    if (this.position % this.pageSize !== 0 || this.atEnd) return undefined;
    const header = this.pageHeader(this.position);
    this.position += header.size;
    return header;
  }

  /**
   * Copies up to `length` record bytes from the position into `out` (page headers stepped
   * over) and moves past them, stopping early at the segment's end. Returns the bytes copied.
   */
  take(length: number, out: Buffer | undefined, outOffset = 0): number {
    if (out === undefined && length <= this.onPage) {
      this.position += length; // the common case: the record ends on this page
      return length;
    }
    let copied = 0;
    while (copied < length && !this.atEnd) {
      if (this.position % this.pageSize === 0) {
        const header = this.pageHeader(this.position);
        if ((header.info & XLP_FIRST_IS_CONTRECORD) === 0 || header.remaining !== length - copied) throw new UnknownWal(`page at ${this.position} does not continue the record`);
        this.position += header.size;
      }
      const pageEnd = this.position - (this.position % this.pageSize) + this.pageSize;
      const step = Math.min(length - copied, pageEnd - this.position);
      if (out && outOffset + copied < out.length) this.data.copy(out, outOffset + copied, this.position, this.position + Math.min(step, out.length - outOffset - copied));
      this.position += step;
      copied += step;
    }
    return copied;
  }

  /** Bytes left on the current page. */
  get onPage(): number {
    return this.pageSize - (this.position % this.pageSize);
  }
}

const maxAlign = (n: number): number => (n + 7) & ~7;

/**
 * Decodes the records of one WAL segment (the whole file, as archived). With `stopAt`, records
 * starting at or after that LSN are not decoded (a segment still being written).
 */
export function segmentChanges(segment: Buffer, stopAt?: bigint): SegmentChanges {
  const changes = new WalChanges();
  let reader: SegmentReader;
  try {
    reader = new SegmentReader(segment);
  } catch {
    return { changes, complete: false };
  }
  const compressedBits = reader.magic < PAGE_MAGIC_15 ? BKPIMAGE_COMPRESSED_UPTO_14 : BKPIMAGE_COMPRESSED_FROM_15;
  const scratch = Buffer.allocUnsafe(RECORD_HEAD_MAX);
  const result: SegmentChanges = { changes, complete: false };
  try {
    // The rest of a record begun in the previous segment.
    const first = reader.skipPageHeader()!;
    if ((first.info & XLP_FIRST_IS_CONTRECORD) !== 0 && first.remaining > 0) {
      const head = Buffer.alloc(Math.min(first.remaining, RECORD_HEAD_MAX));
      // take() expects the first page's rest to continue the record too: copy it by hand.
      const onFirstPage = Math.min(first.remaining, reader.onPage);
      segment.copy(head, 0, reader.position, reader.position + Math.min(onFirstPage, head.length));
      reader.position += onFirstPage;
      if (first.remaining > onFirstPage) reader.take(first.remaining - onFirstPage, head, onFirstPage);
      result.head = head;
      reader.position = maxAlign(reader.position);
    }
    for (;;) {
      if (reader.position % reader.pageSize === 0) {
        if (reader.atEnd) break;
        const header = reader.skipPageHeader()!;
        // A record that ended exactly at the page end: the next page starts with a new one.
        if ((header.info & XLP_FIRST_IS_CONTRECORD) !== 0 && header.remaining !== 0) throw new UnknownWal('unexpected continuation');
      }
      const lsn = reader.startLsn + BigInt(reader.position);
      if (stopAt !== undefined && lsn >= stopAt) break;
      const totalLength = segment.readUInt32LE(reader.position);
      if (totalLength === 0) throw new UnknownWal('end of WAL inside the segment'); // not a complete segment
      if (totalLength < RECORD_HEADER) throw new UnknownWal(`record of ${totalLength} bytes`);
      const wanted = Math.min(totalLength, RECORD_HEAD_MAX);
      let decoded: boolean | 'switch';
      if (wanted <= reader.onPage) {
        const start = reader.position;
        reader.take(totalLength, undefined);
        decoded = decodeRecord(segment, start, wanted, totalLength, compressedBits, changes, false);
      } else {
        const copied = reader.take(totalLength, scratch);
        if (copied < totalLength) {
          // Split at the segment's end: decode here if its headers made it, else leave them to the join.
          const have = Math.min(copied, RECORD_HEAD_MAX);
          if (!decodeRecord(scratch, 0, have, totalLength, compressedBits, changes, true)) result.tail = Buffer.from(scratch.subarray(0, have));
          break;
        }
        decoded = decodeRecord(scratch, 0, wanted, totalLength, compressedBits, changes, false);
      }
      if (decoded === 'switch') break;
      reader.position = maxAlign(reader.position);
    }
    result.complete = true;
  } catch (error) {
    if (!(error instanceof UnknownWal || error instanceof RangeError)) throw error;
    return { changes, complete: false };
  }
  return result;
}

/**
 * Decodes a record split between two segments from the end of one (`tail`) and the start of
 * the next (`head`). False when they do not make a record this decoder understands.
 */
export function joinSplitRecord(tail: Buffer, head: Buffer, pageMagic: number, changes: WalChanges): boolean {
  const bytes = Buffer.concat([tail, head]).subarray(0, RECORD_HEAD_MAX);
  if (bytes.length < RECORD_HEADER) return false;
  const totalLength = bytes.readUInt32LE(0);
  const compressedBits = pageMagic < PAGE_MAGIC_15 ? BKPIMAGE_COMPRESSED_UPTO_14 : BKPIMAGE_COMPRESSED_FROM_15;
  try {
    return decodeRecord(bytes, 0, Math.min(totalLength, bytes.length), totalLength, compressedBits, changes, false) !== false;
  } catch (error) {
    if (error instanceof UnknownWal || error instanceof RangeError) return false;
    throw error;
  }
}

/** The record's headers run past the bytes at hand: false (wait for the join) when partial, else throw. */
function shortOf(partial: boolean): true {
  if (partial) return true;
  throw new UnknownWal('record headers longer than expected');
}

/** Block references of the record being decoded: spc, db, rel, fork, block for each (33 at most). */
const pendingBlocks = new Float64Array((XLR_MAX_BLOCK_ID + 1) * 5);

/**
 * Records the changes of one record from its first bytes: `available` bytes of `buffer` from
 * `start` (at most RECORD_HEAD_MAX of its `totalLength`). With `partial`, they may end before
 * the headers do: then it returns false and records nothing. Returns 'switch' for a WAL switch
 * (the rest of the segment is empty). Throws UnknownWal (or RangeError) on a record that makes
 * no sense.
 */
function decodeRecord(
  buffer: Buffer,
  start: number,
  available: number,
  totalLength: number,
  compressedBits: number,
  changes: WalChanges,
  partial: boolean,
): boolean | 'switch' {
  if (available < RECORD_HEADER) {
    if (partial) return false;
    throw new UnknownWal('short record');
  }
  const end = start + available;
  const info = buffer[start + 16]!;
  const rmid = buffer[start + 17]!;
  // Decode the headers first, then record: a partial record must add nothing.
  let blockCount = 0;
  let offset = start + RECORD_HEADER;
  let remaining = totalLength - RECORD_HEADER;
  let dataTotal = 0;
  let mainLength = 0;
  let spc = -1, db = -1, rel = -1;
  while (remaining > dataTotal) {
    if (offset + 1 > end && shortOf(partial)) return false;
    const id = buffer[offset]!;
    offset += 1;
    remaining -= 1;
    if (id === XLR_BLOCK_ID_DATA_SHORT) {
      if (offset + 1 > end && shortOf(partial)) return false;
      mainLength = buffer[offset]!;
      offset += 1;
      remaining -= 1;
      dataTotal += mainLength;
      break;
    }
    if (id === XLR_BLOCK_ID_DATA_LONG) {
      if (offset + 4 > end && shortOf(partial)) return false;
      mainLength = buffer.readUInt32LE(offset);
      offset += 4;
      remaining -= 4;
      dataTotal += mainLength;
      break;
    }
    if (id === XLR_BLOCK_ID_ORIGIN) {
      if (offset + 2 > end && shortOf(partial)) return false;
      offset += 2;
      remaining -= 2;
      continue;
    }
    if (id === XLR_BLOCK_ID_TOPLEVEL_XID) {
      if (offset + 4 > end && shortOf(partial)) return false;
      offset += 4;
      remaining -= 4;
      continue;
    }
    if (id > XLR_MAX_BLOCK_ID) throw new UnknownWal(`block id ${id}`);
    if (offset + 3 > end && shortOf(partial)) return false;
    const forkFlags = buffer[offset]!;
    const dataLength = buffer.readUInt16LE(offset + 1);
    offset += 3;
    remaining -= 3;
    dataTotal += dataLength;
    if ((forkFlags & BKPBLOCK_HAS_IMAGE) !== 0) {
      if (offset + 5 > end && shortOf(partial)) return false;
      const imageLength = buffer.readUInt16LE(offset);
      const imageInfo = buffer[offset + 4]!;
      offset += 5;
      remaining -= 5;
      dataTotal += imageLength;
      if ((imageInfo & BKPIMAGE_HAS_HOLE) !== 0 && (imageInfo & compressedBits) !== 0) {
        if (offset + 2 > end && shortOf(partial)) return false;
        offset += 2;
        remaining -= 2;
      }
    }
    if ((forkFlags & BKPBLOCK_SAME_REL) === 0) {
      if (offset + 12 > end && shortOf(partial)) return false;
      spc = buffer.readUInt32LE(offset);
      db = buffer.readUInt32LE(offset + 4);
      rel = buffer.readUInt32LE(offset + 8);
      offset += 12;
      remaining -= 12;
    } else if (rel < 0) {
      throw new UnknownWal('"same relation" without a previous one');
    }
    if (offset + 4 > end && shortOf(partial)) return false;
    if (blockCount > XLR_MAX_BLOCK_ID) throw new UnknownWal('too many block references');
    const at = blockCount++ * 5;
    pendingBlocks[at] = spc;
    pendingBlocks[at + 1] = db;
    pendingBlocks[at + 2] = rel;
    pendingBlocks[at + 3] = forkFlags & BKPBLOCK_FORK_MASK;
    pendingBlocks[at + 4] = buffer.readUInt32LE(offset);
    offset += 4;
    remaining -= 4;
  }
  if (remaining !== dataTotal) throw new UnknownWal('record lengths do not add up');
  const kind = info & 0xf0;
  const fileLevel = rmid === RM_SMGR_ID || rmid === RM_DBASE_ID;
  // Those carry what they change in their main data, at the very end of the (short) record.
  if (fileLevel && totalLength > available) {
    if (partial) return false;
    throw new UnknownWal(`${rmid === RM_SMGR_ID ? 'storage' : 'database'} record of ${totalLength} bytes`);
  }
  for (let at = 0; at < blockCount * 5; at += 5) {
    changes.addBlock(pendingBlocks[at]!, pendingBlocks[at + 1]!, pendingBlocks[at + 2]!, pendingBlocks[at + 3]!, pendingBlocks[at + 4]!);
  }
  if (rmid === RM_XLOG_ID && kind === XLOG_SWITCH) return 'switch';
  if (!fileLevel) return true;
  const main = start + totalLength - mainLength;
  if (rmid === RM_DBASE_ID) {
    // Every database record (create by copy or by WAL, drop; 13-18) starts with the database OID.
    changes.databases.add(buffer.readUInt32LE(main));
  } else if (kind === XLOG_SMGR_CREATE) {
    // xl_smgr_create: RelFileLocator, ForkNumber
    changes.addLimit(buffer.readUInt32LE(main), buffer.readUInt32LE(main + 4), buffer.readUInt32LE(main + 8), buffer.readInt32LE(main + 12), 0);
  } else if (kind === XLOG_SMGR_TRUNCATE) {
    // xl_smgr_truncate: BlockNumber, RelFileLocator, flags
    const block = buffer.readUInt32LE(main);
    const [s, d, r] = [buffer.readUInt32LE(main + 4), buffer.readUInt32LE(main + 8), buffer.readUInt32LE(main + 12)];
    const flags = buffer.readInt32LE(main + 16);
    if (flags & SMGR_TRUNCATE_HEAP) changes.addLimit(s, d, r, MAIN_FORKNUM, block);
    // The map forks are cut at blocks derived from `block`: count them changed from the start.
    if (flags & SMGR_TRUNCATE_FSM) changes.addLimit(s, d, r, FSM_FORKNUM, 0);
    if (flags & SMGR_TRUNCATE_VM) changes.addLimit(s, d, r, VISIBILITYMAP_FORKNUM, 0);
  }
  return true;
}
