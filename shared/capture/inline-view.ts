// The manifest's inline text for one stream: a view of at most `inlineBytes` of the kept bytes,
// cut the way the stored file is cut (head, tail, or both around an omission marker), given as
// UTF-8 text when it is text and as base64 otherwise, so binary output survives the JSON manifest.
import { isUtf8 } from 'node:buffer';
import type { Keep } from '../domain/job-spec.ts';

/**
 * Stands where produced bytes were left out, in the stored file and in the inline view. The count
 * is of produced bytes between the bytes shown before and after it. In the stored file it counts
 * against the stream's limit; in the inline view it is extra to `inlineBytes`.
 */
export const omissionMarker = (omittedBytes: number): string => `\n[ferry: ${omittedBytes} bytes omitted]\n`;

/** Kept bytes that are contiguous in the produced stream, starting at stream position `start`. */
export interface KeptPiece {
  readonly bytes: Buffer;
  readonly start: number;
}

export interface InlineView {
  readonly inline: string;
  readonly inlineEncoding: 'utf8' | 'base64';
  /** True when the view does not show every kept byte (limit reached, or a partial character trimmed). */
  readonly inlineTruncated: boolean;
}

/**
 * Builds the inline view of `kept` (the stored bytes without markers, in stream order).
 * `head` shows the first `inlineBytes` kept bytes, `tail` the last, `head+tail` the first half and
 * the last half with a marker between them. When the view is valid UTF-8 once a character cut in
 * two at an edge is trimmed, it is text; otherwise it is the untrimmed bytes in base64.
 */
export function inlineView(
  kept: readonly KeptPiece[],
  totalBytes: number,
  inlineBytes: number,
  keep: Keep,
): InlineView {
  const keptBytes = byteCount(kept);
  const shown = mergeContiguous(selectShown(kept, keptBytes, inlineBytes, keep));

  const trimmed = shown
    .map((piece) => trimPartialCharacters(piece, totalBytes))
    .filter((piece) => piece.bytes.length > 0);
  if (trimmed.every((piece) => isUtf8(piece.bytes))) {
    return {
      inline: joinWithMarkers(trimmed, (piece) => piece.bytes.toString('utf8'), omissionMarker).join(''),
      inlineEncoding: 'utf8',
      inlineTruncated: byteCount(trimmed) < keptBytes,
    };
  }
  const bytes = Buffer.concat(
    joinWithMarkers(
      shown,
      (piece) => piece.bytes,
      (omitted) => Buffer.from(omissionMarker(omitted)),
    ),
  );
  return {
    inline: bytes.toString('base64'),
    inlineEncoding: 'base64',
    inlineTruncated: byteCount(shown) < keptBytes,
  };
}

function selectShown(
  kept: readonly KeptPiece[],
  keptBytes: number,
  inlineBytes: number,
  keep: Keep,
): KeptPiece[] {
  if (keptBytes <= inlineBytes) return [...kept];
  switch (keep) {
    case 'head':
      return takeFirst(kept, inlineBytes);
    case 'tail':
      return takeLast(kept, inlineBytes);
    case 'head+tail': {
      const headShare = Math.floor(inlineBytes / 2);
      // headShare + tailShare < keptBytes, so the two never overlap or touch.
      return [...takeFirst(kept, headShare), ...takeLast(kept, inlineBytes - headShare)];
    }
  }
}

function takeFirst(pieces: readonly KeptPiece[], count: number): KeptPiece[] {
  const taken: KeptPiece[] = [];
  let remaining = count;
  for (const piece of pieces) {
    if (remaining === 0) break;
    const length = Math.min(remaining, piece.bytes.length);
    taken.push({ bytes: piece.bytes.subarray(0, length), start: piece.start });
    remaining -= length;
  }
  return taken;
}

function takeLast(pieces: readonly KeptPiece[], count: number): KeptPiece[] {
  const taken: KeptPiece[] = [];
  let remaining = count;
  for (const piece of [...pieces].reverse()) {
    if (remaining === 0) break;
    const length = Math.min(remaining, piece.bytes.length);
    const from = piece.bytes.length - length;
    taken.unshift({ bytes: piece.bytes.subarray(from), start: piece.start + from });
    remaining -= length;
  }
  return taken;
}

/** Joins pieces that follow each other in the stream, so a marker only stands where bytes are missing. */
function mergeContiguous(pieces: readonly KeptPiece[]): KeptPiece[] {
  const merged: KeptPiece[] = [];
  for (const piece of pieces) {
    if (piece.bytes.length === 0) continue;
    const last = merged.at(-1);
    if (last !== undefined && last.start + last.bytes.length === piece.start) {
      merged[merged.length - 1] = { bytes: Buffer.concat([last.bytes, piece.bytes]), start: last.start };
    } else {
      merged.push(piece);
    }
  }
  return merged;
}

function joinWithMarkers<T>(
  pieces: readonly KeptPiece[],
  render: (piece: KeptPiece) => T,
  marker: (omittedBytes: number) => T,
): T[] {
  const parts: T[] = [];
  let previousEnd: number | undefined;
  for (const piece of pieces) {
    if (previousEnd !== undefined) parts.push(marker(piece.start - previousEnd));
    parts.push(render(piece));
    previousEnd = piece.start + piece.bytes.length;
  }
  return parts;
}

const byteCount = (pieces: readonly KeptPiece[]): number =>
  pieces.reduce((sum, piece) => sum + piece.bytes.length, 0);

const isContinuationByte = (byte: number): boolean => (byte & 0xc0) === 0x80;

/** Length of the UTF-8 sequence a lead byte announces (1 for ASCII and for bytes that cannot lead). */
function sequenceLength(leadByte: number): number {
  if (leadByte >= 0xf0) return 4;
  if (leadByte >= 0xe0) return 3;
  if (leadByte >= 0xc0) return 2;
  return 1;
}

/**
 * Drops the pieces of a character cut in two where the piece was cut out of the stream. Edges
 * that are the real start or end of the output are left alone: a character broken there is the
 * job's own, and the view should then fall back to base64.
 */
export function trimPartialCharacters(piece: KeptPiece, totalBytes: number): KeptPiece {
  const { bytes } = piece;
  let from = 0;
  let to = bytes.length;
  if (piece.start > 0) {
    while (from < Math.min(3, to) && isContinuationByte(bytes[from] ?? 0)) from += 1;
  }
  if (piece.start + bytes.length < totalBytes) {
    for (let index = to - 1; index >= Math.max(from, to - 4); index -= 1) {
      const byte = bytes[index] ?? 0;
      if (isContinuationByte(byte)) continue;
      if (to - index < sequenceLength(byte)) to = index;
      break;
    }
  }
  return { bytes: bytes.subarray(from, to), start: piece.start + from };
}
