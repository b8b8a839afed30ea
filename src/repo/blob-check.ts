/**
 * The integrity check of a stored blob. zstd frames carry a content checksum, gzip a CRC-32,
 * lz4 frames block checksums and age a MAC per chunk, so decoding them detects damage. A blob
 * stored with `compression: none` and no encryption is its plain bytes: nothing would notice
 * a flipped bit. For those, the backup records a CRC-32 of the stored bytes as the optional
 * 7th element of each extent (docs/FORMAT.md), and readers check it when present.
 */
import { crc32 } from 'node:zlib';
import { PgarkError } from '../errors.ts';
import { codecOfKey } from '../pipeline/codec.ts';
import type { WriteFormat } from '../pipeline/object-format.ts';
import { decodeBuffer, decryptBuffer, isEncryptedKey } from '../pipeline/object-format.ts';
import { ZstdFrameSequence } from '../pipeline/zstd-frames.ts';
import { freeNow } from '../util/memory.ts';
import type { BlobRef } from './restore-files.ts';

/** Whether blobs written in `format` need a recorded checksum (their encoding has none). */
export function needsBlobChecksum(format: WriteFormat): boolean {
  return format.codec === 'none' && format.recipients.length === 0;
}

/** CRC-32 (as in gzip and zlib) of the stored bytes, as 8 lower-case hex digits. */
export function blobChecksum(stored: Buffer): string {
  return crc32(stored).toString(16).padStart(8, '0');
}

/**
 * Checks the recorded checksum (if any) and decodes one blob of pack `packKey`; damage is an
 * INTEGRITY error naming the pack and offset.
 */
export async function decodeBlob(stored: Buffer, packKey: string, where: { packId: string; offset: number; checksum?: string }, identities: readonly string[]): Promise<Buffer> {
  const damaged = (detail: string, cause?: unknown) =>
    new PgarkError('INTEGRITY', `a blob in pack ${where.packId} (offset ${where.offset}) is damaged: ${detail}`, { cause });
  if (where.checksum !== undefined && blobChecksum(stored) !== where.checksum) throw damaged('CRC-32 mismatch');
  try {
    return await decodeBuffer(stored, packKey, identities);
  } catch (error) {
    if (error instanceof PgarkError) throw error;
    throw damaged((error as Error).message, error);
  }
}

export interface RangeDecoder {
  /**
   * The blob's content in consecutive pieces. With `output`, the content is decoded (or copied)
   * into it: the first piece is a view of `output` from its start, and only content that does
   * not fit comes in further pieces, which the caller frees (ZstdFrameSequence.decodeParts).
   */
  decode(stored: Buffer, where: BlobRef, output?: Buffer): Promise<Buffer[]>;
  finish(): Promise<void>;
  close(): void;
}

/**
 * Decodes the blobs of one ranged GET in order (restore and verify): zstd blobs through one
 * decompression context (zlib's one-shot zstdDecompress makes a context per blob and copies its
 * output once more: verify --full took a third more CPU that way). After a damaged blob the
 * context is unusable: make a new decoder for the blobs after it.
 */
export function rangeDecoder(key: string, identities: readonly string[]): RangeDecoder {
  if (codecOfKey(key) !== 'zstd') {
    return {
      decode: async (stored, where, output) => {
        const content = await decodeBlob(stored, key, where, identities);
        if (!output) return [content];
        // Into the caller's buffer like zstd's, so that every blob's memory is handled alike;
        // the decoder's own buffer is freed at once (a view of `stored`, compression none, is not ours).
        const fits = Math.min(content.length, output.length);
        content.copy(output, 0, 0, fits);
        const parts = [output.subarray(0, fits)];
        if (fits < content.length) parts.push(Buffer.from(content.subarray(fits)));
        if (content.buffer !== stored.buffer) freeNow(content);
        return parts;
      },
      finish: async () => {},
      close: () => {},
    };
  }
  const frames = new ZstdFrameSequence();
  const encrypted = isEncryptedKey(key);
  return {
    decode: async (stored, where, output) => {
      let compressed: Buffer | undefined;
      try {
        compressed = encrypted ? await decryptBuffer(stored, identities) : stored;
        return await frames.decodeParts(compressed, output);
      } catch (error) {
        if (error instanceof PgarkError) throw error;
        throw new PgarkError('INTEGRITY', `a blob in pack ${where.packId} (offset ${where.offset}) is damaged: ${(error as Error).message}`, { cause: error });
      } finally {
        if (compressed !== undefined && compressed !== stored) freeNow(compressed);
      }
    },
    finish: () => frames.finish(),
    close: () => frames.close(),
  };
}
