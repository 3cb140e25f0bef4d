// Delivering stored outputs to their file:// url: what was stored arrives, whole or not at all,
// and only inside the allowed directories, whatever links lie on the way.
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { OutputResult } from '../../shared/domain/execution.ts';
import type { JobOutput } from '../../shared/domain/job-spec.ts';
import { deliverOutput } from '../../shared/staging/deliver.ts';
import { tempDir } from '../support/server.ts';

let work: string;
let allowed: string;
let outside: string;
let job: string;

beforeAll(async () => {
  work = await tempDir('ferry-deliver-');
  allowed = path.join(work, 'allowed');
  outside = path.join(work, 'outside');
  job = path.join(work, 'job');
  for (const dir of [allowed, outside, path.join(job, 'dir', 'sub')])
    await fsp.mkdir(dir, { recursive: true });
  await fsp.writeFile(path.join(job, 'file.txt'), 'whole file\n');
  await fsp.writeFile(path.join(job, 'dir', 'a.txt'), 'a\n');
  await fsp.writeFile(path.join(job, 'dir', 'sub', 'b.txt'), '');
  await fsp.symlink(outside, path.join(allowed, 'escape'));
});

afterAll(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');
const roots = () => ({ roots: [allowed], excluded: [path.join(allowed, 'ferry-data')] });
const fileOutput = (url: string): JobOutput => ({
  path: '/out/file.txt',
  name: 'file.txt',
  type: 'FILE',
  url,
});
const stored = (more: Partial<OutputResult> = {}): OutputResult => ({
  name: 'file.txt',
  path: '/out/file.txt',
  type: 'FILE',
  key: 'executions/x/outputs/file.txt',
  bytes: 11,
  totalBytes: 11,
  files: 1,
  truncated: false,
  ...more,
});

describe('delivering an output to its url', () => {
  it('copies a file, replacing what was there, and a directory file by file', async () => {
    const target = path.join(allowed, 'runs', 'file.txt');
    await fsp.mkdir(path.dirname(target));
    await fsp.writeFile(target, 'older and longer content\n');
    const file = await deliverOutput(
      fileOutput(`file://${target}`),
      stored(),
      path.join(job, 'file.txt'),
      roots(),
    );
    expect(file.deliveredTo).toBe(`file://${target}`);
    expect(await fsp.readFile(target, 'utf8')).toBe('whole file\n');

    const dirUrl = `file://${allowed}/runs/dir`;
    const dir = await deliverOutput(
      { path: '/out/dir', name: 'dir', type: 'DIRECTORY', url: dirUrl },
      stored({
        name: 'dir',
        type: 'DIRECTORY',
        bytes: 2,
        entries: [
          { path: 'a.txt', bytes: 2, sha256: sha256('a\n') },
          { path: 'sub/b.txt', bytes: 0, sha256: sha256('') },
        ],
      }),
      path.join(job, 'dir'),
      roots(),
    );
    expect(dir.deliveryError).toBeUndefined();
    expect(await fsp.readFile(path.join(allowed, 'runs/dir/a.txt'), 'utf8')).toBe('a\n');
    expect(await fsp.readFile(path.join(allowed, 'runs/dir/sub/b.txt'), 'utf8')).toBe('');
    // Nothing but the files themselves is left behind.
    expect((await fsp.readdir(path.join(allowed, 'runs'))).sort()).toEqual(['dir', 'file.txt']);
  });

  it('never follows a link out of the allowed directory, nor writes in Ferry’s own', async () => {
    const escaped = await deliverOutput(
      fileOutput(`file://${allowed}/escape/stolen.txt`),
      stored(),
      path.join(job, 'file.txt'),
      roots(),
    );
    expect(escaped.deliveryError).toMatch(/outside the directories FERRY_OUTPUT_ALLOW names/);
    // Not even a directory is made on the other side of the link.
    const deeper = await deliverOutput(
      fileOutput(`file://${allowed}/escape/made/here/stolen.txt`),
      stored(),
      path.join(job, 'file.txt'),
      roots(),
    );
    expect(deeper.deliveryError).toBe(
      `could not deliver it to file://${allowed}/escape/made/here/stolen.txt: ${allowed}/escape/made/here resolves to ${outside}/made/here, outside the directories FERRY_OUTPUT_ALLOW names`,
    );
    expect(await fsp.readdir(outside)).toEqual([]);
    const own = await deliverOutput(
      fileOutput(`file://${allowed}/ferry-data/x.txt`),
      stored(),
      path.join(job, 'file.txt'),
      roots(),
    );
    expect(own.deliveryError).toMatch(/outside the directories FERRY_OUTPUT_ALLOW names/);
  });

  it('delivers a file only if it is what was stored', async () => {
    const target = path.join(allowed, 'checked.txt');
    const digest = sha256('whole file\n');
    const same = await deliverOutput(
      fileOutput(`file://${target}`),
      stored({ sha256: digest }),
      path.join(job, 'file.txt'),
      roots(),
    );
    expect(same.deliveredTo).toBe(`file://${target}`);
    await fsp.rm(target);
    // Swapped after it was stored (a process the job left behind): not delivered.
    const changed = await deliverOutput(
      fileOutput(`file://${target}`),
      stored({ sha256: sha256('something else') }),
      path.join(job, 'file.txt'),
      roots(),
    );
    expect(changed.deliveryError).toBe(
      `could not deliver it to file://${target}: file.txt is no longer what was stored`,
    );
    const shorter = await deliverOutput(
      fileOutput(`file://${target}`),
      stored({ bytes: 40 }),
      path.join(job, 'file.txt'),
      roots(),
    );
    expect(shorter.deliveryError).toMatch(/no longer what was stored/);
    expect(await fsp.readdir(allowed)).not.toContain('checked.txt');
    // A link where the file was is not followed.
    await fsp.symlink('/etc/hostname', path.join(job, 'link.txt'));
    const linked = await deliverOutput(
      fileOutput(`file://${target}`),
      stored(),
      path.join(job, 'link.txt'),
      roots(),
    );
    expect(linked.deliveryError).toMatch(/ELOOP/);
  });

  it('delivers nothing of an output that was cut or missing, and says why', async () => {
    const target = `file://${allowed}/cut.txt`;
    const cut = await deliverOutput(
      fileOutput(target),
      stored({ bytes: 4, truncated: true }),
      path.join(job, 'file.txt'),
      roots(),
    );
    expect(cut.deliveryError).toBe(
      `it was not stored in full (see outputLimits), so it was not delivered to ${target}`,
    );
    const missing = await deliverOutput(
      fileOutput(target),
      stored({ missing: true, bytes: 0, files: 0 }),
      path.join(job, 'nothing'),
      roots(),
    );
    expect(missing.deliveryError).toBe(`nothing was at /out/file.txt to deliver to ${target}`);
    await expect(fsp.stat(path.join(allowed, 'cut.txt'))).rejects.toThrow(/ENOENT/);
  });
});
