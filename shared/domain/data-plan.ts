// Inputs and outputs as a backend serves them: where each source may come from, which paths
// can be mounted, and the directories a job's container gets. Pure, so the bid can decline
// exactly what a backend would fail on, and every backend lays a job out the same way.
import type { DataType, JobInput, JobOutput, JobSpec } from './job-spec.ts';

/** What one executor serves, beside what a spec may list at all. */
export const DATA_LIMITS = Object.freeze({ inputs: 64, outputs: 64 });

/** Paths a job's data may not take: Ferry's own mounts and the kernel's file systems. */
const RESERVED_PATHS = ['/ferry', '/proc', '/sys', '/dev'] as const;

export type InputSource =
  | { readonly kind: 's3'; readonly bucket: string; readonly key: string }
  /** A path on the machine Ferry itself runs on (the local server), read where allowed. */
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'https'; readonly url: URL }
  | { readonly kind: 'content'; readonly content: string };

/** Where an input comes from, or why it cannot be fetched. */
export function sourceOf(input: JobInput): InputSource | { readonly problem: string } {
  if (input.content !== undefined) return { kind: 'content', content: input.content };
  const text = input.url ?? '';
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { problem: `input ${text} is not a URL` };
  }
  if (url.protocol === 's3:') {
    const bucket = url.hostname;
    const key = decodeURIComponent(url.pathname.replace(/^\//, ''));
    if (bucket === '') return { problem: `input ${text} names no bucket` };
    if (input.type === 'FILE' && (key === '' || key.endsWith('/'))) {
      return { problem: `input ${text} names no object; a prefix is a DIRECTORY input` };
    }
    return { kind: 's3', bucket, key };
  }
  if (url.protocol === 'https:') {
    if (url.username !== '' || url.password !== '') {
      return { problem: `input ${redacted(url)} carries credentials in its URL; they are not sent` };
    }
    if (input.type === 'DIRECTORY') {
      return { problem: `input ${text}: a DIRECTORY input comes from an s3:// prefix, not https` };
    }
    return { kind: 'https', url };
  }
  if (url.protocol === 'file:') {
    if (url.host !== '' && url.host !== 'localhost') {
      return { problem: `input ${text}: a file URL names a path on Ferry's own machine, file:///path` };
    }
    // URL parsing has already taken out "." and ".." parts: the path is the one read.
    return { kind: 'file', path: decodeURIComponent(url.pathname) };
  }
  return {
    problem: `input ${text}: only s3://, https:// and file:// sources (or inline content) can be fetched`,
  };
}

const redacted = (url: URL): string => `${url.protocol}//${url.host}${url.pathname}`;

/**
 * Whether a source is under one of the allowed prefixes (FERRY_INPUT_ALLOW): `s3://bucket/`,
 * `s3://bucket/prefix/`, `https://host/`, `https://host:8443/path/`, `file:///srv/data/`. A
 * prefix matches whole path segments, so `s3://data` does not allow `s3://data-private`. `*`
 * allows every source but files, which are allowed only by a file:// prefix.
 */
export function sourceAllowed(source: InputSource, allow: readonly string[]): boolean {
  if (source.kind === 'content') return true;
  const target =
    source.kind === 's3'
      ? `s3://${source.bucket}/${source.key}`
      : source.kind === 'file'
        ? `file://${source.path}`
        : `${source.url.origin}${source.url.pathname}`;
  return allow.some((entry) => {
    if (entry === '*') return source.kind !== 'file';
    const prefix = entry.endsWith('/') ? entry : `${entry}/`;
    return target === entry || target.startsWith(prefix);
  });
}

/**
 * Why an output cannot be delivered to `url`: only a file of this machine, file:///path, under
 * one of the file:// prefixes of FERRY_OUTPUT_ALLOW (whole segments, as for inputs).
 */
export function destinationProblem(url: string, outputAllow: readonly string[]): string | undefined {
  const parsed = URL.canParse(url) ? new URL(url) : undefined;
  if (parsed?.protocol !== 'file:' || parsed.host !== '' || parsed.search !== '' || parsed.hash !== '') {
    return `it is delivered only to a file of this machine, file:///path, not ${url}`;
  }
  let path: string;
  try {
    path = decodeURIComponent(parsed.pathname);
  } catch {
    return `${url} is not a plain path`;
  }
  if (path.split('/').some((part) => part === '..' || part === '.'))
    return `${url} must be plain: no "." or ".." parts`;
  if (!sourceAllowed({ kind: 'file', path }, outputAllow)) {
    const files = outputAllow.filter((entry) => entry.startsWith('file://'));
    return `${url} is not an allowed destination; ${
      files.length === 0 ? 'FERRY_OUTPUT_ALLOW allows none' : `FERRY_OUTPUT_ALLOW allows ${files.join(', ')}`
    }`;
  }
  return undefined;
}

/** The path with a trailing slash removed, or why it cannot hold a job's data. */
function pathProblem(path: string): string | undefined {
  if (!path.startsWith('/')) return 'is not absolute';
  const parts = path.split('/').slice(1);
  if (path === '/') return 'is the root directory';
  if (parts.some((part, i) => part === '.' || part === '..' || (part === '' && i < parts.length - 1))) {
    return 'must be plain: no "." or ".." parts, no "//"';
  }
  const reserved = RESERVED_PATHS.find((r) => path === r || path.startsWith(`${r}/`));
  if (reserved !== undefined) return `is under ${reserved}, which Ferry or the kernel holds`;
  return undefined;
}

/** `/a/b/` → `/a/b`. */
export const plainPath = (path: string): string => (path.length > 1 ? path.replace(/\/+$/, '') : path);

const within = (inner: string, outer: string): boolean => inner === outer || inner.startsWith(`${outer}/`);

/** The directory a FILE output's parent is: the job writes the file there. */
export const parentOf = (path: string): string =>
  plainPath(path).slice(0, plainPath(path).lastIndexOf('/')) || '/';

/**
 * What is wrong with a job's inputs and outputs, each problem naming the path or source:
 * too many, paths that are not absolute or overlap, sources that cannot be fetched or are not
 * allowed. Empty when a backend that supports data can serve them.
 */
export function dataProblems(
  spec: Pick<JobSpec, 'inputs' | 'outputs' | 'volumes'>,
  inputAllow: readonly string[],
  outputAllow: readonly string[] = [],
): string[] {
  const problems: string[] = [];
  if (spec.inputs.length > DATA_LIMITS.inputs) {
    problems.push(`${spec.inputs.length} inputs asked; at most ${DATA_LIMITS.inputs} are fetched for a job`);
  }
  if (spec.outputs.length > DATA_LIMITS.outputs) {
    problems.push(
      `${spec.outputs.length} outputs asked; at most ${DATA_LIMITS.outputs} are collected from a job`,
    );
  }
  const paths: { path: string; what: string; type: DataType; output: boolean }[] = [];
  for (const input of spec.inputs) {
    const what = `input ${input.url ?? '(content)'} at ${input.path}`;
    const wrong = pathProblem(plainPath(input.path));
    if (wrong !== undefined) problems.push(`${what}: the path ${wrong}`);
    else paths.push({ path: plainPath(input.path), what, type: input.type, output: false });
    const source = sourceOf(input);
    if ('problem' in source) problems.push(source.problem);
    else if (!sourceAllowed(source, inputAllow)) {
      problems.push(
        `input ${input.url} is not from an allowed source; ${
          inputAllow.length === 0
            ? 'FERRY_INPUT_ALLOW allows none (only inline content)'
            : `FERRY_INPUT_ALLOW allows ${inputAllow.join(', ')}`
        }`,
      );
    }
  }
  const names = new Map<string, string>();
  for (const output of spec.outputs) {
    const what = `output ${output.path}`;
    const wrong = pathProblem(plainPath(output.path));
    if (wrong !== undefined) problems.push(`${what}: the path ${wrong}`);
    else if (output.type === 'FILE' && parentOf(output.path) === '/') {
      problems.push(
        `${what}: a FILE output must be in a directory below /, which is made for the job to write in`,
      );
    } else paths.push({ path: plainPath(output.path), what, type: output.type, output: true });
    if (output.url !== undefined) {
      const problem = destinationProblem(output.url, outputAllow);
      if (problem !== undefined) problems.push(`${what}: ${problem}`);
    }
    const taken = names.get(output.name);
    if (taken !== undefined)
      problems.push(`outputs ${taken} and ${output.path} are both named ${output.name}`);
    names.set(output.name, output.path);
  }
  for (let i = 0; i < paths.length; i++) {
    for (let j = i + 1; j < paths.length; j++) {
      const a = paths[i];
      const b = paths[j];
      if (a === undefined || b === undefined) continue;
      if (within(a.path, b.path) || within(b.path, a.path)) {
        problems.push(`${a.what} and ${b.what} overlap: each path must be apart from the others`);
      }
    }
  }
  // A volume is a directory of its own, apart from inputs and other volumes; outputs may be in it.
  const volumes = spec.volumes ?? [];
  volumes.forEach((volume, index) => {
    const what = `volume ${volume}`;
    const wrong = pathProblem(plainPath(volume));
    if (wrong !== undefined) {
      problems.push(`${what}: the path ${wrong}`);
      return;
    }
    const others = [
      ...spec.inputs.map((input) => ({ path: plainPath(input.path), what: `input at ${input.path}` })),
      ...volumes.slice(index + 1).map((other) => ({ path: plainPath(other), what: `volume ${other}` })),
    ];
    for (const other of others) {
      if (within(plainPath(volume), other.path) || within(other.path, plainPath(volume)))
        problems.push(`${what} and ${other.what} overlap: each path must be apart from the others`);
    }
  });
  // A FILE output's directory is mounted for the job to write in: no input may hold it.
  for (const output of spec.outputs) {
    if (output.type !== 'FILE') continue;
    const dir = parentOf(output.path);
    for (const input of spec.inputs) {
      if (dir !== '/' && within(dir, plainPath(input.path))) {
        problems.push(`output ${output.path} is inside input ${input.path}, which is read-only`);
      }
    }
  }
  return problems;
}

/** One mount of a job's data: a staged input (read-only) or a directory its outputs are written in. */
export type DataMount =
  | {
      readonly kind: 'input';
      readonly index: number;
      readonly containerPath: string;
      readonly type: DataType;
    }
  | { readonly kind: 'outputs'; readonly index: number; readonly containerPath: string };

/** The directory an output is written in: a DIRECTORY output itself, a FILE output's parent. */
export const outputDir = (output: JobOutput): string =>
  output.type === 'DIRECTORY' ? plainPath(output.path) : parentOf(output.path);

/**
 * The mounts a job's data needs, outermost first: each input at its path; for outputs, each
 * DIRECTORY output's path and each FILE output's directory (one mount for files sharing one).
 */
export function dataMounts(spec: Pick<JobSpec, 'inputs' | 'outputs' | 'volumes'>): DataMount[] {
  const mounts: DataMount[] = spec.inputs.map((input, index) => ({
    kind: 'input',
    index,
    containerPath: plainPath(input.path),
    type: input.type,
  }));
  const dirs: string[] = [];
  for (const output of spec.outputs) {
    const dir = outputDir(output);
    if (!dirs.includes(dir)) dirs.push(dir);
  }
  // Volumes are writable directories too, after the outputs' so those keep their numbers.
  for (const volume of spec.volumes ?? []) {
    const dir = plainPath(volume);
    if (!dirs.includes(dir)) dirs.push(dir);
  }
  mounts.push(...dirs.map((containerPath, index) => ({ kind: 'outputs' as const, index, containerPath })));
  return mounts.sort((a, b) => depth(a.containerPath) - depth(b.containerPath));
}

const depth = (path: string): number => path.split('/').length;

/** Which output mount holds an output, and where the output is inside it ('' for the mount itself). */
export function outputLocation(
  spec: Pick<JobSpec, 'inputs' | 'outputs' | 'volumes'>,
  output: JobOutput,
): { readonly mount: number; readonly relative: string } {
  const dir = outputDir(output);
  const mount = dataMounts(spec).find((m) => m.kind === 'outputs' && m.containerPath === dir);
  if (mount === undefined) throw new Error(`no mount holds output ${output.path}`);
  return {
    mount: mount.index,
    relative:
      output.type === 'DIRECTORY' ? '' : plainPath(output.path).slice(dir.length + (dir === '/' ? 0 : 1)),
  };
}
