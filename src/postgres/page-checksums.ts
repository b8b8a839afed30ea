/**
 * PostgreSQL data checksums for many pages at once, in WebAssembly SIMD: the same algorithm as
 * page.ts's pageChecksum (checksum_impl.h: 32 FNV-1a-like lanes over the page's uint32 words),
 * with the 32 lanes in eight 4-lane vectors, as PostgreSQL's own vectorised build computes
 * them. About ten times faster than the scalar JavaScript, which cost a second of CPU per
 * 1.5 GB backed up. Falls back to pageChecksum where WebAssembly SIMD is missing.
 *
 * The module is assembled below from its instructions (no toolchain, nothing opaque):
 *   checksum(offset, blockNumber, blockSize) -> i32
 * computes the checksum of the page at `offset` in the memory it is instantiated with, reading
 * its pd_checksum field as zero (the page is not changed). A backup reads files into buffers that
 * are WebAssembly memories already (util/direct-io.ts alignedBuffers): those pages are checked
 * where they are, with an instance per memory; copying each MiB into the module's own memory
 * first took twice as long as the checksums. Other buffers are copied into a memory of its own.
 */
import { memoryOf, type WasmMemory } from '../util/direct-io.ts';
import { CHECKSUM_BASE_OFFSETS as BASE_OFFSETS, FNV_PRIME, isNewPage, pageChecksum, storedChecksum } from './page.ts';

// ---- a minimal WebAssembly assembler ----------------------------------------------------------
const uleb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
};
const sleb = (n: number): number[] => {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) return [...out, byte];
    out.push(byte | 0x80);
  }
};
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const name = (text: string): number[] => vec([...Buffer.from(text)].map((b) => [b]));
const u32x4 = (lanes: number[]): number[] => [...Buffer.from(new Uint32Array(lanes).buffer)];

const I32 = 0x7f;
const V128 = 0x7b;
const op = {
  localGet: (i: number) => [0x20, ...uleb(i)],
  localSet: (i: number) => [0x21, ...uleb(i)],
  localTee: (i: number) => [0x22, ...uleb(i)],
  i32Const: (n: number) => [0x41, ...sleb(n)],
  i32Add: [0x6a],
  i32LtU: [0x49],
  i32Xor: [0x73],
  i32RemU: [0x70],
  drop: [0x1a],
  loop: [0x03, 0x40],
  end: [0x0b],
  brIf: (label: number) => [0x0d, ...uleb(label)],
  v128Load: (offset: number) => [0xfd, ...uleb(0x00), 0, ...uleb(offset)],
  v128Const: (bytes: number[]) => [0xfd, ...uleb(0x0c), ...bytes],
  v128Xor: [0xfd, ...uleb(0x51)],
  v128And: [0xfd, ...uleb(0x4e)],
  i32x4Mul: [0xfd, ...uleb(0xb5)],
  i32x4ShrU: [0xfd, ...uleb(0xad)],
  i32x4ExtractLane: (lane: number) => [0xfd, ...uleb(0x1b), lane],
};

function checksumModule(): Uint8Array {
  // Locals: 0 offset, 1 blockNumber, 2 blockSize (params); 3-10 the eight lane vectors; 11 t; 12 i; 13 end.
  const lanes = (k: number) => 3 + k;
  const T = 11;
  const I = 12;
  const END = 13;
  const prime = op.v128Const(u32x4([FNV_PRIME, FNV_PRIME, FNV_PRIME, FNV_PRIME]));
  // sums = (t * FNV_PRIME) ^ (t >> 17), on the vector in local T
  const mix = (k: number) => [...op.localTee(T), ...prime, ...op.i32x4Mul, ...op.localGet(T), ...op.i32Const(17), ...op.i32x4ShrU, ...op.v128Xor, ...op.localSet(lanes(k))];
  // pd_checksum (bytes 8-9: the low half of word 2, little-endian) counts as zero
  const checksumMask = op.v128Const(u32x4([0xffffffff, 0xffffffff, 0xffff0000, 0xffffffff]));
  // one row of 32 words: lane j takes word j
  const row = (first: boolean) => [0, 1, 2, 3, 4, 5, 6, 7].flatMap((k) => [
    ...op.localGet(lanes(k)), ...op.localGet(I), ...op.v128Load(16 * k), ...(first && k === 0 ? [...checksumMask, ...op.v128And] : []), ...op.v128Xor, ...mix(k),
  ]);
  const nextRow = [...op.localGet(I), ...op.i32Const(128), ...op.i32Add, ...op.localTee(I)];
  const code: number[] = [
    ...[0, 1, 2, 3, 4, 5, 6, 7].flatMap((k) => [...op.v128Const(u32x4(BASE_OFFSETS.slice(4 * k, 4 * k + 4))), ...op.localSet(lanes(k))]),
    ...op.localGet(0), ...op.localSet(I),
    ...op.localGet(0), ...op.localGet(2), ...op.i32Add, ...op.localSet(END),
    // the first row (the page header), then the others (a page has at least two)
    ...row(true), ...nextRow, ...op.drop,
    ...op.loop,
    ...row(false),
    ...nextRow, ...op.localGet(END), ...op.i32LtU, ...op.brIf(0),
    ...op.end,
    // two rounds of zeroes
    ...[0, 1].flatMap(() => [0, 1, 2, 3, 4, 5, 6, 7].flatMap((k) => [...op.localGet(lanes(k)), ...mix(k)])),
    // xor of all 32 lanes, ^ blockNumber, reduced to 1..65535
    ...op.localGet(lanes(0)),
    ...[1, 2, 3, 4, 5, 6, 7].flatMap((k) => [...op.localGet(lanes(k)), ...op.v128Xor]),
    ...op.localTee(T), ...op.i32x4ExtractLane(0),
    ...[1, 2, 3].flatMap((lane) => [...op.localGet(T), ...op.i32x4ExtractLane(lane), ...op.i32Xor]),
    ...op.localGet(1), ...op.i32Xor,
    ...op.i32Const(65535), ...op.i32RemU, ...op.i32Const(1), ...op.i32Add,
    ...op.end,
  ];
  const body = [...vec([[8, V128], [1, V128], [2, I32]]), ...code];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec([[0x60, ...vec([[I32], [I32], [I32]]), ...vec([[I32]])]])), // type: (i32 i32 i32) -> i32
    ...section(2, vec([[...name('env'), ...name('memory'), 0x02, 0x00, 1]])), // imports a memory of at least 64 KiB
    ...section(3, vec([[0]])), // one function of type 0
    ...section(7, vec([[...name('checksum'), 0x00, 0]])),
    ...section(10, vec([[...uleb(body.length), ...body]])),
  ]);
}

// The project's TypeScript lib has no WebAssembly declarations: the little used here.
const { WebAssembly: wasm } = globalThis as unknown as {
  WebAssembly: {
    Module: new (bytes: Uint8Array) => object;
    Instance: new (module: object, imports: { env: { memory: WasmMemory } }) => { exports: unknown };
    Memory: new (descriptor: { initial: number }) => WasmMemory;
  };
};

type Checksum = (offset: number, blockNumber: number, blockSize: number) => number;

let compiled: object | null | undefined;
/** The instance over the module's own memory, for buffers that are not WebAssembly memory. */
let own: { memory: WasmMemory; checksum: Checksum } | undefined;
/** Instances over the memories of read buffers. */
const instances = new WeakMap<WasmMemory, Checksum>();

function instantiate(memory: WasmMemory): Checksum | undefined {
  if (compiled === undefined) {
    try {
      compiled = new wasm.Module(checksumModule());
    } catch {
      compiled = null; // no WebAssembly SIMD here: scalar JavaScript
    }
  }
  if (compiled === null) return undefined;
  return (new wasm.Instance(compiled, { env: { memory } }).exports as { checksum: Checksum }).checksum;
}

/** The checksum function and the offset of `buffer`'s first byte in its memory; copies `bytes` bytes if needed. */
function checksumOver(buffer: Buffer, bytes: number): { checksum: Checksum; base: number } | undefined {
  const memory = memoryOf(buffer);
  if (memory) {
    let checksum = instances.get(memory);
    if (!checksum) {
      checksum = instantiate(memory);
      if (!checksum) return undefined;
      instances.set(memory, checksum);
    }
    return { checksum, base: buffer.byteOffset };
  }
  if (!own) {
    const memory = new wasm.Memory({ initial: 1 });
    const checksum = instantiate(memory);
    if (!checksum) return undefined;
    own = { memory, checksum };
  }
  if (own.memory.buffer.byteLength < bytes) own.memory.grow(Math.ceil((bytes - own.memory.buffer.byteLength) / 65536));
  new Uint8Array(own.memory.buffer).set(buffer.subarray(0, bytes));
  return { checksum: own.checksum, base: 0 };
}

/**
 * Block numbers (relative to `buffer`, 0-based) of the whole, initialised pages among the
 * first `bytes` of `buffer` whose stored checksum is wrong; page i is block firstBlock + i.
 */
export function badChecksumPages(buffer: Buffer, bytes: number, blockSize: number, firstBlock: number): number[] {
  const bad: number[] = [];
  const pages = Math.floor(bytes / blockSize);
  const simd = blockSize % 128 === 0 && pages > 0 ? checksumOver(buffer, pages * blockSize) : undefined;
  if (simd) {
    const { checksum, base } = simd;
    for (let i = 0; i < pages; i++) {
      const offset = i * blockSize;
      // isNewPage and storedChecksum (page.ts), without a view per page
      if (buffer.readUInt16LE(offset + 14) === 0) continue;
      if (checksum(base + offset, firstBlock + i, blockSize) !== buffer.readUInt16LE(offset + 8)) bad.push(i);
    }
    return bad;
  }
  for (let i = 0; i < pages; i++) {
    const page = buffer.subarray(i * blockSize, (i + 1) * blockSize);
    if (!isNewPage(page) && pageChecksum(page, firstBlock + i) !== storedChecksum(page)) bad.push(i);
  }
  return bad;
}
