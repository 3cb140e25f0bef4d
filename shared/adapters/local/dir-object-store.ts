// ObjectStore on a directory: keys are paths below the root. Writes land in a temporary
// file and are renamed into place, so a reader never sees half an object. Download links
// are HMAC-signed URLs served by the local server, the counterpart of S3 presigned GETs.
import { createHmac, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ValidationError } from '../../errors.ts';
import type { ObjectInfo, ObjectStore } from '../../ports.ts';
import { loadSecret } from './data-dir.ts';

export class DirectoryObjectStore implements ObjectStore {
  private constructor(
    private readonly root: string,
    private readonly publishRoot: string,
    private readonly linkBase: () => string,
    private readonly key: Buffer,
  ) {}

  /** `linkBase` gives the server's base URL at the time a link is made (the port may be chosen late). */
  static async open(dataDir: string, linkBase: () => string): Promise<DirectoryObjectStore> {
    const root = path.join(dataDir, 'objects');
    await fsp.mkdir(root, { recursive: true });
    return new DirectoryObjectStore(
      root,
      path.join(dataDir, 'published'),
      linkBase,
      await loadSecret(path.join(dataDir, 'links.key')),
    );
  }

  /** The file behind a key; refuses keys that would escape the root. */
  pathOf(key: string, root = this.root): string {
    const resolved = path.resolve(root, key);
    if (!resolved.startsWith(`${root}${path.sep}`)) {
      throw new ValidationError(`invalid object key: ${key}`);
    }
    return resolved;
  }

  async put(key: string, body: Buffer | string | Readable): Promise<void> {
    await this.writeFile(this.pathOf(key), body);
  }

  private async writeFile(file: string, body: Buffer | string | Readable): Promise<void> {
    await fsp.mkdir(path.dirname(file), { recursive: true });
    const temp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.part`;
    try {
      if (body instanceof Readable) await pipeline(body, fs.createWriteStream(temp));
      else await fsp.writeFile(temp, body);
      await fsp.rename(temp, file);
    } catch (error) {
      await fsp.rm(temp, { force: true });
      throw error;
    }
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      return await fsp.readFile(this.pathOf(key));
    } catch (error) {
      if (isAbsent(error)) return undefined;
      throw error;
    }
  }

  async getRange(key: string, start: number, end: number): Promise<Buffer | undefined> {
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(this.pathOf(key), 'r');
    } catch (error) {
      if (isAbsent(error)) return undefined;
      throw error;
    }
    try {
      const length = Math.max(0, end - start);
      const buffer = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buffer, 0, length, start);
      return buffer.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const stat = await fsp.stat(this.pathOf(key));
      return stat.isFile() ? { key, size: stat.size } : undefined;
    } catch (error) {
      if (isAbsent(error)) return undefined;
      throw error;
    }
  }

  async list(prefix: string): Promise<readonly ObjectInfo[]> {
    const found: ObjectInfo[] = [];
    const walk = async (dir: string): Promise<void> => {
      let entries: fs.Dirent[];
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw error;
      }
      for (const entry of entries) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) await walk(full);
        else if (entry.isFile() && !entry.name.endsWith('.part')) {
          const key = path.relative(this.root, full).split(path.sep).join('/');
          if (key.startsWith(prefix)) found.push({ key, size: (await fsp.stat(full)).size });
        }
      }
    };
    const base = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    await walk(base === '' ? this.root : this.pathOf(base));
    return found.sort((a, b) => a.key.localeCompare(b.key));
  }

  async deletePrefix(prefix: string): Promise<void> {
    for (const object of await this.list(prefix)) await fsp.rm(this.pathOf(object.key), { force: true });
    if (prefix.endsWith('/'))
      await fsp.rm(this.pathOf(prefix.slice(0, -1)), { recursive: true, force: true });
  }

  async delete(key: string): Promise<void> {
    await fsp.rm(this.pathOf(key), { force: true });
  }

  /** Copies within the store, or to an `s3://bucket/key` destination mirrored under `published/`. */
  async copy(sourceKey: string, destination: string): Promise<void> {
    const source = fs.createReadStream(this.pathOf(sourceKey));
    const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(destination);
    const target = match
      ? this.pathOf(`${match[1]}/${match[2]}`, this.publishRoot)
      : this.pathOf(destination);
    await this.writeFile(target, source);
  }

  async putAt(destination: string, body: string): Promise<void> {
    const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(destination);
    if (!match) throw new Error(`not an s3:// destination: ${destination}`);
    await this.writeFile(this.pathOf(`${match[1]}/${match[2]}`, this.publishRoot), body);
  }

  async downloadUrl(key: string, expiresSeconds: number): Promise<string> {
    this.pathOf(key);
    const expires = Math.floor(Date.now() / 1000) + expiresSeconds;
    const signature = this.sign(key, expires);
    const encoded = key.split('/').map(encodeURIComponent).join('/');
    return `${this.linkBase()}/objects/${encoded}?expires=${expires}&signature=${signature}`;
  }

  /** Checks a link made by downloadUrl; returns the file to serve, or undefined. */
  verifyLink(key: string, expires: string | undefined, signature: string | undefined): string | undefined {
    const at = Number(expires);
    if (!Number.isInteger(at) || at < Date.now() / 1000 || signature === undefined) return undefined;
    const expected = Buffer.from(this.sign(key, at));
    const given = Buffer.from(signature);
    if (expected.length !== given.length || !timingSafeEqual(expected, given)) return undefined;
    return this.pathOf(key);
  }

  private sign(key: string, expires: number): string {
    return createHmac('sha256', this.key).update(`${key}\n${expires}`).digest('base64url');
  }
}

/** No object at the path: nothing there, or a file where one of its directories would be. */
function isAbsent(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
