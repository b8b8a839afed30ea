/**
 * PostgreSQL data pages. Every page starts with PageHeaderData; its first field, pd_lsn, is the
 * LSN of the last WAL record that changed the page (two little-endian uint32: xlogid, xrecoff).
 * A page whose LSN is older than the start of the previous backup has not changed since
 * (hint-bit-only changes excepted: those are WAL-logged with data checksums or wal_log_hints,
 * and harmless to miss otherwise). An all-zero page has LSN 0 and is always stored.
 */
export function pageLsn(data: Buffer, offset: number): bigint {
  const high = data.readUInt32LE(offset);
  const low = data.readUInt32LE(offset + 4);
  return (BigInt(high) << 32n) | BigInt(low);
}
