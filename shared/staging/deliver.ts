// Delivering an output to its url once it is stored, as a TES client asks: a file of this
// machine, file:///path, inside a directory FERRY_OUTPUT_ALLOW names. What is delivered is what
// was stored, file by file (a DIRECTORY output's files below the url), each checked against the
// digest stored for it, so what arrives is byte for byte what the result holds. An output not
// stored in full is not delivered at all, so no one takes a cut file for the whole. Each file is
// written beside its destination and renamed into place, whole or not at all, and every
// directory on the way must resolve inside an allowed one: a link planted there does not lead
// the copy elsewhere. A directory whose delivery fails part way keeps the files that arrived.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import type { OutputResult } from '../domain/execution.ts';
import type { JobOutput } from '../domain/job-spec.ts';

export interface DeliveryRoots {
  /** Directories outputs may be delivered into (from FERRY_OUTPUT_ALLOW's file:// prefixes). */
  readonly roots: readonly string[];
  /** Directories never written to, even inside an allowed one (Ferry's own data directory). */
  readonly excluded: readonly string[];
}

const inside = (inner: string, outer: string): boolean =>
  inner === outer || inner.startsWith(outer.endsWith('/') ? outer : `${outer}/`);

/**
 * Delivers `output` (its stored `result`, whose files are at `place` on this machine) to its
 * url; the result says where it went, or why it did not.
 */
export async function deliverOutput(
  output: JobOutput,
  result: OutputResult,
  place: string,
  where: DeliveryRoots,
): Promise<OutputResult> {
  const { url } = output;
  if (url === undefined) return result;
  const refuse = (why: string): OutputResult => ({ ...result, deliveryError: why });
  if (result.missing === true) return refuse(`nothing was at ${output.path} to deliver to ${url}`);
  if (result.truncated) {
    return refuse(`it was not stored in full (see outputLimits), so it was not delivered to ${url}`);
  }
  let destination: string;
  try {
    destination = fileURLToPath(url);
  } catch (error) {
    return refuse(`${url} is not a file of this machine: ${(error as Error).message}`);
  }
  const files =
    output.type === 'FILE'
      ? [{ from: place, to: destination, bytes: result.bytes, sha256: result.sha256 }]
      : (result.entries ?? []).map((entry) => ({
          from: path.join(place, entry.path),
          to: path.join(destination, entry.path),
          bytes: entry.bytes,
          sha256: entry.sha256,
        }));
  try {
    const roots = await realRoots(where);
    if (output.type === 'DIRECTORY') await makeDirectory(destination, roots);
    for (const file of files) await copyInto(file, roots);
  } catch (error) {
    return refuse(`could not deliver it to ${url}: ${(error as Error).message}`);
  }
  return { ...result, deliveredTo: url };
}

interface RealRoots {
  readonly allowed: readonly string[];
  readonly excluded: readonly string[];
}

async function realRoots(where: DeliveryRoots): Promise<RealRoots> {
  // An allowed directory that is not there allows nothing; one kept out is kept out all the same.
  const real = (dir: string) => fsp.realpath(dir).catch(() => undefined);
  const allowed = await Promise.all(where.roots.map(real));
  const excluded = await Promise.all(
    where.excluded.map(async (dir) => (await real(dir)) ?? path.resolve(dir)),
  );
  return { allowed: allowed.filter((dir): dir is string => dir !== undefined), excluded };
}

/**
 * Makes `dir` (and what leads to it) when the part of the way already there really is inside an
 * allowed directory, so nothing is made elsewhere; then checks `dir` itself.
 */
async function makeDirectory(dir: string, roots: RealRoots): Promise<void> {
  const check = async (at: string) => {
    const real = await fsp.realpath(at);
    if (
      !roots.allowed.some((root) => inside(real, root)) ||
      roots.excluded.some((root) => inside(real, root))
    ) {
      throw new Error(
        `${dir} resolves to ${path.join(real, path.relative(at, dir))}, outside the directories FERRY_OUTPUT_ALLOW names`,
      );
    }
  };
  let there = dir;
  while (
    !(await fsp.lstat(there).then(
      () => true,
      () => false,
    ))
  )
    there = path.dirname(there);
  await check(there);
  await fsp.mkdir(dir, { recursive: true });
  await check(dir);
}

/**
 * Copies the first `bytes` bytes of `from` (never through a link) to `to`, replacing what is
 * there, if they are what was stored (their SHA-256 is `sha256`).
 */
async function copyInto(
  file: { readonly from: string; readonly to: string; readonly bytes: number; readonly sha256?: string },
  roots: RealRoots,
): Promise<void> {
  const { from, to, bytes } = file;
  await makeDirectory(path.dirname(to), roots);
  const temporary = path.join(
    path.dirname(to),
    `.${path.basename(to)}.ferry-${randomBytes(6).toString('hex')}`,
  );
  const source = await fsp.open(from, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const digest = createHash('sha256');
    let copied = 0;
    if (bytes === 0) await fsp.writeFile(temporary, '', { flag: 'wx', mode: 0o644 });
    else {
      const reading = source.createReadStream({ start: 0, end: bytes - 1, autoClose: false });
      reading.on('data', (chunk) => {
        digest.update(chunk);
        copied += chunk.length;
      });
      await pipeline(reading, fs.createWriteStream(temporary, { flags: 'wx', mode: 0o644 }));
    }
    if (copied !== bytes || (file.sha256 !== undefined && digest.digest('hex') !== file.sha256)) {
      throw new Error(`${path.basename(from)} is no longer what was stored`);
    }
    await fsp.rename(temporary, to);
  } catch (error) {
    await fsp.rm(temporary, { force: true });
    throw error;
  } finally {
    await source.close();
  }
}
