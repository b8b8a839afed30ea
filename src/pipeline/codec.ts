/**
 * Compression stages. Every object's key ends with its codec's extension, so readers pick
 * the decoder from the key and a repository may mix codecs (changing `compression` affects
 * only new objects).
 */
import { constants, createGunzip, createGzip, createZstdCompress, createZstdDecompress } from 'node:zlib';
import { PassThrough, type Transform } from 'node:stream';

export type Codec = 'zstd' | 'lz4' | 'gzip' | 'none';

export const CODEC_EXTENSION: Record<Codec, string> = { zstd: '.zst', lz4: '.lz4', gzip: '.gz', none: '' };

/** Levels when `compression-level` is not set: WAL, manifests and everything but backup data. */
export const DEFAULT_LEVEL: Record<Codec, number | undefined> = { zstd: 3, gzip: 6, lz4: undefined, none: undefined };

/**
 * Levels for backup data read in whole runs of consecutive pages (every blob of a full backup;
 * new, extended or rewritten files in an incremental) when `compression-level` is not set.
 * zstd 1 instead of 3: on 1 MiB blobs of PostgreSQL pages it compresses about 1.5 times
 * faster (323 against 211 MB/s on the realistic data set, where the ratio is 2.47 against
 * 2.49, 0.8 % more bytes) and as fast or faster on pgbench tables, which it even compresses
 * better (42.4:1 against 41.1:1). A full backup is CPU-bound on compression. WAL keeps 3:
 * level 1 stores it 8.8:1 instead of 10.2:1. So do the blobs an incremental collects from
 * changed pages scattered among unchanged ones: after a 1 % random UPDATE of pgbench, level 1
 * (and 2) stored them 24 % larger (19.9 against 16.0 MiB), where level 3 keeps an incremental
 * near the size of its changed pages compressed alone (on the realistic set: 29.6 against 29.4,
 * which is why backup-files.ts drops to level 1 for a file whose scattered pages compress poorly).
 */
export const BACKUP_DATA_DEFAULT_LEVEL: Record<Codec, number | undefined> = { ...DEFAULT_LEVEL, zstd: 1 };

/** Chunk size handed to the compressors: large enough to amortise per-call overhead. */
const ZLIB_CHUNK = 256 * 1024;

export async function compressStage(codec: Codec, level?: number): Promise<Transform> {
  const effectiveLevel = level ?? DEFAULT_LEVEL[codec];
  switch (codec) {
    case 'zstd':
      return createZstdCompress({
        chunkSize: ZLIB_CHUNK,
        params: {
          [constants.ZSTD_c_compressionLevel]: effectiveLevel!,
          // A content checksum lets stock `zstd -d` (and we) detect corruption without age.
          [constants.ZSTD_c_checksumFlag]: 1,
        },
      });
    case 'gzip':
      return createGzip({ level: effectiveLevel, chunkSize: ZLIB_CHUNK });
    case 'lz4': {
      const { createLz4CompressStream } = await import('./lz4.ts');
      return createLz4CompressStream();
    }
    case 'none':
      return new PassThrough();
  }
}

export async function decompressStage(codec: Codec): Promise<Transform> {
  switch (codec) {
    case 'zstd':
      return createZstdDecompress({ chunkSize: ZLIB_CHUNK });
    case 'gzip':
      return createGunzip({ chunkSize: ZLIB_CHUNK });
    case 'lz4': {
      const { createLz4DecompressStream } = await import('./lz4.ts');
      return createLz4DecompressStream();
    }
    case 'none':
      return new PassThrough();
  }
}

/** The codec of an object from its key's extension (before an optional ".age"). */
export function codecOfKey(key: string): Codec {
  const base = key.endsWith('.age') ? key.slice(0, -4) : key;
  if (base.endsWith('.zst')) return 'zstd';
  if (base.endsWith('.lz4')) return 'lz4';
  if (base.endsWith('.gz')) return 'gzip';
  return 'none';
}
