// Fetching a job's inputs before its command runs: from S3 (through the SDK's usual credential
// chain and endpoint settings, so an emulator or real S3 both work), from https (no redirect
// followed, a size cap, timeouts), from this machine's files (file://, only inside the allowed
// directories, links never leading out), or from inline content. The same code stages inputs on the
// host for the local backends and in the Fargate task's init container.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { InputSize } from '../domain/bidding.ts';
import { sourceOf } from '../domain/data-plan.ts';
import type { JobInput } from '../domain/job-spec.ts';
import { formatBytes } from '../domain/units.ts';
import type { InputFetcher, S3Source } from '../ports.ts';

/** An input could not be had: the message names its source and why. */
export class FetchFailed extends Error {}

/** How long a bid waits for a look at a source before it decides without it. */
const PROBE_TIMEOUT_MS = 3000;
/** How long a web server may take to answer, or stay silent mid-transfer. */
const HTTPS_IDLE_MS = 30_000;
/** Objects of a DIRECTORY input fetched at once. */
const PARALLEL_OBJECTS = 8;

export interface InputSourcesOptions {
  /** S3 through the SDK; absent where there is none to use (inputs from s3:// then fail). */
  readonly s3?: S3Source;
  /**
   * Directories of this machine file:// inputs may be read from (the file:// prefixes of
   * FERRY_INPUT_ALLOW). A path is read only if it resolves, links followed, to inside one.
   */
  readonly fileRoots?: readonly string[];
  /** Directories never read from, even inside a root (Ferry's own data directory). */
  readonly fileExcluded?: readonly string[];
}

export class InputSources implements InputFetcher {
  constructor(private readonly options: InputSourcesOptions = {}) {}

  async probe(input: JobInput): Promise<InputSize> {
    const source = sourceOf(input);
    if ('problem' in source) return {};
    if (source.kind === 'content') return { bytes: Buffer.byteLength(source.content) };
    const look = async (): Promise<InputSize> => {
      if (source.kind === 'file') {
        const real = await this.resolveFile(source.path).catch(() => undefined);
        if (real === undefined) return { missing: true };
        let bytes = 0;
        let count = 0;
        for await (const file of filesUnder(real, input.type)) {
          bytes += file.bytes;
          if (++count >= 1000) return { bytes, atLeast: true };
        }
        return { bytes };
      }
      if (source.kind === 's3') {
        const s3 = this.options.s3;
        if (s3 === undefined) return {};
        if (input.type === 'FILE') {
          const bytes = await s3.head(source.bucket, source.key);
          return bytes === undefined ? { missing: true } : { bytes };
        }
        let bytes = 0;
        let count = 0;
        for await (const object of s3.list(source.bucket, directoryPrefix(source.key))) {
          bytes += object.bytes;
          if (++count >= 1000) return { bytes, atLeast: true };
        }
        return count === 0 ? { missing: true } : { bytes };
      }
      const head = await request(source.url, 'HEAD', PROBE_TIMEOUT_MS);
      head.resume();
      if (head.statusCode === 404 || head.statusCode === 410) return { missing: true };
      const length = Number(head.headers['content-length']);
      return head.statusCode === 200 && Number.isFinite(length) ? { bytes: length } : {};
    };
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<InputSize>((resolve) => {
      timer = setTimeout(() => resolve({}), PROBE_TIMEOUT_MS);
    });
    return Promise.race([look().catch(() => ({})), late]).finally(() => clearTimeout(timer));
  }

  async fetch(
    input: JobInput,
    destination: string,
    options: { readonly maxBytes: number; readonly signal?: AbortSignal },
  ): Promise<{ bytes: number; files: number }> {
    const source = sourceOf(input);
    const name = input.url ?? `content for ${input.path}`;
    if ('problem' in source) throw new FetchFailed(source.problem);
    try {
      if (source.kind === 'content') {
        await writeNew(destination, Buffer.from(source.content));
        return { bytes: Buffer.byteLength(source.content), files: 1 };
      }
      if (source.kind === 'https') {
        const answer = await request(source.url, 'GET', HTTPS_IDLE_MS, options.signal);
        if (answer.statusCode !== 200) {
          answer.resume();
          const where = answer.headers.location
            ? ` (to ${answer.headers.location}; redirects are not followed)`
            : '';
          throw new FetchFailed(`${answer.statusCode} ${answer.statusMessage ?? ''}`.trim() + where);
        }
        const bytes = await writeStream(answer, destination, options.maxBytes);
        return { bytes, files: 1 };
      }
      if (source.kind === 'file') {
        return await copyFiles(
          await this.resolveFile(source.path),
          input.type,
          destination,
          options.maxBytes,
        );
      }
      const s3 = this.options.s3;
      if (s3 === undefined) throw new FetchFailed('no S3 client is configured here');
      if (input.type === 'FILE') {
        const body = await s3.open(source.bucket, source.key, options.signal);
        return { bytes: await writeStream(body, destination, options.maxBytes), files: 1 };
      }
      return await fetchPrefix(s3, source.bucket, directoryPrefix(source.key), destination, options);
    } catch (error) {
      throw new FetchFailed(`input ${name} could not be fetched: ${messageOf(error)}`);
    }
  }

  /** Where a file:// path really is, if that is inside an allowed directory. */
  private async resolveFile(wanted: string): Promise<string> {
    const roots = this.options.fileRoots ?? [];
    if (roots.length === 0) throw new FetchFailed('this Ferry reads no file:// sources');
    const real = await fsp.realpath(wanted).catch((error: NodeJS.ErrnoException) => {
      throw new FetchFailed(error.code === 'ENOENT' ? 'no such file or directory' : error.message);
    });
    const inside = (dir: string | undefined) =>
      dir !== undefined && (real === dir || real.startsWith(`${dir}/`));
    for (const excluded of this.options.fileExcluded ?? []) {
      if (inside(await fsp.realpath(excluded).catch(() => undefined))) {
        throw new FetchFailed("it is inside Ferry's own data directory");
      }
    }
    for (const root of roots) {
      if (inside(await fsp.realpath(root).catch(() => undefined))) return real;
    }
    throw new FetchFailed(`it resolves to ${real}, outside the directories FERRY_INPUT_ALLOW names`);
  }
}

/** Every plain file of a FILE or DIRECTORY source, with its path relative to it; links are not followed. */
async function* filesUnder(
  root: string,
  type: JobInput['type'],
): AsyncGenerator<{ relative: string; bytes: number }> {
  const stat = await fsp.lstat(root);
  if (type === 'FILE') {
    if (!stat.isFile()) throw new FetchFailed('it is not a plain file');
    yield { relative: '', bytes: stat.size };
    return;
  }
  if (!stat.isDirectory()) throw new FetchFailed('it is not a directory');
  const walk = async function* (relative: string): AsyncGenerator<{ relative: string; bytes: number }> {
    const entries = await fsp.readdir(path.join(root, relative), { withFileTypes: true });
    for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const inner = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory()) yield* walk(inner);
      else if (entry.isFile())
        yield { relative: inner, bytes: (await fsp.lstat(path.join(root, inner))).size };
      // A link, socket or device in the source is not copied: it could lead anywhere.
    }
  };
  yield* walk('');
}

/** Copies a file, or a directory's plain files, to `destination`, at most `maxBytes` in all. */
async function copyFiles(
  source: string,
  type: JobInput['type'],
  destination: string,
  maxBytes: number,
): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  if (type === 'DIRECTORY') await fsp.mkdir(destination, { recursive: true });
  for await (const file of filesUnder(source, type)) {
    const from = file.relative === '' ? source : path.join(source, file.relative);
    const to = file.relative === '' ? destination : path.join(destination, file.relative);
    await fsp.mkdir(path.dirname(to), { recursive: true });
    const handle = await fsp.open(from, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      // A directory on the way swapped for a link after the listing would lead elsewhere: what
      // was opened must still be inside the source (checked where the system tells, on Linux).
      const opened = await fsp.readlink(`/proc/self/fd/${handle.fd}`).catch(() => undefined);
      if (opened !== undefined && opened !== source && !opened.startsWith(`${source}/`)) {
        throw new FetchFailed(`${file.relative || 'it'} led out of ${source} while it was copied`);
      }
      bytes += await writeStream(handle.createReadStream({ autoClose: false }), to, maxBytes - bytes);
    } finally {
      await handle.close();
    }
    files++;
  }
  return { bytes, files };
}

/** `data` and `data/` both mean the objects under `data/`; the bucket's root is ''. */
const directoryPrefix = (key: string): string => (key === '' || key.endsWith('/') ? key : `${key}/`);

/** Every object under the prefix, at its path below `destination`, a few at a time. */
async function fetchPrefix(
  s3: S3Source,
  bucket: string,
  prefix: string,
  destination: string,
  options: { readonly maxBytes: number; readonly signal?: AbortSignal },
): Promise<{ bytes: number; files: number }> {
  await fsp.mkdir(destination, { recursive: true });
  let bytes = 0;
  let files = 0;
  const running = new Set<Promise<void>>();
  let failure: unknown;
  for await (const object of s3.list(bucket, prefix)) {
    if (failure !== undefined) break;
    const relative = object.key.slice(prefix.length);
    // A "folder" marker holds nothing; a key that is not a plain relative path cannot be a file.
    if (relative === '' || relative.endsWith('/')) continue;
    if (relative.split('/').some((part) => part === '' || part === '.' || part === '..')) {
      failure = new FetchFailed(`object ${object.key} cannot be a file path below the input`);
      break;
    }
    bytes += object.bytes;
    if (bytes > options.maxBytes) {
      failure = new FetchFailed(
        `the objects under ${prefix} take more than the ${formatBytes(options.maxBytes)} allowed`,
      );
      break;
    }
    files++;
    const target = path.join(destination, ...relative.split('/'));
    const one = (async () => {
      await fsp.mkdir(path.dirname(target), { recursive: true });
      const body = await s3.open(bucket, object.key, options.signal);
      await writeStream(body, target, object.bytes);
    })().catch((error) => {
      failure ??= new FetchFailed(`${object.key}: ${messageOf(error)}`);
    });
    running.add(one);
    void one.finally(() => running.delete(one));
    if (running.size >= PARALLEL_OBJECTS) await Promise.race(running);
  }
  // Downloads already started settle before the failure is told, so none writes afterwards.
  await Promise.all(running);
  if (failure !== undefined) throw failure;
  if (files === 0) throw new FetchFailed(`no objects under s3://${bucket}/${prefix}`);
  return { bytes, files };
}

/** Writes a new file (never over one, never through a link) from the stream, at most `maxBytes`. */
async function writeStream(body: Readable, file: string, maxBytes: number): Promise<number> {
  let bytes = 0;
  const capped = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      bytes += chunk.length;
      if (bytes > maxBytes) done(new FetchFailed(`it is larger than the ${formatBytes(maxBytes)} allowed`));
      else done(null, chunk);
    },
  });
  await pipeline(body, capped, fs.createWriteStream(file, { flags: 'wx', mode: 0o644 }));
  return bytes;
}

async function writeNew(file: string, data: Buffer): Promise<void> {
  await fsp.writeFile(file, data, { flag: 'wx', mode: 0o644 });
}

/** One https request; resolves with the answer's head, the body left to read. */
function request(
  url: URL,
  method: 'GET' | 'HEAD',
  idleMs: number,
  signal?: AbortSignal,
): Promise<import('node:http').IncomingMessage> {
  return new Promise((resolve, reject) => {
    const sent = https.request(url, { method, ...(signal === undefined ? {} : { signal }) }, resolve);
    sent.setTimeout(idleMs, () => sent.destroy(new Error(`no answer within ${idleMs / 1000} s`)));
    sent.once('error', reject);
    sent.end();
  });
}

function messageOf(error: unknown): string {
  if (error instanceof FetchFailed) return error.message;
  const named = error as { name?: string; message?: string; code?: string };
  if (named?.name === 'NoSuchKey' || named?.name === 'NotFound') return 'no such object';
  if (named?.name === 'NoSuchBucket') return 'no such bucket';
  if (named?.name === 'AccessDenied') return 'access denied';
  return named?.message ?? String(error);
}
