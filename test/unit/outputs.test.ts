// Collecting outputs when the files change under the collector: a file gone between the listing
// and its turn is left out with its room given back, and a path too long for a key is skipped,
// rather than the whole result being lost.
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { ResultSink } from '../../shared/ports.ts';
import { collectOutputs } from '../../shared/staging/outputs.ts';
import { tempDir } from '../support/server.ts';

/** Keeps what is put; runs `onExpect` when told which keys come next. */
function memorySink(onExpect: (keys: readonly string[]) => Promise<void> = async () => {}) {
  const stored = new Map<string, Buffer>();
  const sink: ResultSink = {
    async put(key, body) {
      const chunks: Buffer[] = [];
      if (typeof body === 'string' || Buffer.isBuffer(body)) chunks.push(Buffer.from(body));
      else for await (const chunk of body as Readable) chunks.push(Buffer.from(chunk));
      stored.set(key, Buffer.concat(chunks));
    },
    async delete(key) {
      stored.delete(key);
    },
    expect: onExpect,
  };
  return { sink, stored };
}

const limits = { outputBytes: 100, outputsBytes: 100, outputFiles: 10 };

describe('collecting a directory that changes under the collector', () => {
  it('leaves out a file gone before its turn, and gives its room to the next', async () => {
    const dir = await tempDir();
    await fsp.writeFile(path.join(dir, 'a.txt'), 'a'.repeat(60));
    await fsp.writeFile(path.join(dir, 'b.txt'), 'b'.repeat(30));
    // After the batch is decided (a and b fit 100 bytes together), a goes away.
    const { sink, stored } = memorySink(async () => {
      await fsp.rm(path.join(dir, 'a.txt'), { force: true });
    });
    const [result] = await collectOutputs(
      'ex_1',
      [{ name: 'out', path: '/out', type: 'DIRECTORY' }],
      async () => dir,
      sink,
      limits,
    );
    expect(result).toMatchObject({
      files: 1,
      bytes: 30,
      truncated: true,
      entries: [{ path: 'b.txt', bytes: 30 }],
      skipped: [{ path: 'a.txt', bytes: 60, reason: 'gone before it was stored' }],
    });
    expect([...stored.keys()]).toEqual(['executions/ex_1/outputs/out/b.txt']);
  });

  it('skips a file whose path is too long to be a key of the result store', async () => {
    const dir = await tempDir();
    const deep = path.join(dir, ...Array.from({ length: 5 }, (_, i) => `${i}${'d'.repeat(240)}`));
    await fsp.mkdir(deep, { recursive: true });
    await fsp.writeFile(path.join(deep, 'x.txt'), 'x');
    await fsp.writeFile(path.join(dir, 'short.txt'), 's');
    const { sink, stored } = memorySink();
    const [result] = await collectOutputs(
      'ex_2',
      [{ name: 'out', path: '/out', type: 'DIRECTORY' }],
      async () => dir,
      sink,
      limits,
    );
    expect(result?.files).toBe(1);
    expect(result?.skipped).toEqual([
      expect.objectContaining({ bytes: 1, reason: 'its path is too long for the result store' }),
    ]);
    expect([...stored.keys()]).toEqual(['executions/ex_2/outputs/out/short.txt']);
  });
});
