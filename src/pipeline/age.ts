/**
 * Client-side encryption in the age v1 format (https://age-encryption.org/v1, C2SP "age"),
 * X25519 recipients only, built on node:crypto so the bulk work (ChaCha20-Poly1305) runs in
 * OpenSSL. Files we write decrypt with the stock `age` CLI and vice versa, so a user can
 * always recover a backup without pgark.
 *
 * Layout of an age file:
 *
 *   age-encryption.org/v1\n
 *   -> X25519 <ephemeral share>\n       one stanza per recipient, each wrapping the file key
 *   <wrapped file key>\n
 *   --- <header MAC>\n
 *   <16-byte nonce><chunk 0>...<final chunk>   STREAM: 64 KiB plaintext chunks + 16-byte tags
 *
 * Key material (identities, file keys, payload keys) never appears in error messages.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  timingSafeEqual,
  type KeyObject,
} from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { PgarkError, isPgarkError } from '../errors.ts';

const VERSION_LINE = 'age-encryption.org/v1';
const MAGIC = Buffer.from(`${VERSION_LINE}\n`, 'latin1');
const VERSION_PREFIX = Buffer.from('age-encryption.org/', 'latin1');
const ARMOR_MAGIC = Buffer.from('-----BEGIN AGE ENCRYPTED FILE-----', 'latin1');
const X25519_LABEL = 'age-encryption.org/v1/X25519';
const IDENTITY_HRP = 'AGE-SECRET-KEY-';
const RECIPIENT_HRP = 'age';

const FILE_KEY_SIZE = 16;
const PAYLOAD_NONCE_SIZE = 16;
const TAG_SIZE = 16;
const CHUNK_SIZE = 64 * 1024;
const ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE;
/** X25519 stanzas are ~100 bytes; 1 MiB leaves room for thousands, yet bounds memory on garbage. */
const MAX_HEADER_SIZE = 1024 * 1024;

const IDENTITY_HINT = 'an identity looks like AGE-SECRET-KEY-1... (as written by `age-keygen` or `pgark keygen`)';
const RECIPIENT_HINT = 'a recipient looks like age1... (the "public key" line of an age-keygen identity file; `age-keygen -y FILE` prints it)';

// ---------------------------------------------------------------------------------------------
// Bech32 (BIP 173, without its 90-character limit, as the age spec requires)
// ---------------------------------------------------------------------------------------------

const BECH32_CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
const BECH32_GENERATORS = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function bech32Polymod(values: readonly number[]): number {
  let chk = 1;
  for (const value of values) {
    const top = chk >>> 25;
    chk = (((chk & 0x1ffffff) << 5) ^ value) >>> 0;
    for (let i = 0; i < 5; i++) {
      if ((top >>> i) & 1) chk = (chk ^ BECH32_GENERATORS[i]!) >>> 0;
    }
  }
  return chk;
}

/** The checksum covers the human-readable part too, expanded into 5-bit groups. */
function bech32HrpExpand(hrp: string): number[] {
  const high: number[] = [];
  const low: number[] = [];
  for (let i = 0; i < hrp.length; i++) {
    const code = hrp.charCodeAt(i);
    high.push(code >>> 5);
    low.push(code & 31);
  }
  return [...high, 0, ...low];
}

/** Regroups bits; `pad` for encoding, strict (no leftover bits beyond padding) for decoding. */
function convertBits(data: ArrayLike<number>, fromBits: number, toBits: number, pad: boolean): number[] | null {
  let acc = 0;
  let bits = 0;
  const out: number[] = [];
  const maxValue = (1 << toBits) - 1;
  for (let i = 0; i < data.length; i++) {
    acc = (acc << fromBits) | data[i]!;
    bits += fromBits;
    while (bits >= toBits) {
      bits -= toBits;
      out.push((acc >>> bits) & maxValue);
    }
    acc &= (1 << bits) - 1; // keep only the bits not yet emitted, so `acc` never overflows
  }
  if (pad) {
    if (bits > 0) out.push((acc << (toBits - bits)) & maxValue);
  } else if (bits >= fromBits || acc !== 0) {
    return null; // more than a group of padding, or padding bits that are not zero
  }
  return out;
}

/** Encodes bytes as Bech32; the checksum is always computed over the lowercase form. */
export function bech32Encode(hrp: string, data: Uint8Array, uppercase = false): string {
  const lowerHrp = hrp.toLowerCase();
  const words = convertBits(data, 8, 5, true)!;
  const polymod = bech32Polymod([...bech32HrpExpand(lowerHrp), ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  const checksum: number[] = [];
  for (let i = 0; i < 6; i++) checksum.push((polymod >>> (5 * (5 - i))) & 31);
  const text = `${lowerHrp}1${[...words, ...checksum].map((w) => BECH32_CHARSET[w]).join('')}`;
  return uppercase ? text.toUpperCase() : text;
}

/** Decodes Bech32 (all-lowercase or all-uppercase). Returns null on any defect; the HRP is lowercased. */
export function bech32Decode(text: string): { hrp: string; data: Buffer } | null {
  if (text !== text.toLowerCase() && text !== text.toUpperCase()) return null; // mixed case is invalid
  const lower = text.toLowerCase();
  const separator = lower.lastIndexOf('1');
  if (separator < 1 || separator + 7 > lower.length) return null;
  const hrp = lower.slice(0, separator);
  for (let i = 0; i < hrp.length; i++) {
    const code = hrp.charCodeAt(i);
    if (code < 33 || code > 126) return null;
  }
  const words: number[] = [];
  for (const char of lower.slice(separator + 1)) {
    const word = BECH32_CHARSET.indexOf(char);
    if (word < 0) return null;
    words.push(word);
  }
  if (bech32Polymod([...bech32HrpExpand(hrp), ...words]) !== 1) return null;
  const bytes = convertBits(words.slice(0, -6), 5, 8, false);
  return bytes === null ? null : { hrp, data: Buffer.from(bytes) };
}

// ---------------------------------------------------------------------------------------------
// Base64 as age uses it: standard alphabet, no padding, canonical only
// ---------------------------------------------------------------------------------------------

function base64Encode(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64').replace(/=+$/, '');
}

/** Node's decoder is lenient (skips junk, accepts padding); the spec demands rejecting all that. */
function base64DecodeStrict(text: string): Buffer | null {
  if (!/^[A-Za-z0-9+/]*$/.test(text) || text.length % 4 === 1) return null;
  const data = Buffer.from(text, 'base64');
  return base64Encode(data) === text ? data : null; // catches non-zero trailing bits
}

// ---------------------------------------------------------------------------------------------
// X25519 with raw 32-byte keys. node:crypto wants KeyObjects, so raw keys get the fixed DER
// prefix of a PKCS#8 / SPKI structure for OID 1.3.101.110.
// ---------------------------------------------------------------------------------------------

const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function x25519PrivateKey(raw: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

function x25519PublicKey(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, raw]), format: 'der', type: 'spki' });
}

function rawPublicKey(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' }).subarray(SPKI_X25519_PREFIX.length);
}

function rawPrivateKey(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_X25519_PREFIX.length);
}

/**
 * OpenSSL refuses to return an all-zero shared secret (a low-order public point); the spec
 * says to abort in that case, so we turn it into `null` and let the caller decide the error.
 */
function x25519SharedSecret(privateKey: KeyObject, publicRaw: Buffer): Buffer | null {
  try {
    const secret = diffieHellman({ privateKey, publicKey: x25519PublicKey(publicRaw) });
    return secret.every((byte) => byte === 0) ? null : secret;
  } catch {
    return null;
  }
}

function hkdf(ikm: Uint8Array, salt: Uint8Array, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, salt, info, 32));
}

const ZERO_NONCE = Buffer.alloc(12);

function aeadSeal(key: Uint8Array | KeyObject, nonce: Buffer, plaintext: Buffer): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_SIZE });
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

/** Returns null when the tag does not verify. Only for small (header) values. */
function aeadOpen(key: Uint8Array, nonce: Buffer, sealed: Buffer): Buffer | null {
  const decipher = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_SIZE });
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_SIZE));
  const plaintext = decipher.update(sealed.subarray(0, sealed.length - TAG_SIZE));
  try {
    decipher.final();
    return plaintext;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Identities and recipients
// ---------------------------------------------------------------------------------------------

/** Decodes AGE-SECRET-KEY-1... into the 32-byte X25519 scalar. The text never goes into messages. */
function parseIdentity(text: string, what = 'identity'): Buffer {
  const trimmed = text.trim();
  const decoded = bech32Decode(trimmed);
  if (decoded === null || decoded.hrp !== IDENTITY_HRP.toLowerCase() || decoded.data.length !== 32) {
    let hint = IDENTITY_HINT;
    if (/^AGE-PLUGIN-/i.test(trimmed)) hint = 'age plugin identities (e.g. YubiKey) are not supported; use an X25519 identity';
    else if (/^AGE-SECRET-KEY-PQ-/i.test(trimmed)) hint = 'post-quantum (PQ) age identities are not supported yet; use an X25519 identity';
    else if (/^age1/i.test(trimmed)) hint = 'that is a public recipient (age1...), not a secret identity';
    throw new PgarkError('CRYPTO', `${what} is not a valid age X25519 identity`, { hint });
  }
  return decoded.data;
}

/** Parses an age1... recipient into its 32-byte X25519 public key. */
export function parseRecipient(text: string): Buffer {
  const trimmed = text.trim();
  const decoded = bech32Decode(trimmed);
  if (decoded === null || decoded.hrp !== RECIPIENT_HRP || decoded.data.length !== 32) {
    // The input is not echoed: someone may have pasted a secret key by mistake.
    let hint = RECIPIENT_HINT;
    if (/^AGE-SECRET-KEY-/i.test(trimmed)) hint = 'that is a SECRET identity, not a recipient; use its public key (`age-keygen -y FILE`) and keep the secret safe';
    else if (/^age1pq1/i.test(trimmed)) hint = 'post-quantum (age1pq1...) recipients are not supported yet; use an X25519 recipient';
    else if (/^age1[a-z0-9]+1/i.test(trimmed) && decoded?.hrp !== RECIPIENT_HRP) hint = 'age plugin recipients are not supported; use an X25519 recipient (age1...)';
    else if (/^(ssh-|ecdsa-)/.test(trimmed)) hint = 'SSH public keys are not supported as recipients; use an X25519 recipient (age1...)';
    throw new PgarkError('CRYPTO', 'not a valid age X25519 recipient', { hint });
  }
  return decoded.data;
}

export function generateIdentity(): { identity: string; recipient: string } {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  return {
    identity: bech32Encode(IDENTITY_HRP, rawPrivateKey(privateKey), true),
    recipient: bech32Encode(RECIPIENT_HRP, rawPublicKey(publicKey)),
  };
}

export function recipientFromIdentity(identity: string): string {
  const secret = parseIdentity(identity);
  return bech32Encode(RECIPIENT_HRP, rawPublicKey(createPublicKey(x25519PrivateKey(secret))));
}

/**
 * Reads an identity file as `age-keygen` writes it: `#` comment lines, blank lines, and one
 * AGE-SECRET-KEY-1... per line. Errors name the line number, never its content.
 */
export function parseIdentityFile(text: string): string[] {
  const identities: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim(); // also drops the \r of CRLF files
    if (line === '' || line.startsWith('#')) continue;
    parseIdentity(line, `line ${i + 1} of the identity file`);
    identities.push(line);
  }
  if (identities.length === 0) {
    throw new PgarkError('CRYPTO', 'the identity file contains no identities', { hint: IDENTITY_HINT });
  }
  return identities;
}

/** Same layout as `age-keygen` output, so the file works with `age -d -i` as well. */
export function formatIdentityFile(identity: string, recipient: string, createdAt: Date): string {
  if (recipientFromIdentity(identity) !== recipient.trim()) {
    throw new PgarkError('CRYPTO', 'the recipient does not belong to the identity', { hint: 'derive it with recipientFromIdentity()' });
  }
  const created = createdAt.toISOString().replace(/\.\d{3}Z$/, 'Z'); // RFC 3339 without fractions, like age-keygen
  return `# created: ${created}\n# public key: ${recipient.trim()}\n${identity.trim()}\n`;
}

// ---------------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------------

interface Stanza {
  args: string[];
  body: Buffer;
}

function wrapForRecipient(fileKey: Buffer, recipient: Buffer): Stanza {
  const ephemeral = generateKeyPairSync('x25519');
  const share = rawPublicKey(ephemeral.publicKey);
  const shared = x25519SharedSecret(ephemeral.privateKey, recipient);
  if (shared === null) {
    throw new PgarkError('CRYPTO', 'an age recipient is not a usable X25519 public key (low-order point)', { hint: RECIPIENT_HINT });
  }
  const wrapKey = hkdf(shared, Buffer.concat([share, recipient]), X25519_LABEL);
  return { args: ['X25519', base64Encode(share)], body: aeadSeal(wrapKey, ZERO_NONCE, fileKey) };
}

/** Stanza bodies are wrapped at 64 columns and must end with a shorter (possibly empty) line. */
function formatStanza(stanza: Stanza): string {
  const body = base64Encode(stanza.body);
  let text = `-> ${stanza.args.join(' ')}\n`;
  for (let i = 0; i < body.length; i += 64) text += `${body.slice(i, i + 64)}\n`;
  if (body.length % 64 === 0) text += '\n';
  return text;
}

function headerMac(fileKey: Buffer, macInput: Buffer): Buffer {
  return createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header')).update(macInput).digest();
}

function buildHeader(fileKey: Buffer, recipients: Buffer[]): Buffer {
  const stanzas = recipients.map((recipient) => formatStanza(wrapForRecipient(fileKey, recipient)));
  // The MAC covers everything up to and including "---", not the space after it.
  const macInput = Buffer.from(`${VERSION_LINE}\n${stanzas.join('')}---`, 'latin1');
  return Buffer.concat([macInput, Buffer.from(` ${base64Encode(headerMac(fileKey, macInput))}\n`, 'latin1')]);
}

interface ParsedHeader {
  stanzas: Stanza[];
  macInput: Buffer;
  mac: Buffer;
}

function malformedHeader(detail: string): PgarkError {
  return new PgarkError('INTEGRITY', `malformed age header: ${detail}`, {
    hint: 'the encrypted object is corrupted or was not written by age/pgark',
  });
}

/** Parses a complete header (ending with the MAC line's LF) per the spec's ABNF, strictly. */
function parseHeader(header: Buffer): ParsedHeader {
  const lines = header.toString('latin1').slice(0, -1).split('\n');
  if (lines[0] !== VERSION_LINE) throw malformedHeader('unsupported version line');
  const stanzas: Stanza[] = [];
  let index = 1;
  while (lines[index]?.startsWith('-> ')) {
    const args = lines[index]!.slice(3).split(' ');
    if (args.some((arg) => !/^[\x21-\x7e]+$/.test(arg))) throw malformedHeader('bad stanza arguments');
    index++;
    let body = '';
    for (;;) {
      const line = lines[index++];
      if (line === undefined || line.length > 64 || !/^[A-Za-z0-9+/]*$/.test(line)) throw malformedHeader('bad stanza body');
      body += line;
      if (line.length < 64) break;
    }
    const decoded = base64DecodeStrict(body);
    if (decoded === null) throw malformedHeader('non-canonical stanza body');
    stanzas.push({ args, body: decoded });
  }
  const macLine = lines[index];
  if (stanzas.length === 0) throw malformedHeader('no recipient stanzas');
  if (macLine === undefined || index !== lines.length - 1 || !/^--- [A-Za-z0-9+/]{43}$/.test(macLine)) {
    throw malformedHeader('bad MAC line');
  }
  const mac = base64DecodeStrict(macLine.slice(4));
  if (mac === null) throw malformedHeader('non-canonical MAC');
  const macLineStart = header.length - 1 - macLine.length;
  return { stanzas, macInput: header.subarray(0, macLineStart + 3), mac };
}

/**
 * Tries every identity on every X25519 stanza. Malformed X25519 stanzas abort (the spec says
 * reject, not skip); other stanza types are ignored.
 */
function unwrapFileKey(stanzas: Stanza[], identities: X25519Identity[]): Buffer {
  for (const stanza of stanzas) {
    if (stanza.args[0] !== 'X25519') continue;
    const share = stanza.args.length === 2 ? base64DecodeStrict(stanza.args[1]!) : null;
    if (share === null || share.length !== 32 || stanza.body.length !== FILE_KEY_SIZE + TAG_SIZE) {
      throw malformedHeader('invalid X25519 stanza');
    }
    for (const identity of identities) {
      const shared = x25519SharedSecret(identity.privateKey, share);
      if (shared === null) throw malformedHeader('X25519 stanza with a low-order ephemeral share');
      const wrapKey = hkdf(shared, Buffer.concat([share, identity.publicKey]), X25519_LABEL);
      const fileKey = aeadOpen(wrapKey, ZERO_NONCE, stanza.body);
      if (fileKey !== null) return fileKey;
    }
  }
  const types = new Set(stanzas.map((stanza) => stanza.args[0]));
  let hint = 'decrypt with an identity whose public key was a recipient when this object was written';
  if (types.has('scrypt')) hint = 'this object is passphrase-encrypted (scrypt); pgark only uses X25519 identities';
  else if (!types.has('X25519')) hint = `this object has no X25519 recipients (stanza types: ${[...types].join(', ')})`;
  throw new PgarkError('CRYPTO', 'none of the configured age identities can decrypt this object', { hint });
}

interface X25519Identity {
  privateKey: KeyObject;
  publicKey: Buffer;
}

// ---------------------------------------------------------------------------------------------
// Payload: the STREAM construction
// ---------------------------------------------------------------------------------------------

/**
 * A FIFO of written buffers from which whole chunks are taken. A chunk that lies within one
 * written buffer is handed out as a slice of it (no copy) — the common case when the producer
 * writes large buffers. This relies on the usual stream contract that a writer does not mutate
 * a buffer after writing it, which Writable's own buffering already assumes.
 *
 * A chunk spread over several small writes is copied into one buffer: measured, one concat
 * plus one cipher.update() is about twice as fast as an update() per piece, and it keeps the
 * output in chunk-sized buffers instead of fragments.
 */
class ByteQueue {
  #buffers: Buffer[] = [];
  length = 0;

  push(buffer: Buffer): void {
    if (buffer.length === 0) return;
    this.#buffers.push(buffer);
    this.length += buffer.length;
  }

  /** Removes and returns the first n bytes (n <= length) as one contiguous buffer. */
  shift(n: number): Buffer {
    const slices: Buffer[] = [];
    let needed = n;
    while (needed > 0) {
      const first = this.#buffers[0]!;
      if (first.length <= needed) {
        slices.push(first);
        this.#buffers.shift();
        needed -= first.length;
      } else {
        slices.push(first.subarray(0, needed));
        this.#buffers[0] = first.subarray(needed);
        needed = 0;
      }
    }
    this.length -= n;
    return slices.length === 1 ? slices[0]! : Buffer.concat(slices, n);
  }
}

/** Nonce = 11-byte big-endian chunk counter || final-chunk flag. One buffer, rewritten per chunk. */
class ChunkNonce {
  readonly bytes = Buffer.alloc(12);
  counter = 0;

  forChunk(last: boolean): Buffer {
    // 2^48 chunks of 64 KiB is 16 EiB; the top 5 counter bytes stay zero.
    if (this.counter >= 2 ** 48) throw new PgarkError('CRYPTO', 'age payload too large (chunk counter overflow)');
    this.bytes.writeUIntBE(this.counter, 5, 6);
    this.bytes[11] = last ? 1 : 0;
    return this.bytes;
  }
}

function payloadKey(fileKey: Buffer, nonce: Buffer): KeyObject {
  // A KeyObject lets OpenSSL skip re-importing the key for every chunk's cipher.
  return createSecretKey(hkdf(fileKey, nonce, 'payload'));
}

function asError(error: unknown, fallback: string): Error {
  if (isPgarkError(error)) return error;
  return new PgarkError('CRYPTO', fallback, { cause: error });
}

class AgeEncryptStream extends Transform {
  #queue = new ByteQueue();
  #nonce = new ChunkNonce();
  #key: KeyObject;

  constructor(recipients: Buffer[]) {
    super();
    const fileKey = randomBytes(FILE_KEY_SIZE);
    const nonce = randomBytes(PAYLOAD_NONCE_SIZE);
    const header = buildHeader(fileKey, recipients);
    this.#key = payloadKey(fileKey, nonce);
    fileKey.fill(0);
    this.push(Buffer.concat([header, nonce]));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.#queue.push(chunk);
      // A full chunk is sealed only once a byte beyond it exists: until then it may be the
      // final one, which needs the final flag. So an input of exactly N×64 KiB ends with a
      // full final chunk, never with an extra empty one.
      while (this.#queue.length > CHUNK_SIZE) this.#seal(this.#queue.shift(CHUNK_SIZE), false);
      callback();
    } catch (error) {
      callback(asError(error, 'age encryption failed'));
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      // Whatever is left (1..64 KiB, or 0 if the whole payload is empty) is the final chunk.
      this.#seal(this.#queue.shift(this.#queue.length), true);
      callback();
    } catch (error) {
      callback(asError(error, 'age encryption failed'));
    }
  }

  #seal(plaintext: Buffer, last: boolean): void {
    const cipher = createCipheriv('chacha20-poly1305', this.#key, this.#nonce.forChunk(last), { authTagLength: TAG_SIZE });
    this.#nonce.counter++;
    // Ciphertext and tag are pushed separately: joining them would cost a 64 KiB copy per
    // chunk (~20% of throughput) for a consumer that sees a byte stream anyway.
    this.push(cipher.update(plaintext));
    cipher.final();
    this.push(cipher.getAuthTag());
  }
}

class AgeDecryptStream extends Transform {
  #identities: X25519Identity[];
  #phase: 'header' | 'nonce' | 'payload' = 'header';
  #headerParts: Buffer[] = [];
  #headerLength = 0;
  /** Progress matching "\n---" then the LF that ends the MAC line; survives chunk boundaries. */
  #endMatch = 0;
  #magicConfirmed = false;
  #fileKey: Buffer | null = null;
  #key: KeyObject | null = null;
  #queue = new ByteQueue();
  #nonce = new ChunkNonce();

  constructor(identities: X25519Identity[]) {
    super();
    this.#identities = identities;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.#consume(chunk);
      callback();
    } catch (error) {
      callback(asError(error, 'age decryption failed'));
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.#finish();
      callback();
    } catch (error) {
      callback(asError(error, 'age decryption failed'));
    }
  }

  #consume(chunk: Buffer): void {
    let data = chunk;
    if (this.#phase === 'header') {
      const rest = this.#consumeHeader(chunk);
      if (rest === null) return;
      data = rest;
    }
    this.#queue.push(data);
    if (this.#phase === 'nonce') {
      if (this.#queue.length < PAYLOAD_NONCE_SIZE) return;
      this.#key = payloadKey(this.#fileKey!, this.#queue.shift(PAYLOAD_NONCE_SIZE));
      this.#fileKey!.fill(0);
      this.#fileKey = null;
      this.#phase = 'payload';
    }
    // As when encrypting: a full chunk is only known not to be the final one once more follows.
    while (this.#queue.length > ENCRYPTED_CHUNK_SIZE) this.#open(ENCRYPTED_CHUNK_SIZE, false);
  }

  /** Accumulates header bytes; once the MAC line is complete, processes it and returns the rest. */
  #consumeHeader(chunk: Buffer): Buffer | null {
    const end = this.#scanHeaderEnd(chunk);
    const part = end < 0 ? chunk : chunk.subarray(0, end);
    this.#headerParts.push(part);
    this.#headerLength += part.length;
    this.#checkMagic();
    if (end < 0) {
      if (this.#headerLength > MAX_HEADER_SIZE) throw malformedHeader('header too large');
      return null;
    }
    const header = Buffer.concat(this.#headerParts, this.#headerLength);
    this.#headerParts = [];
    this.#acceptHeader(header);
    this.#phase = 'nonce';
    return chunk.subarray(end);
  }

  /** Byte-level matcher, so a header split at any byte boundary is found without re-scanning. */
  #scanHeaderEnd(chunk: Buffer): number {
    const pattern = [0x0a, 0x2d, 0x2d, 0x2d]; // "\n---"
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i]!;
      if (this.#endMatch === pattern.length) {
        if (byte === 0x0a) return i + 1;
      } else if (byte === pattern[this.#endMatch]) {
        this.#endMatch++;
      } else {
        this.#endMatch = byte === 0x0a ? 1 : 0;
      }
    }
    return -1;
  }

  /**
   * Fails fast on input that is not age at all, instead of buffering up to MAX_HEADER_SIZE.
   * Runs only until the version line's bytes have all been seen.
   */
  #checkMagic(): void {
    if (this.#magicConfirmed) return;
    const seen = this.#headerParts.length === 1 ? this.#headerParts[0]! : Buffer.concat(this.#headerParts);
    const n = Math.min(seen.length, MAGIC.length);
    if (seen.subarray(0, n).equals(MAGIC.subarray(0, n))) {
      this.#magicConfirmed = n === MAGIC.length;
      return;
    }
    if (seen.subarray(0, VERSION_PREFIX.length).equals(VERSION_PREFIX)) {
      throw new PgarkError('CRYPTO', 'unsupported age format version', { hint: 'only age-encryption.org/v1 is supported' });
    }
    const m = Math.min(seen.length, ARMOR_MAGIC.length);
    const armored = seen.subarray(0, m).equals(ARMOR_MAGIC.subarray(0, m));
    throw new PgarkError('CRYPTO', 'the object is not age-encrypted', {
      hint: armored
        ? 'ASCII-armored age files are not supported; decrypt with `age -d` or re-encrypt without --armor'
        : 'was it written without encryption, or by another tool?',
    });
  }

  #acceptHeader(header: Buffer): void {
    const parsed = parseHeader(header);
    const fileKey = unwrapFileKey(parsed.stanzas, this.#identities);
    if (!timingSafeEqual(headerMac(fileKey, parsed.macInput), parsed.mac)) {
      fileKey.fill(0);
      throw new PgarkError('INTEGRITY', 'age header MAC mismatch: the encrypted object was modified', {
        hint: 'the object is corrupted or has been tampered with',
      });
    }
    this.#fileKey = fileKey;
  }

  #finish(): void {
    if (this.#phase === 'header' && this.#headerLength === 0) {
      throw new PgarkError('INTEGRITY', 'the encrypted object is empty', { hint: 'the upload was probably interrupted' });
    }
    if (this.#phase !== 'payload') {
      throw truncated(this.#phase === 'header' ? 'ends inside the age header' : 'ends before the payload nonce');
    }
    const remaining = this.#queue.length;
    if (remaining < TAG_SIZE) throw truncated('has no final chunk');
    // The final chunk may be empty only when the whole payload is.
    if (remaining === TAG_SIZE && this.#nonce.counter > 0) throw truncated('ends with an empty final chunk, which age forbids');
    this.#open(remaining, true);
  }

  /** Decrypts one chunk and emits it only after its tag verified. */
  #open(size: number, last: boolean): void {
    const ciphertext = this.#queue.shift(size - TAG_SIZE);
    const tag = this.#queue.shift(TAG_SIZE);
    const decipher = createDecipheriv('chacha20-poly1305', this.#key!, this.#nonce.forChunk(last), { authTagLength: TAG_SIZE });
    decipher.setAuthTag(tag);
    const plaintext = decipher.update(ciphertext);
    try {
      decipher.final();
    } catch {
      throw new PgarkError('INTEGRITY', `age payload chunk ${this.#nonce.counter} failed authentication`, {
        hint: 'the encrypted object is corrupted, truncated, or has trailing data',
      });
    }
    this.#nonce.counter++;
    this.push(plaintext);
  }
}

function truncated(detail: string): PgarkError {
  return new PgarkError('INTEGRITY', `the encrypted object is truncated: it ${detail}`, {
    hint: 'the upload or download was probably interrupted',
  });
}

/** Encrypts a byte stream to the given age1... recipients. Bad recipients throw right away. */
export function createAgeEncryptStream(recipients: string[]): Transform {
  if (recipients.length === 0) {
    throw new PgarkError('CRYPTO', 'no age recipients configured', { hint: RECIPIENT_HINT });
  }
  return new AgeEncryptStream(recipients.map((recipient) => parseRecipient(recipient)));
}

/** Decrypts an age stream with any of the given AGE-SECRET-KEY-1... identities. */
export function createAgeDecryptStream(identities: string[]): Transform {
  if (identities.length === 0) {
    throw new PgarkError('CRYPTO', 'no age identities configured', { hint: IDENTITY_HINT });
  }
  return new AgeDecryptStream(
    identities.map((identity, i) => {
      const privateKey = x25519PrivateKey(parseIdentity(identity, `identity #${i + 1}`));
      return { privateKey, publicKey: rawPublicKey(createPublicKey(privateKey)) };
    }),
  );
}
