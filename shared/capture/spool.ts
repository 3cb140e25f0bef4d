// Reading what ferry-wrapper keeps of a job's stream in a spool file (runner/wrapper/ferry-wrapper.c
// describes the layout): the head in place, the tail in a ring, and the count of bytes committed.
// The wrapper writes while the job runs and a reader looks at any time, even after a restart of
// the server: a read is checked against the count taken after it, so bytes the wrapper was
// overwriting meanwhile are never served as if they were the stream's.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import {
  type CaptureLimits,
  heldOf,
  layoutOfKept,
  type RangeRead,
  type StoredLayout,
  StreamCapture,
  splitLimit,
  storedOffsetFor,
} from './stream-capture.ts';

const HEADER_BYTES = 64;
const MAGIC = 'FERRYSP1';
/** The wrapper's chunk: what it may be writing beyond the count it has committed. */
export const SPOOL_CHUNK_BYTES = 64 * 1024;
/** Attempts at a consistent live read while the wrapper overwrites the ring faster than it is read. */
const READ_ATTEMPTS = 4;
const EMPTY = Buffer.alloc(0);

interface SpoolHeader {
  readonly headLimit: number;
  readonly tailLimit: number;
  readonly ring: number;
  readonly total: number;
}

/** The wrapper's `--stdout-keep`/`--stderr-keep` argument for a stream with these limits. */
export function spoolKeepArgument(limits: CaptureLimits): string {
  const { headLimit, tailLimit } = splitLimit(limits);
  return `${headLimit}:${tailLimit}`;
}

export class SpoolFile {
  private readonly headLimit: number;
  private readonly tailLimit: number;

  constructor(
    readonly path: string,
    private readonly limits: CaptureLimits,
  ) {
    ({ headLimit: this.headLimit, tailLimit: this.tailLimit } = splitLimit(limits));
  }

  /** Bytes the job has produced on the stream so far (0 before the wrapper has made the file). */
  async totalBytes(): Promise<number> {
    return (await this.withFile((file) => this.header(file)))?.total ?? 0;
  }

  /**
   * Reads produced bytes from stream position `offset`, as `StreamCapture.readRange` does. While
   * the job writes faster than the read can keep up, the part of the tail it asked for may be
   * gone by the time it is read: then it reads again from where the stream is now, and after a
   * few tries gives nothing rather than bytes it cannot vouch for (the next read gets them).
   */
  async readRange(offset: number, maxBytes: number): Promise<RangeRead> {
    const read = await this.withFile(async (file) => {
      for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
        const before = await this.header(file);
        const layout = this.layoutAt(before.total);
        const at = storedOffsetFor(layout, offset);
        const length = Math.min(maxBytes, at.availableBytes);
        if (length === 0) return { data: EMPTY, nextOffset: at.position, skippedBytes: at.skippedBytes };
        const from = streamPosition(layout, at.storedOffset);
        const data = await this.readPositions(file, before, from, length);
        const after = await this.header(file);
        // Ring bytes older than the last `tailLimit` committed ones may have been overwritten meanwhile.
        const firstTailPosition = Math.max(from, this.headLimit);
        const intact = from + length <= this.headLimit || firstTailPosition >= after.total - this.tailLimit;
        if (intact) return { data, nextOffset: at.position + length, skippedBytes: at.skippedBytes };
      }
      return undefined;
    });
    return read ?? { data: EMPTY, nextOffset: offset, skippedBytes: 0 };
  }

  /**
   * A capture holding what the spool kept, once the wrapper has stopped writing (the container
   * has ended): stored exactly as if the server had seen every byte. No spool file means the
   * job printed nothing (or never started).
   */
  async restore(): Promise<StreamCapture> {
    const kept = await this.withFile(async (file) => {
      const header = await this.header(file);
      const { headLength, tailLength } = heldOf(this.limits, header.total);
      const head = await readAt(file, HEADER_BYTES, headLength);
      const tail = await this.readPositions(file, header, header.total - tailLength, tailLength);
      return { head, tail, totalBytes: header.total };
    });
    return StreamCapture.restore(this.limits, kept ?? { head: EMPTY, tail: EMPTY, totalBytes: 0 });
  }

  private layoutAt(total: number): StoredLayout {
    const { headLength, tailLength } = heldOf(this.limits, total);
    return layoutOfKept(this.limits.storedBytes, headLength, tailLength, total);
  }

  /** Reads the stream's bytes at positions [from, from + length), all of them kept. */
  private async readPositions(
    file: fsp.FileHandle,
    header: SpoolHeader,
    from: number,
    length: number,
  ): Promise<Buffer> {
    const parts: Buffer[] = [];
    let position = from;
    let left = length;
    if (left > 0 && position < this.headLimit) {
      const part = Math.min(left, this.headLimit - position);
      parts.push(await readAt(file, HEADER_BYTES + position, part));
      position += part;
      left -= part;
    }
    while (left > 0) {
      const at = (position - this.headLimit) % header.ring;
      const part = Math.min(left, header.ring - at);
      parts.push(await readAt(file, HEADER_BYTES + this.headLimit + at, part));
      position += part;
      left -= part;
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
  }

  private async header(file: fsp.FileHandle): Promise<SpoolHeader> {
    const raw = await readAt(file, 0, HEADER_BYTES);
    if (raw.length < HEADER_BYTES || raw.toString('latin1', 0, 8) !== MAGIC) {
      // Made but not yet written: the wrapper writes the header before anything else.
      return { headLimit: this.headLimit, tailLimit: this.tailLimit, ring: 0, total: 0 };
    }
    const header = {
      headLimit: Number(raw.readBigUInt64LE(8)),
      tailLimit: Number(raw.readBigUInt64LE(16)),
      ring: Number(raw.readBigUInt64LE(24)),
      total: Number(raw.readBigUInt64LE(32)),
    };
    if (header.headLimit !== this.headLimit || header.tailLimit !== this.tailLimit) {
      throw new Error(
        `${this.path} keeps ${header.headLimit}:${header.tailLimit} bytes, the job's limits ${this.headLimit}:${this.tailLimit}`,
      );
    }
    const ring = this.tailLimit === 0 ? 0 : this.tailLimit + SPOOL_CHUNK_BYTES;
    if (header.ring !== ring || !Number.isSafeInteger(header.total)) {
      throw new Error(
        `${this.path} is not a spool ferry-wrapper wrote (ring ${header.ring}, ${header.total} bytes)`,
      );
    }
    return header;
  }

  /**
   * Runs `use` on the open spool file; undefined when the wrapper has not made it (yet). The job
   * can write in the spool directory too: a symbolic link or anything but a plain file in place
   * of the spool is refused, so a job cannot have the server read another file of the host.
   */
  private async withFile<T>(use: (file: fsp.FileHandle) => Promise<T>): Promise<T | undefined> {
    const file = await openPlainFile(this.path);
    if (file === undefined) return undefined;
    try {
      return await use(file);
    } finally {
      await file.close();
    }
  }
}

/**
 * The stream position of a byte of the stored file (not of the marker) with this layout. From a
 * position `storedOffsetFor` gives, the bytes it says are available follow on in the stream.
 */
function streamPosition(layout: StoredLayout, storedOffset: number): number {
  const tailStoredStart = layout.storedBytes - layout.tailBytes;
  return storedOffset < layout.headBytes
    ? storedOffset
    : layout.totalBytes - layout.tailBytes + (storedOffset - tailStoredStart);
}

/**
 * Opens a plain file for reading without following a symbolic link or waiting on a FIFO;
 * undefined when there is nothing at the path.
 */
export async function openPlainFile(file: string): Promise<fsp.FileHandle | undefined> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw new Error(`${file} is a symbolic link, not a file ferry-wrapper wrote`);
    throw error;
  }
  if (!(await handle.stat()).isFile()) {
    await handle.close();
    throw new Error(`${file} is not a plain file`);
  }
  return handle;
}

async function readAt(file: fsp.FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length);
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await file.read(buffer, filled, length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  // A region the wrapper has not written yet reads short; the count says it is not there.
  return filled === length ? buffer : buffer.subarray(0, filled);
}
