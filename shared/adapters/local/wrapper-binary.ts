// The static ferry-wrapper for the Docker backend, built from runner/wrapper/ferry-wrapper.c with
// the host's C compiler the first time a server needs it, and kept under a name that carries the
// source's digest, so a changed wrapper is built again and an unchanged one never is.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const WRAPPER_SOURCE = fileURLToPath(
  new URL('../../../runner/wrapper/ferry-wrapper.c', import.meta.url),
);
/** Where built wrappers are kept for every server of this checkout, when it can be written. */
export const SHARED_WRAPPER_DIR = fileURLToPath(
  new URL('../../../node_modules/.cache/ferry', import.meta.url),
);
const FLAGS = ['-static', '-Os', '-s', '-Wall', '-Wextra'];

export type WrapperBinary = { readonly path: string } | { readonly unavailable: string };

/**
 * The wrapper's path, from the first of `dirs` that holds it or, failing that, built into the
 * first of them that can be written. `unavailable` says why there is none (no C compiler, no
 * static C library).
 */
export async function ferryWrapper(
  dirs: readonly string[],
  compiler = process.env.CC ?? 'cc',
): Promise<WrapperBinary> {
  const source = await fsp.readFile(WRAPPER_SOURCE);
  const digest = createHash('sha256').update(source).update(FLAGS.join(' ')).digest('hex').slice(0, 16);
  const name = `ferry-wrapper-${digest}`;
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    if (fs.existsSync(candidate)) return { path: candidate };
  }
  let reason = 'no directory to build it in';
  for (const dir of dirs) {
    try {
      await fsp.mkdir(dir, { recursive: true });
    } catch {
      continue;
    }
    const target = path.join(dir, name);
    // Built beside its final name and renamed: servers starting together never run a half-written file.
    const partial = `${target}.${process.pid}.tmp`;
    const failure = await compile(compiler, [...FLAGS, '-o', partial, WRAPPER_SOURCE]);
    if (failure === undefined) {
      await fsp.chmod(partial, 0o755);
      await fsp.rename(partial, target);
      return { path: target };
    }
    await fsp.rm(partial, { force: true });
    reason = failure;
    if (!failure.startsWith('cannot write')) break;
  }
  return { unavailable: `ferry-wrapper could not be built from ${WRAPPER_SOURCE}: ${reason}` };
}

function compile(compiler: string, args: readonly string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(compiler, args, { timeout: 60_000 }, (error, _stdout, stderr) => {
      if (error === null) return resolve(undefined);
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return resolve(`no C compiler (${compiler}) on this machine`);
      const firstLine = stderr.split('\n').find((line) => /error/i.test(line)) ?? stderr.split('\n')[0] ?? '';
      const denied = /Permission denied|cannot open output file/i.test(stderr);
      resolve(`${denied ? 'cannot write: ' : ''}${compiler} failed: ${firstLine.trim() || error.message}`);
    });
  });
}
