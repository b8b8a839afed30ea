/**
 * WAL file names, segment arithmetic and the segment header. Facts from PostgreSQL's
 * xlog_internal.h: a segment name is TTTTTTTTXXXXXXXXYYYYYYYY (timeline, then the segment
 * number split into "log" = segno / segments-per-4GiB and "seg" = segno % that); the first
 * page of every segment has a long header holding the system identifier and segment size.
 */
import { PgarkError } from '../errors.ts';

export type WalFileKind = 'segment' | 'partial' | 'history' | 'backup';

export interface WalFileName {
  name: string;
  kind: WalFileKind;
  timeline: number;
  /** For segments, partials and backup labels: the segment's "log" and "seg" parts. */
  log: number;
  seg: number;
}

const SEGMENT = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
const PARTIAL = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$/;
const BACKUP = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.([0-9A-F]{8})\.backup$/;
const HISTORY = /^([0-9A-F]{8})\.history$/;

/** Parses a WAL file name; undefined for anything else (paths, "..", other files). */
export function parseWalFileName(name: string): WalFileName | undefined {
  let match = SEGMENT.exec(name);
  if (match) return { name, kind: 'segment', timeline: parseInt(match[1]!, 16), log: parseInt(match[2]!, 16), seg: parseInt(match[3]!, 16) };
  match = PARTIAL.exec(name);
  if (match) return { name, kind: 'partial', timeline: parseInt(match[1]!, 16), log: parseInt(match[2]!, 16), seg: parseInt(match[3]!, 16) };
  match = BACKUP.exec(name);
  if (match) return { name, kind: 'backup', timeline: parseInt(match[1]!, 16), log: parseInt(match[2]!, 16), seg: parseInt(match[3]!, 16) };
  match = HISTORY.exec(name);
  if (match) return { name, kind: 'history', timeline: parseInt(match[1]!, 16), log: 0, seg: 0 };
  return undefined;
}

export function requireWalFileName(name: string): WalFileName {
  const parsed = parseWalFileName(name);
  if (!parsed || parsed.timeline === 0) {
    throw new PgarkError('USAGE', `"${name}" is not a WAL file name`, {
      hint: 'expected a segment (24 hex digits), a .partial, .backup or .history file name, as PostgreSQL passes in %f',
    });
  }
  return parsed;
}

export const hex8 = (n: number): string => n.toString(16).toUpperCase().padStart(8, '0');

export function segmentsPerLog(segmentSize: number): number {
  return 0x1_0000_0000 / segmentSize;
}

/** Absolute segment number of a (log, seg) pair. */
export function segmentNumber(file: { log: number; seg: number }, segmentSize: number): number {
  return file.log * segmentsPerLog(segmentSize) + file.seg;
}

export function segmentName(timeline: number, segno: number, segmentSize: number): string {
  const perLog = segmentsPerLog(segmentSize);
  return hex8(timeline) + hex8(Math.floor(segno / perLog)) + hex8(segno % perLog);
}

/** LSN text "16/B374D848" → bigint. */
export function parseLsn(text: string): bigint {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text.trim());
  if (!match) throw new PgarkError('USAGE', `"${text}" is not an LSN`, { hint: 'an LSN looks like 16/B374D848' });
  return (BigInt(parseInt(match[1]!, 16)) << 32n) | BigInt(parseInt(match[2]!, 16));
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function segmentNumberOfLsn(lsn: bigint, segmentSize: number): number {
  return Number(lsn / BigInt(segmentSize));
}

// XLogLongPageHeaderData: xlp_magic u16, xlp_info u16, xlp_tli u32, xlp_pageaddr u64,
// xlp_rem_len u32, (4 bytes padding), xlp_sysid u64, xlp_seg_size u32, xlp_xlog_blcksz u32.
const XLP_LONG_HEADER = 0x0002;

export interface SegmentHeader {
  magic: number;
  timeline: number;
  pageAddress: bigint;
  systemIdentifier: string;
  segmentSize: number;
  blockSize: number;
}

export function readSegmentHeader(data: Buffer): SegmentHeader | undefined {
  if (data.length < 40) return undefined;
  const info = data.readUInt16LE(2);
  if ((info & XLP_LONG_HEADER) === 0) return undefined;
  return {
    magic: data.readUInt16LE(0),
    timeline: data.readUInt32LE(4),
    pageAddress: data.readBigUInt64LE(8),
    systemIdentifier: data.readBigUInt64LE(24).toString(),
    segmentSize: data.readUInt32LE(32),
    blockSize: data.readUInt32LE(36),
  };
}

/**
 * Refuses a segment that does not belong here: another cluster's system identifier, another
 * segment size, or a first page whose address does not match the file name (a renamed or
 * corrupted file). Partial segments and fresh all-zero files have no header to check.
 */
export function checkSegmentHeader(file: WalFileName, data: Buffer, expected: { systemIdentifier: string; walSegmentSize: number }): void {
  if (file.kind !== 'segment' && file.kind !== 'partial') return;
  const header = readSegmentHeader(data);
  if (!header) {
    throw new PgarkError('INTEGRITY', `${file.name} has no valid WAL segment header`, { hint: 'this is not a WAL segment written by PostgreSQL, or it is damaged' });
  }
  if (header.systemIdentifier !== expected.systemIdentifier) {
    throw new PgarkError('REPO_MISMATCH', `${file.name} belongs to database system ${header.systemIdentifier}, but the repository belongs to ${expected.systemIdentifier}`, {
      hint: 'each cluster needs its own repository (or prefix); check the repo setting of this server',
    });
  }
  if (header.segmentSize !== expected.walSegmentSize || data.length !== expected.walSegmentSize) {
    throw new PgarkError('REPO_MISMATCH', `${file.name} is ${data.length} bytes with segment size ${header.segmentSize}, the repository expects ${expected.walSegmentSize}`);
  }
  const expectedAddress = BigInt(segmentNumber(file, expected.walSegmentSize)) * BigInt(expected.walSegmentSize);
  if (header.pageAddress !== expectedAddress) {
    throw new PgarkError('INTEGRITY', `${file.name} starts at LSN ${formatLsn(header.pageAddress)}, not at ${formatLsn(expectedAddress)} as its name says`, {
      hint: 'the file was renamed or is damaged; it is not archived',
    });
  }
}
