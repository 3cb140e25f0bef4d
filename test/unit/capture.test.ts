import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  type CaptureLimits,
  captureLimitsFor,
  captureStream,
  MIN_HEAD_TAIL_BYTES,
  readStoredRange,
  StreamCapture,
  type StreamSummary,
  storedOffsetFor,
} from '../../shared/capture/stream-capture.ts';
import type { Keep } from '../../shared/domain/job-spec.ts';

const KEEPS: readonly Keep[] = ['head', 'tail', 'head+tail'];
const KiB = 1024;
const MiB = 1024 * KiB;

// The produced stream: byte i is a hash of i, so any slice taken from the wrong place differs.
const byteAt = (position: number): number => Math.imul(position ^ (position >>> 13), 0x9e3779b1) >>> 24;

function produced(start: number, end: number): Buffer {
  const bytes = Buffer.allocUnsafe(Math.max(0, end - start));
  for (let index = 0; index < bytes.length; index += 1) bytes[index] = byteAt(start + index);
  return bytes;
}

const marker = (omitted: number): Buffer => Buffer.from(`\n[ferry: ${omitted} bytes omitted]\n`);

/**
 * Head and tail bytes of a truncated head+tail stream: the most produced bytes that, with the
 * marker counting what is left out, fit in the limit; the head gets the smaller half. Under the
 * smallest head+tail limit only the head is kept.
 */
function headTailSplit(limit: number, total: number): { head: number; tail: number } {
  if (limit < MIN_HEAD_TAIL_BYTES) return { head: limit, tail: 0 };
  let kept = limit;
  while (kept + marker(total - kept).length > limit) kept -= 1;
  return { head: Math.floor(kept / 2), tail: kept - Math.floor(kept / 2) };
}

/** What the stored file must hold, worked out from the rules rather than from the implementation. */
function expectedStored(keep: Keep, limit: number, total: number): Buffer {
  if (total <= limit) return produced(0, total);
  switch (keep) {
    case 'head':
      return produced(0, limit);
    case 'tail':
      return produced(total - limit, total);
    case 'head+tail': {
      const { head, tail } = headTailSplit(limit, total);
      if (tail === 0) return produced(0, head);
      return Buffer.concat([produced(0, head), marker(total - head - tail), produced(total - tail, total)]);
    }
  }
}

function expectedCounts(keep: Keep, limit: number, total: number) {
  if (keep === 'head+tail' && total > limit) {
    const { head, tail } = headTailSplit(limit, total);
    return {
      totalBytes: total,
      truncated: true,
      headBytes: head,
      tailBytes: tail,
      omittedBytes: total - head - tail,
    };
  }
  const kept = Math.min(total, limit);
  const headLimit = keep === 'head' ? limit : keep === 'tail' ? 0 : Math.floor(limit / 2);
  const headBytes = Math.min(total, keep === 'head+tail' && limit < MIN_HEAD_TAIL_BYTES ? limit : headLimit);
  return {
    totalBytes: total,
    truncated: total > limit,
    headBytes,
    tailBytes: kept - headBytes,
    omittedBytes: total - kept,
  };
}

function captureOf(limits: Partial<CaptureLimits> & { keep: Keep; storedBytes: number }): StreamCapture {
  return new StreamCapture({ inlineBytes: 4 * KiB, ...limits });
}

function writeProduced(capture: StreamCapture, total: number, chunkSizes: () => number): void {
  let position = 0;
  while (position < total) {
    const end = Math.min(total, position + Math.max(1, chunkSizes()));
    capture.write(produced(position, end));
    position = end;
  }
}

/** A small seeded generator (mulberry32), so "random" chunkings are the same on every run. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const randomInt = (random: () => number, below: number): number => Math.floor(random() * below);

function expectCaptured(capture: StreamCapture, keep: Keep, limit: number, total: number): StreamSummary {
  const { stored, summary } = capture.finish();
  expect(stored.equals(expectedStored(keep, limit, total))).toBe(true);
  expect(summary).toMatchObject(expectedCounts(keep, limit, total));
  expect(summary.storedBytes).toBe(stored.length);
  return summary;
}

describe('StreamCapture stores what the limit allows', () => {
  it.each(KEEPS)('keeps nothing and reports nothing for zero output (%s)', (keep) => {
    const capture = captureOf({ keep, storedBytes: 100 });

    const { stored, summary } = capture.finish();

    expect(stored.length).toBe(0);
    expect(summary).toEqual({
      totalBytes: 0,
      storedBytes: 0,
      truncated: false,
      headBytes: 0,
      tailBytes: 0,
      omittedBytes: 0,
      inline: '',
      inlineEncoding: 'utf8',
      inlineTruncated: false,
    });
  });

  it.each(KEEPS)('stores output under the limit unchanged (%s)', (keep) => {
    const capture = captureOf({ keep, storedBytes: 1000 });

    writeProduced(capture, 999, () => 100);

    const summary = expectCaptured(capture, keep, 1000, 999);
    expect(summary.truncated).toBe(false);
  });

  it.each(KEEPS)('does not truncate output of exactly the limit (%s)', (keep) => {
    const capture = captureOf({ keep, storedBytes: 1001 });

    writeProduced(capture, 1001, () => 77);

    const summary = expectCaptured(capture, keep, 1001, 1001);
    expect(summary).toMatchObject({ truncated: false, omittedBytes: 0, storedBytes: 1001 });
  });

  it.each(KEEPS)('truncates output one byte past the limit (%s)', (keep) => {
    const capture = captureOf({ keep, storedBytes: 1001 });

    writeProduced(capture, 1002, () => 77);

    const summary = expectCaptured(capture, keep, 1001, 1002);
    expect(summary.truncated).toBe(true);
    // head+tail gives up bytes to make room for its marker.
    if (keep !== 'head+tail') expect(summary.omittedBytes).toBe(1);
  });

  it('puts the omission marker between head and tail, inside the limit, counting the omitted bytes', () => {
    const capture = captureOf({ keep: 'head+tail', storedBytes: 50 });

    capture.write(Buffer.from('0123456789'.repeat(10)));

    const { stored, summary } = capture.finish();
    expect(stored.toString('latin1')).toBe('01234567890\n[ferry: 77 bytes omitted]\n890123456789');
    expect(stored.length).toBe(50);
    expect(summary).toMatchObject({
      headBytes: 11,
      tailBytes: 12,
      omittedBytes: 77,
      storedBytes: 50,
      truncated: true,
    });
  });

  it('keeps only the head for head+tail when the limit has no room for a marker and both ends', () => {
    const capture = captureOf({ keep: 'head+tail', storedBytes: MIN_HEAD_TAIL_BYTES - 1 });

    capture.write(produced(0, 1000));

    const { stored, summary } = capture.finish();
    expect(stored.equals(produced(0, MIN_HEAD_TAIL_BYTES - 1))).toBe(true);
    expect(summary).toMatchObject({ headBytes: MIN_HEAD_TAIL_BYTES - 1, tailBytes: 0, truncated: true });
  });

  it.each(KEEPS)('never stores more than the limit, marker included, for any limit and size (%s)', (keep) => {
    const random = seededRandom(13);
    const limits = [
      0,
      1,
      2,
      MIN_HEAD_TAIL_BYTES - 1,
      MIN_HEAD_TAIL_BYTES,
      44,
      45,
      60,
      64,
      99,
      100,
      101,
      1024,
    ];
    // Totals around the limit and where the omitted count gains a digit, which lengthens the marker.
    const totalsFor = (limit: number) => [
      ...Array.from({ length: 40 }, (_, i) => limit + i),
      ...[10, 100, 1000, 10_000, 100_000].flatMap((power) =>
        [-2, -1, 0, 1, 2].map((d) => limit + power + d - 30),
      ),
      limit * 3 + 7,
      100 * 1024,
    ];
    for (const limit of limits) {
      for (const total of totalsFor(limit).filter((t) => t >= 0)) {
        const capture = captureOf({ keep, storedBytes: limit });

        writeProduced(capture, total, () => 1 + randomInt(random, 2 * limit + 50));

        const summary = expectCaptured(capture, keep, limit, total);
        expect(summary.storedBytes).toBeLessThanOrEqual(limit);
        if (total >= limit) expect(summary.storedBytes).toBeGreaterThanOrEqual(limit - 1);
      }
    }
  });

  it.each(KEEPS)('keeps the exact bytes of 100 MiB written in 64 KiB chunks (%s)', (keep) => {
    const limit = 10 * MiB + 3;
    const total = 100 * MiB;
    const capture = captureOf({ keep, storedBytes: limit });

    writeProduced(capture, total, () => 64 * KiB);

    expect(capture.totalBytes).toBe(total);
    expectCaptured(capture, keep, limit, total);
  });

  it.each(KEEPS)('handles chunks straddling the head end and the tail start (%s)', (keep) => {
    const sizes = [3, 4, 20, 3, 1, 9];
    const capture = captureOf({ keep, storedBytes: 10 });

    writeProduced(capture, 40, () => sizes.shift() ?? 40);

    expectCaptured(capture, keep, 10, 40);
  });

  it.each(KEEPS)('keeps the right bytes for any chunking around small limits (%s)', (keep) => {
    const random = seededRandom(7);
    for (const limit of [0, 1, 2, 3, 7, 10, 11]) {
      for (let total = 0; total <= 3 * limit + 5; total += 1) {
        const capture = captureOf({ keep, storedBytes: limit });

        writeProduced(capture, total, () => 1 + randomInt(random, 2 * limit + 3));

        expectCaptured(capture, keep, limit, total);
      }
    }
  });

  it.each(KEEPS)('keeps the right bytes when chunks are larger than the whole limit (%s)', (keep) => {
    const random = seededRandom(11);
    const limit = 300 * KiB + 1;
    const capture = captureOf({ keep, storedBytes: limit });

    writeProduced(capture, 5 * MiB + 17, () => 1 + randomInt(random, 700 * KiB));

    expectCaptured(capture, keep, limit, 5 * MiB + 17);
  });

  it.each(KEEPS)('keeps the right bytes written one byte at a time (%s)', (keep) => {
    const capture = captureOf({ keep, storedBytes: 101 });

    writeProduced(capture, 1000, () => 1);

    expectCaptured(capture, keep, 101, 1000);
  });

  it.each(KEEPS)('keeps all 256 byte values exactly (%s)', (keep) => {
    const allValues = Buffer.from(Array.from({ length: 256 }, (_, value) => value));
    const capture = captureOf({ keep, storedBytes: 300 });

    for (let round = 0; round < 4; round += 1) capture.write(allValues);

    const { stored, summary } = capture.finish();
    const everything = Buffer.concat([allValues, allValues, allValues, allValues]);
    const expected = {
      head: everything.subarray(0, 300),
      tail: everything.subarray(1024 - 300),
      'head+tail': Buffer.concat([everything.subarray(0, 136), marker(752), everything.subarray(1024 - 136)]),
    }[keep];
    expect(stored.equals(expected)).toBe(true);
    expect(summary.inlineEncoding).toBe('base64');
    expect(Buffer.from(summary.inline, 'base64').equals(expected)).toBe(true);
  });

  it('copies what it keeps, so a producer may reuse its buffer', () => {
    const capture = captureOf({ keep: 'head+tail', storedBytes: 50 });
    const reused = Buffer.alloc(30);

    for (const fill of ['a', 'b', 'c']) capture.write(reused.fill(fill));

    expect(capture.finish().stored.toString()).toBe(
      `${'a'.repeat(11)}\n[ferry: 67 bytes omitted]\n${'c'.repeat(12)}`,
    );
  });

  it('takes its limits for one stream from the job output limits', () => {
    const limits = { stdoutBytes: 100, stderrBytes: 50, inlineBytes: 10, keep: 'tail' as const };

    expect(captureLimitsFor(limits, 'stderr')).toEqual({ storedBytes: 50, inlineBytes: 10, keep: 'tail' });
    expect(captureLimitsFor(limits, 'stdout').storedBytes).toBe(100);
  });
});

describe('StreamCapture inline view', () => {
  function inlineOf(keep: Keep, storedBytes: number, inlineBytes: number, output: Buffer | string) {
    const capture = new StreamCapture({ keep, storedBytes, inlineBytes });
    capture.write(Buffer.from(output));
    return capture.finish().summary;
  }

  it.each(KEEPS)('is the whole text when the stored text fits (%s)', (keep) => {
    const summary = inlineOf(keep, 100, 50, 'hello, world\n');

    expect(summary).toMatchObject({
      inline: 'hello, world\n',
      inlineEncoding: 'utf8',
      inlineTruncated: false,
    });
  });

  it('shows the first inlineBytes for head', () => {
    const summary = inlineOf('head', 100, 10, 'abcdefghijklmnopqrstuvwxyz');

    expect(summary).toMatchObject({ inline: 'abcdefghij', inlineEncoding: 'utf8', inlineTruncated: true });
  });

  it('shows the last inlineBytes for tail', () => {
    const summary = inlineOf('tail', 100, 10, 'abcdefghijklmnopqrstuvwxyz');

    expect(summary).toMatchObject({ inline: 'qrstuvwxyz', inlineEncoding: 'utf8', inlineTruncated: true });
  });

  it('shows both halves for head+tail, with a marker counting the produced bytes not shown', () => {
    const summary = inlineOf('head+tail', 100, 10, 'abcdefghijklmnopqrstuvwxyz');

    expect(summary).toMatchObject({
      inline: 'abcde\n[ferry: 16 bytes omitted]\nvwxyz',
      inlineEncoding: 'utf8',
      inlineTruncated: true,
    });
  });

  it('repeats the stored marker when the whole stored content fits', () => {
    const summary = inlineOf('head+tail', 60, 100, 'abcdefghijklmnopqrstuvwxyz'.repeat(4));

    expect(summary).toMatchObject({
      inline: 'abcdefghijklmnop\n[ferry: 71 bytes omitted]\njklmnopqrstuvwxyz',
      omittedBytes: 71,
      inlineTruncated: false,
    });
  });

  it('counts every produced byte between the shown halves when stored and inline are both cut', () => {
    const summary = inlineOf('head+tail', 60, 6, 'abcdefghijklmnopqrstuvwxyz'.repeat(4));

    expect(summary.inline).toBe('abc\n[ferry: 98 bytes omitted]\nxyz');
  });

  it('is base64 of the exact bytes when the output is not UTF-8', () => {
    const bytes = Buffer.from([0x41, 0xff, 0xfe, 0x00, 0x42]);

    const summary = inlineOf('head', 100, 50, bytes);

    expect(summary).toMatchObject({ inlineEncoding: 'base64', inlineTruncated: false });
    expect(Buffer.from(summary.inline, 'base64').equals(bytes)).toBe(true);
  });

  it('trims a character the stored head cut in two', () => {
    const summary = inlineOf('head', 4, 50, '€€€');

    expect(summary).toMatchObject({ inline: '€', inlineEncoding: 'utf8', inlineTruncated: true });
  });

  it('trims a character the stored tail cut in two', () => {
    const summary = inlineOf('tail', 4, 50, '€€€');

    expect(summary).toMatchObject({ inline: '€', inlineEncoding: 'utf8', inlineTruncated: true });
  });

  it('trims characters the inline limit cut in two, and counts them as not shown', () => {
    const summary = inlineOf('head+tail', 1000, 10, '😀😀😀😀😀😀');

    // 5 bytes each side cut a 4-byte emoji: one whole emoji shows on each side, 16 bytes do not.
    expect(summary).toMatchObject({
      inline: '😀\n[ferry: 16 bytes omitted]\n😀',
      inlineEncoding: 'utf8',
      inlineTruncated: true,
    });
  });

  it('keeps text whose multi-byte characters end exactly at the cut', () => {
    const summary = inlineOf('head', 6, 50, 'éééé');

    expect(summary).toMatchObject({ inline: 'ééé', inlineEncoding: 'utf8', inlineTruncated: false });
  });

  it('falls back to base64 when the output itself ends in the middle of a character', () => {
    const bytes = Buffer.from('ok €').subarray(0, 5);

    const summary = inlineOf('head', 100, 50, bytes);

    expect(summary.inlineEncoding).toBe('base64');
    expect(Buffer.from(summary.inline, 'base64').equals(bytes)).toBe(true);
  });

  it('is empty and truncated when inlineBytes is 0', () => {
    const summary = inlineOf('head+tail', 100, 0, 'abc');

    expect(summary).toMatchObject({ inline: '', inlineEncoding: 'utf8', inlineTruncated: true });
  });
});

describe('reading by stream position', () => {
  function headTailCapture(total: number): StreamCapture {
    const capture = captureOf({ keep: 'head+tail', storedBytes: 60 });
    writeProduced(capture, total, () => 7);
    return capture;
  }

  it('reads the head, skips the gap to the tail, and stops at the end', () => {
    const capture = headTailCapture(100);

    const start = capture.readRange(0, 4);
    const headEnd = capture.readRange(8, 100);
    const gap = capture.readRange(20, 5);
    const tail = capture.readRange(95, 100);
    const end = capture.readRange(100, 10);

    // 60 bytes: 16 of head, the 27-byte marker for 67 omitted bytes, 17 of tail.
    expect(start).toEqual({ data: produced(0, 4), nextOffset: 4, skippedBytes: 0 });
    expect(headEnd).toEqual({ data: produced(8, 16), nextOffset: 16, skippedBytes: 0 });
    expect(gap).toEqual({ data: produced(83, 88), nextOffset: 88, skippedBytes: 63 });
    expect(tail).toEqual({ data: produced(95, 100), nextOffset: 100, skippedBytes: 0 });
    expect(end).toEqual({ data: Buffer.alloc(0), nextOffset: 100, skippedBytes: 0 });
  });

  it('leaves an offset past the end where it is, for a follower waiting on more output', () => {
    const capture = headTailCapture(100);

    expect(capture.readRange(150, 10)).toEqual({ data: Buffer.alloc(0), nextOffset: 150, skippedBytes: 0 });
  });

  it('reads across head and tail in one go when nothing was omitted', () => {
    const capture = headTailCapture(50);

    expect(capture.readRange(5, 100)).toEqual({ data: produced(5, 50), nextOffset: 50, skippedBytes: 0 });
  });

  it.each(KEEPS)(
    'follows a live stream: what is read plus what is skipped is the whole output (%s)',
    (keep) => {
      const random = seededRandom(3);
      const capture = captureOf({ keep, storedBytes: 64 });
      const received: Buffer[] = [];
      let offset = 0;
      let skipped = 0;

      for (let step = 0; step < 200; step += 1) {
        const position = capture.totalBytes;
        capture.write(produced(position, position + randomInt(random, 40)));
        const read = capture.readRange(offset, 1 + randomInt(random, 30));
        received.push(read.data);
        skipped += read.skippedBytes;
        // Every byte handed out is the produced byte at its position.
        expect(read.data.equals(produced(read.nextOffset - read.data.length, read.nextOffset))).toBe(true);
        offset = read.nextOffset;
      }
      for (
        let read = capture.readRange(offset, 30);
        read.nextOffset > offset;
        read = capture.readRange(offset, 30)
      ) {
        received.push(read.data);
        skipped += read.skippedBytes;
        offset = read.nextOffset;
      }

      expect(offset).toBe(capture.totalBytes);
      expect(Buffer.concat(received).length + skipped).toBe(capture.totalBytes);
    },
  );

  it('moves a head-only follower to the end once the head is read', () => {
    const capture = captureOf({ keep: 'head', storedBytes: 10 });
    capture.write(produced(0, 25));

    expect(capture.readRange(4, 100)).toEqual({ data: produced(4, 10), nextOffset: 10, skippedBytes: 0 });
    expect(capture.readRange(10, 100)).toEqual({ data: Buffer.alloc(0), nextOffset: 25, skippedBytes: 15 });
  });

  it.each(KEEPS)('reads the stored file exactly as it read the live capture (%s)', (keep) => {
    const capture = captureOf({ keep, storedBytes: 77 });
    writeProduced(capture, 500, () => 13);
    const offsets = Array.from({ length: 511 }, (_, offset) => offset);
    const live = offsets.map((offset) => capture.readRange(offset, 9));

    const { stored, summary } = capture.finish();

    expect(offsets.map((offset) => readStoredRange(stored, summary, offset, 9))).toEqual(live);
    expect(offsets.map((offset) => capture.readRange(offset, 9))).toEqual(live);
  });

  it.each(KEEPS)('maps any stream position to the stored byte produced there (%s)', (keep) => {
    const random = seededRandom(5);
    for (const [limit, total] of [
      [1000, 999],
      [1000, 1000],
      [1001, 5000],
      [1, 50],
    ] as const) {
      const capture = captureOf({ keep, storedBytes: limit });
      writeProduced(capture, total, () => 1 + randomInt(random, 300));
      const { stored, summary } = capture.finish();
      const tailStart = total - summary.tailBytes;

      for (let sample = 0; sample < 500; sample += 1) {
        const position = randomInt(random, total);
        const at = storedOffsetFor(summary, position);

        if (at.skippedBytes > 0) {
          expect(position).toBeGreaterThanOrEqual(summary.headBytes);
          expect(at.position).toBe(tailStart);
          expect(at.skippedBytes).toBe(tailStart - position);
        } else {
          expect(at.position).toBe(position);
        }
        const available = stored.subarray(at.storedOffset, at.storedOffset + at.availableBytes);
        expect(available.equals(produced(at.position, at.position + at.availableBytes))).toBe(true);
      }
    }
  });
});

describe('captureStream', () => {
  it('captures a readable until it ends', async () => {
    const capture = captureOf({ keep: 'head+tail', storedBytes: 1000 });
    const chunks = Array.from({ length: 50 }, (_, index) => produced(index * 100, (index + 1) * 100));

    await captureStream(Readable.from(chunks), capture);

    expectCaptured(capture, 'head+tail', 1000, 5000);
  });

  it('captures the binary stdout of a real child process', async () => {
    const capture = captureOf({ keep: 'tail', storedBytes: 1000 });
    const child = spawn(process.execPath, [
      '-e',
      'const b = Buffer.from(Array.from({ length: 256 }, (_, i) => i)); for (let i = 0; i < 4096; i++) process.stdout.write(b);',
    ]);

    await captureStream(child.stdout, capture);

    const { stored, summary } = capture.finish();
    const allValues = Buffer.from(Array.from({ length: 256 }, (_, value) => value));
    const expected = Buffer.concat([allValues, allValues, allValues, allValues]).subarray(1024 - 1000);
    expect(summary).toMatchObject({ totalBytes: 4096 * 256, truncated: true });
    expect(stored.equals(expected)).toBe(true);
  });

  it('rejects when the readable fails, keeping what arrived before', async () => {
    const capture = captureOf({ keep: 'head', storedBytes: 1000 });
    const failing = new Readable({ read() {} });
    failing.push(Buffer.from('partial'));

    const done = captureStream(failing, capture);
    setImmediate(() => failing.destroy(new Error('pipe broke')));

    await expect(done).rejects.toThrow('pipe broke');
    expect(capture.finish().stored.toString()).toBe('partial');
  });

  it('rejects a readable that delivers text instead of bytes', async () => {
    const capture = captureOf({ keep: 'head', storedBytes: 1000 });
    const text = Readable.from([Buffer.from('abc')]).setEncoding('utf8');

    await expect(captureStream(text, capture)).rejects.toThrow(TypeError);
  });
});
