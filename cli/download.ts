// `ferry result ID --download DIR`: every stored file of a result, each checked against the
// digest its manifest gives. Files land in a directory beside DIR first and it becomes DIR only
// once all arrived intact, so an interrupted or failed download leaves nothing half-written.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ResultManifest } from '#shared/domain/execution.ts';
import { formatBytes } from '#shared/domain/units.ts';
import { UsageError } from './args.ts';

export interface ResultLinks {
  readonly manifest: ResultManifest;
  readonly links: { stdout: string; stderr: string; outputs: Record<string, string> };
}

interface Wanted {
  /** Where it goes, relative to DIR. */
  readonly file: string;
  readonly link: string;
  /** Absent for results stored before digests were kept: then only its size is checked. */
  readonly sha256?: string;
  readonly bytes: number;
}

/** What a result holds, file by file. */
function wantedOf(result: ResultLinks): Wanted[] {
  const { manifest, links } = result;
  const wanted: Wanted[] = [
    {
      file: 'stdout',
      link: links.stdout,
      bytes: manifest.stdout.storedBytes,
      ...digest(manifest.stdout.sha256),
    },
    {
      file: 'stderr',
      link: links.stderr,
      bytes: manifest.stderr.storedBytes,
      ...digest(manifest.stderr.sha256),
    },
  ];
  for (const output of manifest.outputs) {
    if (output.type === 'DIRECTORY') {
      for (const entry of output.entries ?? []) {
        const link = links.outputs[`${output.name}/${entry.path}`];
        if (link === undefined) continue;
        wanted.push({
          file: `outputs/${output.name}/${entry.path}`,
          link,
          sha256: entry.sha256,
          bytes: entry.bytes,
        });
      }
    } else {
      const link = links.outputs[output.name];
      if (link === undefined) continue;
      wanted.push({ file: `outputs/${output.name}`, link, bytes: output.bytes, ...digest(output.sha256) });
    }
  }
  return wanted;
}

const digest = (sha256: string | undefined) => (sha256 === undefined ? {} : { sha256 });

/** Saves the result into `dir`; returns the lines to tell the person. */
export async function downloadResult(result: ResultLinks, dir: string, verb: string): Promise<string[]> {
  const target = path.resolve(dir);
  const existing = await fsp.readdir(target).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    if (error.code === 'ENOTDIR') throw new UsageError(`--download ${dir}: not a directory`, verb);
    throw error;
  });
  if (existing !== undefined && existing.length > 0) {
    throw new UsageError(`--download ${dir}: the directory is not empty; name a new one`, verb);
  }
  const staging = `${target}.partial-${randomBytes(4).toString('hex')}`;
  await fsp.mkdir(staging, { recursive: true });
  try {
    const wanted = wantedOf(result);
    let bytes = 0;
    for (const one of wanted) {
      const file = path.join(staging, ...one.file.split('/'));
      if (!file.startsWith(`${staging}${path.sep}`))
        throw new Error(`${one.file} is not a path inside the directory`);
      await fsp.mkdir(path.dirname(file), { recursive: true });
      bytes += await save(one, file);
    }
    await fsp.writeFile(path.join(staging, 'result.json'), `${JSON.stringify(result.manifest, null, 2)}\n`);
    if (existing !== undefined) await fsp.rmdir(target);
    await fsp.rename(staging, target);
    const notes = result.manifest.outputs
      .filter((o) => o.truncated || o.missing)
      .map((o) =>
        o.missing
          ? `  output ${o.name}: nothing was at ${o.path}`
          : `  output ${o.name}: not stored in full (${o.skippedCount ?? 0} skipped, ${formatBytes(o.bytes)} of ${formatBytes(o.totalBytes)} kept)`,
      );
    const checked = wanted.every((w) => w.sha256 !== undefined)
      ? 'each checked against its SHA-256'
      : 'checked';
    return [`saved ${wanted.length + 1} files (${formatBytes(bytes)}) to ${dir}, ${checked}`, ...notes];
  } catch (error) {
    await fsp.rm(staging, { recursive: true, force: true });
    throw error;
  }
}

/** Streams one link to `file`, hashing as it goes; throws if what came is not what was stored. */
async function save(one: Wanted, file: string): Promise<number> {
  const reply = await fetch(one.link);
  if (!reply.ok || reply.body === null) {
    throw new Error(`${one.file}: the download answered ${reply.status} ${reply.statusText}`);
  }
  const hash = createHash('sha256');
  let bytes = 0;
  const counted = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      bytes += chunk.length;
      hash.update(chunk);
      done(null, chunk);
    },
  });
  await pipeline(
    Readable.fromWeb(reply.body as import('node:stream/web').ReadableStream),
    counted,
    fs.createWriteStream(file, { flags: 'wx' }),
  );
  const got = hash.digest('hex');
  if (one.sha256 !== undefined && got !== one.sha256) {
    throw new Error(`${one.file}: its SHA-256 is ${got}, the result says ${one.sha256}; nothing was saved`);
  }
  if (bytes !== one.bytes) {
    throw new Error(`${one.file}: ${bytes} bytes arrived, the result says ${one.bytes}; nothing was saved`);
  }
  return bytes;
}
