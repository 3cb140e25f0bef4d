// Output capture for one stream of a job. It counts every byte produced, keeps the head and/or
// the tail within the job's limit, and maps stream positions onto what was kept, for live
// `logs --follow` and for ranged reads of the stored file. Memory is bounded by the limits
// (the head and a ring buffer for the tail, both allocated as output arrives), never by volume.
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Keep, OutputLimits } from '../domain/job-spec.ts';
import { type InlineView, inlineView, type KeptPiece, omissionMarker } from './inline-view.ts';

export interface CaptureLimits {
  /** The stream's limit: the stored file, omission marker included, never holds more bytes than this. */
  readonly storedBytes: number;
  readonly inlineBytes: number;
  readonly keep: Keep;
}

export interface StreamSummary extends InlineView {
  /** Bytes the job produced on the stream, however many were kept. */
  readonly totalBytes: number;
  /** Size of the stored file: head, omission marker (if any) and tail. */
  readonly storedBytes: number;
  /** `totalBytes` > the limit: some produced bytes are not in the stored file. */
  readonly truncated: boolean;
  /** Stored bytes from the start of the stream. */
  readonly headBytes: number;
  /** Stored bytes from the end of the stream. */
  readonly tailBytes: number;
  /** Produced bytes not stored: `totalBytes - headBytes - tailBytes`. */
  readonly omittedBytes: number;
}

export interface CaptureResult {
  readonly stored: Buffer;
  readonly summary: StreamSummary;
}

/** What a reader needs to know about a stored (or live) stream to map positions onto it. */
export type StoredLayout = Pick<StreamSummary, 'totalBytes' | 'storedBytes' | 'headBytes' | 'tailBytes'>;

export interface StoredPosition {
  /** The position that can be read: the one asked for, or the start of the tail when it was omitted. */
  readonly position: number;
  /** Where `position` is in the stored file. */
  readonly storedOffset: number;
  /** Produced bytes jumped over because they were not kept. */
  readonly skippedBytes: number;
  /** Stored bytes readable from `storedOffset` without crossing an omission marker. */
  readonly availableBytes: number;
}

export interface RangeRead {
  readonly data: Buffer;
  /** The stream position to ask for next. */
  readonly nextOffset: number;
  /** Produced bytes before `data` that were not kept (0 unless the offset fell in the omitted gap). */
  readonly skippedBytes: number;
}

/** The capture limits of one stream of a job. */
export function captureLimitsFor(
  limits: Pick<OutputLimits, 'stdoutBytes' | 'stderrBytes' | 'inlineBytes' | 'keep'>,
  stream: 'stdout' | 'stderr',
): CaptureLimits {
  return {
    storedBytes: stream === 'stdout' ? limits.stdoutBytes : limits.stderrBytes,
    inlineBytes: limits.inlineBytes,
    keep: limits.keep,
  };
}

/**
 * The smallest limit at which `head+tail` keeps both ends: room for the longest possible marker
 * and a byte on each side of it. Under it a marker would crowd out the output, so only the head
 * is kept, like `head`.
 */
export const MIN_HEAD_TAIL_BYTES = Buffer.byteLength(omissionMarker(Number.MAX_SAFE_INTEGER)) + 2;

/**
 * How much the capture holds while output comes: the first floor(limit/2) bytes for `head+tail`
 * and the rest of the limit for the tail. Once output passes the limit, the marker's room is
 * taken out of these (see `keptAround`).
 */
export function splitLimit({ storedBytes, keep }: CaptureLimits): { headLimit: number; tailLimit: number } {
  switch (keep) {
    case 'head':
      return { headLimit: storedBytes, tailLimit: 0 };
    case 'tail':
      return { headLimit: 0, tailLimit: storedBytes };
    case 'head+tail': {
      if (storedBytes < MIN_HEAD_TAIL_BYTES) return { headLimit: storedBytes, tailLimit: 0 };
      const headLimit = Math.floor(storedBytes / 2);
      return { headLimit, tailLimit: storedBytes - headLimit };
    }
  }
}

/**
 * Head and tail bytes kept around an omission marker so that head, marker and tail together fit
 * in `limit`, for a stream of `total` bytes that does not fit. The marker's length depends on the
 * count it shows, which grows as the kept bytes shrink: start from the shortest count and lengthen
 * until the marker fits the room left (at most a byte of the limit may then go unused).
 */
export function keptAround(limit: number, total: number): { head: number; tail: number; marker: number } {
  let marker = Buffer.byteLength(omissionMarker(total - limit));
  for (;;) {
    const kept = limit - marker;
    const needed = Buffer.byteLength(omissionMarker(total - kept));
    if (needed <= marker) {
      const head = Math.floor(kept / 2);
      return { head, tail: kept - head, marker: needed };
    }
    marker = needed;
  }
}

// Buffers start small so that a job printing one line does not cost the whole limit.
const INITIAL_CAPACITY = 64 * 1024;
const EMPTY = Buffer.alloc(0);

const grownCapacity = (current: number, needed: number, limit: number): number =>
  Math.min(limit, Math.max(needed, current * 2, INITIAL_CAPACITY));

/** The last `limit` bytes written to it, in a buffer that grows up to `limit` and then wraps. */
class TailRing {
  private buffer: Buffer = EMPTY;
  private start = 0;
  private size = 0;

  constructor(private readonly limit: number) {}

  get length(): number {
    return this.size;
  }

  push(bytes: Uint8Array): void {
    if (bytes.length === 0 || this.limit === 0) return;
    if (bytes.length >= this.limit) {
      // Everything kept so far is pushed out: no need to preserve it while growing.
      if (this.buffer.length < this.limit) this.buffer = Buffer.allocUnsafe(this.limit);
      this.buffer.set(bytes.subarray(bytes.length - this.limit), 0);
      this.start = 0;
      this.size = this.limit;
      return;
    }
    const needed = this.size + bytes.length;
    if (needed > this.buffer.length && this.buffer.length < this.limit) {
      const grown = Buffer.allocUnsafe(grownCapacity(this.buffer.length, needed, this.limit));
      this.copyInto(grown, 0, 0, this.size);
      this.buffer = grown;
      this.start = 0;
    }
    const capacity = this.buffer.length;
    const writeAt = (this.start + this.size) % capacity;
    const untilWrap = Math.min(bytes.length, capacity - writeAt);
    this.buffer.set(bytes.subarray(0, untilWrap), writeAt);
    if (untilWrap < bytes.length) this.buffer.set(bytes.subarray(untilWrap), 0);
    const overwritten = Math.max(0, needed - capacity);
    this.start = (this.start + overwritten) % capacity;
    this.size = needed - overwritten;
  }

  /** A copy of `length` bytes starting `from` bytes after the oldest one. */
  read(from: number, length: number): Buffer {
    const copy = Buffer.allocUnsafe(length);
    this.copyInto(copy, 0, from, length);
    return copy;
  }

  /** Copies `length` bytes starting `from` bytes after the oldest one into `target` at `at`. */
  copyInto(target: Buffer, at: number, from: number, length: number): void {
    if (length === 0) return;
    const capacity = this.buffer.length;
    const begin = (this.start + from) % capacity;
    const untilWrap = Math.min(length, capacity - begin);
    this.buffer.copy(target, at, begin, begin + untilWrap);
    if (untilWrap < length) this.buffer.copy(target, at + untilWrap, 0, length - untilWrap);
  }
}

/**
 * The stored file of a stream of `total` bytes of which the first `headLength` and the last
 * `tailLength` are held (as the head and the tail ring hold them), if it ended now.
 */
export function layoutOfKept(
  limit: number,
  headLength: number,
  tailLength: number,
  total: number,
): StoredLayout {
  // A marker only stands between a head and a tail, and only once bytes between them are lost.
  const between = headLength > 0 && tailLength > 0 && total > headLength + tailLength;
  if (!between) {
    return {
      totalBytes: total,
      storedBytes: headLength + tailLength,
      headBytes: headLength,
      tailBytes: tailLength,
    };
  }
  const { head, tail, marker } = keptAround(limit, total);
  return { totalBytes: total, storedBytes: head + marker + tail, headBytes: head, tailBytes: tail };
}

/** What a capture holds of a stream of `total` bytes: how much of its start and of its end. */
export function heldOf(limits: CaptureLimits, total: number): { headLength: number; tailLength: number } {
  const { headLimit, tailLimit } = splitLimit(limits);
  const headLength = Math.min(total, headLimit);
  return { headLength, tailLength: Math.min(tailLimit, total - headLength) };
}

/**
 * Captures one output stream. `write` is synchronous, copies what it keeps (callers may reuse
 * their buffers) and never throws because of volume. The head is held in memory too, bounded
 * by its half of the limit, so that a live reader can be served from the start of the stream.
 */
export class StreamCapture {
  readonly limits: CaptureLimits;
  private readonly headLimit: number;
  private tail: TailRing;
  private head: Buffer = EMPTY;
  private headLength = 0;
  private total = 0;
  private result: CaptureResult | undefined;

  constructor(limits: CaptureLimits) {
    assertByteCount(limits.storedBytes, 'storedBytes');
    assertByteCount(limits.inlineBytes, 'inlineBytes');
    this.limits = { ...limits };
    const { headLimit, tailLimit } = splitLimit(limits);
    this.headLimit = headLimit;
    this.tail = new TailRing(tailLimit);
  }

  /**
   * A capture holding what another capturer kept of a stream (the Docker backend's wrapper keeps
   * it in a spool file): `head` and `tail` must be exactly what this capture would hold after
   * `totalBytes` bytes, so that the stored result is the same as if it had seen them all.
   */
  static restore(
    limits: CaptureLimits,
    kept: { head: Buffer; tail: Buffer; totalBytes: number },
  ): StreamCapture {
    const capture = new StreamCapture(limits);
    assertByteCount(kept.totalBytes, 'totalBytes');
    const held = heldOf(limits, kept.totalBytes);
    if (kept.head.length !== held.headLength || kept.tail.length !== held.tailLength) {
      throw new RangeError(
        `StreamCapture.restore: ${kept.totalBytes} bytes keep ${held.headLength} + ${held.tailLength}, ` +
          `given ${kept.head.length} + ${kept.tail.length}`,
      );
    }
    if (kept.head.length > 0) capture.appendHead(kept.head);
    capture.tail.push(kept.tail);
    capture.total = kept.totalBytes;
    return capture;
  }

  write(chunk: Uint8Array): void {
    if (this.result !== undefined) throw new Error('StreamCapture: write after finish');
    const headPart = Math.min(this.headLimit - this.headLength, chunk.length);
    if (headPart > 0) this.appendHead(chunk.subarray(0, headPart));
    this.tail.push(headPart > 0 ? chunk.subarray(headPart) : chunk);
    this.total += chunk.length;
  }

  get totalBytes(): number {
    return this.total;
  }

  /** Reads produced bytes from stream position `offset` out of what is kept right now. */
  readRange(offset: number, maxBytes: number): RangeRead {
    if (this.result !== undefined) {
      return readStoredRange(this.result.stored, this.result.summary, offset, maxBytes);
    }
    return readRangeWith(this.layout(), offset, maxBytes, (storedOffset, length) =>
      this.readKept(storedOffset, length),
    );
  }

  /** The stored content (head, marker, tail) and its summary. Calling it again returns the same result. */
  finish(): CaptureResult {
    if (this.result !== undefined) return this.result;
    const layout = this.layout();
    const { headBytes, tailBytes, storedBytes } = layout;
    const omittedBytes = this.total - headBytes - tailBytes;
    // Assembled in place: one buffer of the stored size, no intermediate copies of head or tail.
    const stored = Buffer.allocUnsafe(storedBytes);
    this.head.copy(stored, 0, 0, headBytes);
    const hasMarker = storedBytes > headBytes + tailBytes;
    if (hasMarker) stored.write(omissionMarker(omittedBytes), headBytes, 'latin1');
    this.tail.copyInto(stored, storedBytes - tailBytes, this.tail.length - tailBytes, tailBytes);
    const kept: KeptPiece[] = [
      { bytes: stored.subarray(0, headBytes), start: 0 },
      { bytes: stored.subarray(storedBytes - tailBytes), start: this.total - tailBytes },
    ];
    this.result = {
      stored,
      summary: {
        ...layout,
        truncated: this.total > this.limits.storedBytes,
        omittedBytes,
        ...inlineView(kept, this.total, this.limits.inlineBytes, this.limits.keep),
      },
    };
    // From now on reads are served from the stored buffer; the live ones would only double the memory.
    this.head = EMPTY;
    this.tail = new TailRing(0);
    return this.result;
  }

  private appendHead(bytes: Uint8Array): void {
    const needed = this.headLength + bytes.length;
    if (needed > this.head.length) {
      const grown = Buffer.allocUnsafe(grownCapacity(this.head.length, needed, this.headLimit));
      this.head.copy(grown, 0, 0, this.headLength);
      this.head = grown;
    }
    this.head.set(bytes, this.headLength);
    this.headLength = needed;
  }

  /** The stored file as it would be if the stream ended now. */
  private layout(): StoredLayout {
    return layoutOfKept(this.limits.storedBytes, this.headLength, this.tail.length, this.total);
  }

  /** Reads the live equivalent of the stored file, where no marker ever spans the range asked for. */
  private readKept(storedOffset: number, length: number): Buffer {
    const { storedBytes, headBytes, tailBytes } = this.layout();
    const fromHead = Math.max(0, Math.min(length, headBytes - storedOffset));
    const headCopy = Buffer.from(this.head.subarray(storedOffset, storedOffset + fromHead));
    if (fromHead === length) return headCopy;
    const tailStoredStart = storedBytes - tailBytes;
    // The ring may hold more of the tail than is kept around a marker: skip its oldest bytes.
    const tailFrom = this.tail.length - tailBytes + storedOffset + fromHead - tailStoredStart;
    const tailCopy = this.tail.read(tailFrom, length - fromHead);
    return fromHead === 0 ? tailCopy : Buffer.concat([headCopy, tailCopy]);
  }
}

/**
 * Maps a position in the produced stream onto the stored file described by `layout`. A position
 * in the omitted gap moves to the start of the tail (or to the end, when only a head is kept);
 * a position past the end stays where it is with nothing available yet, as a live stream may
 * still reach it.
 */
export function storedOffsetFor(layout: StoredLayout, position: number): StoredPosition {
  assertByteCount(position, 'position');
  const { totalBytes, storedBytes, headBytes, tailBytes } = layout;
  const tailStart = totalBytes - tailBytes;
  const tailStoredStart = storedBytes - tailBytes;
  if (position < headBytes) {
    const contiguousEnd = tailStart === headBytes ? totalBytes : headBytes;
    return { position, storedOffset: position, skippedBytes: 0, availableBytes: contiguousEnd - position };
  }
  if (position < tailStart) {
    return {
      position: tailStart,
      storedOffset: tailStoredStart,
      skippedBytes: tailStart - position,
      availableBytes: tailBytes,
    };
  }
  if (position <= totalBytes) {
    return {
      position,
      storedOffset: tailStoredStart + (position - tailStart),
      skippedBytes: 0,
      availableBytes: totalBytes - position,
    };
  }
  return { position, storedOffset: storedBytes, skippedBytes: 0, availableBytes: 0 };
}

/** `readRange` over a stored file held in memory (e.g. read back from the object store). */
export function readStoredRange(
  stored: Buffer,
  layout: StoredLayout,
  offset: number,
  maxBytes: number,
): RangeRead {
  return readRangeWith(layout, offset, maxBytes, (storedOffset, length) =>
    stored.subarray(storedOffset, storedOffset + length),
  );
}

function readRangeWith(
  layout: StoredLayout,
  offset: number,
  maxBytes: number,
  read: (storedOffset: number, length: number) => Buffer,
): RangeRead {
  assertByteCount(maxBytes, 'maxBytes');
  const at = storedOffsetFor(layout, offset);
  const length = Math.min(maxBytes, at.availableBytes);
  return {
    data: length > 0 ? read(at.storedOffset, length) : EMPTY,
    nextOffset: at.position + length,
    skippedBytes: at.skippedBytes,
  };
}

/**
 * Feeds a readable (a child's stdout or stderr) into `capture` until it ends. It consumes in
 * flowing mode and keeps nothing back, so the producer is never slowed down by the capture.
 */
export async function captureStream(readable: Readable, capture: StreamCapture): Promise<void> {
  readable.on('data', (chunk: unknown) => {
    if (!(chunk instanceof Uint8Array)) {
      readable.destroy(new TypeError('captureStream needs bytes; the readable has an encoding set'));
      return;
    }
    try {
      capture.write(chunk);
    } catch (error) {
      readable.destroy(error instanceof Error ? error : new Error(String(error)));
    }
  });
  await finished(readable, { writable: false });
}

function assertByteCount(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative integer, got ${value}`);
  }
}
