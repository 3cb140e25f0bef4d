// What a data directory holds besides records: per-directory secrets and the identity of
// the server that owns the directory. Each is made once, atomically, and read thereafter.
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';

/** A per-data-directory secret, made once. */
export async function loadSecret(file: string): Promise<Buffer> {
  try {
    return await fsp.readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    const secret = randomBytes(32);
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await fsp.writeFile(file, secret, { mode: 0o600, flag: 'wx' }).catch(async (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
    return fsp.readFile(file);
  }
}

/**
 * The identity of the server that owns this data directory. Its containers are labelled
 * with it, so servers sharing one Docker Engine never adopt or remove each other's jobs.
 */
export async function serverIdentity(dataDir: string): Promise<string> {
  const secret = await loadSecret(path.join(dataDir, 'server.id'));
  return `srv_${secret.subarray(0, 10).toString('hex')}`;
}
