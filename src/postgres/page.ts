/**
 * PostgreSQL data pages. Every page starts with PageHeaderData; its first field, pd_lsn, is the
 * LSN of the last WAL record that changed the page (two little-endian uint32: xlogid, xrecoff).
 * A page whose LSN is older than the start of the previous backup has not changed since
 * (hint-bit-only changes excepted: those are WAL-logged with data checksums or wal_log_hints,
 * and harmless to miss otherwise). An all-zero page has LSN 0 and is always stored.
 */
export function pageLsn(data: Buffer, offset: number): number {
  // As a double: exact below 2^53 bytes of WAL (8 PiB), and no BigInt per page.
  return data.readUInt32LE(offset) * 0x1_0000_0000 + data.readUInt32LE(offset + 4);
}

// ---- data checksums (PostgreSQL's src/include/storage/checksum_impl.h) ----------------------
// An FNV-1a variant over 32 interleaved lanes of little-endian uint32 words, with pd_checksum
// (bytes 8-9 of the page) taken as zero, two extra rounds of zeroes, the lanes xor-folded,
// xored with the block number, and reduced to 1..65535.

const N_SUMS = 32;
/** Shared with the vectorised version in page-checksums.ts. */
export const FNV_PRIME = 16777619;
export const CHECKSUM_BASE_OFFSETS: readonly number[] = [
  0x5b1f36e9, 0xb8525960, 0x02ab50aa, 0x1de66d2a, 0x79ff467a, 0x9bb9f8a3, 0x217e7cd2, 0x83e13d2c,
  0xf8d4474f, 0xe39eb970, 0x42c6ae16, 0x993216fa, 0x7b093b5d, 0x98daff3c, 0xf718902a, 0x0b1c9cdb,
  0xe58f764b, 0x187636bc, 0x5d7b3bb1, 0xe73de7de, 0x92bec979, 0xcca6c0b2, 0x304a0979, 0x85aa43d4,
  0x783125bb, 0x6ca8eaa2, 0xe407eac6, 0x4b5cfc3e, 0x9fbf8c76, 0x15ca20be, 0xf2ca9fd3, 0x959bd756,
];
/** Blocks per relation segment file (1 GiB of 8 KiB blocks, PostgreSQL's default RELSEG_SIZE). */
export const RELSEG_BLOCKS = 131072;

const sums = new Uint32Array(N_SUMS);

export function pageChecksum(page: Buffer, blockNumber: number): number {
  // A word view of the page (little-endian hosts, as every platform PostgreSQL data pages
  // come from in practice); copy when the page is not 4-byte aligned.
  const aligned = page.byteOffset % 4 === 0 ? page : Buffer.from(page);
  const words = new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length >>> 2);
  sums.set(CHECKSUM_BASE_OFFSETS);
  for (let i = 0; i < words.length; i += N_SUMS) {
    for (let j = 0; j < N_SUMS; j++) {
      const tmp = (sums[j]! ^ words[i + j]!) >>> 0;
      sums[j] = Math.imul(tmp, FNV_PRIME) ^ (tmp >>> 17);
    }
    // Word 2 holds pd_checksum (low half, counted as zero) and pd_flags: redo lane 2 of row 0.
    if (i === 0) {
      const tmp = (CHECKSUM_BASE_OFFSETS[2]! ^ (words[2]! & 0xffff0000)) >>> 0;
      sums[2] = Math.imul(tmp, FNV_PRIME) ^ (tmp >>> 17);
    }
  }
  for (let round = 0; round < 2; round++) {
    for (let j = 0; j < N_SUMS; j++) {
      const tmp = sums[j]!;
      sums[j] = Math.imul(tmp, FNV_PRIME) ^ (tmp >>> 17);
    }
  }
  let result = 0;
  for (let j = 0; j < N_SUMS; j++) result ^= sums[j]!;
  return (((result ^ blockNumber) >>> 0) % 65535) + 1;
}

/** A new (never initialised) page has pd_upper = 0 and carries no checksum. */
export function isNewPage(page: Buffer): boolean {
  return page.readUInt16LE(14) === 0;
}

export function storedChecksum(page: Buffer): number {
  return page.readUInt16LE(8);
}
