// The `ferry` command line: serve the local executor, and talk to any Ferry API.
// Human output by default (a progress line on waits, on a terminal), --json for scripts.
import fs from 'node:fs';
import { loadConfig } from '#shared/config.ts';
import type { Execution, ResultManifest } from '#shared/domain/execution.ts';
import { EXECUTION_STATES, isTerminal } from '#shared/domain/states.ts';
import { formatBytes } from '#shared/domain/units.ts';
import { isFerryError } from '#shared/errors.ts';
import { type Flags, parseCommandLine, UsageError } from './args.ts';
import {
  ApiError,
  executeApiRegion,
  FerryClient,
  type RequestSigner,
  sigv4FromDefaultChain,
  Unreachable,
} from './client.ts';
import { downloadResult, type ResultLinks } from './download.ts';

export { UsageError };

export interface Io {
  readonly out: NodeJS.WritableStream & { isTTY?: boolean };
  readonly err: NodeJS.WritableStream & { isTTY?: boolean };
  readonly env: Record<string, string | undefined>;
}

export async function main(
  argv: readonly string[],
  io: Io = { out: process.stdout, err: process.stderr, env: process.env },
) {
  try {
    return await run(argv, io);
  } catch (error) {
    if (error instanceof UsageError) {
      const help = error.verb === undefined ? 'ferry --help' : `ferry ${error.verb} --help`;
      io.err.write(`ferry: ${error.message} (see \`${help}\`)\n`);
      return 2;
    }
    if (error instanceof ApiError) {
      io.err.write(`ferry: ${error.message}${detailLines(error.problem)}\n`);
      return 1;
    }
    if (error instanceof Unreachable || isFerryError(error)) {
      io.err.write(`ferry: ${error.message}\n`);
      return 1;
    }
    io.err.write(`ferry: ${(error as Error).message ?? String(error)}\n`);
    return 1;
  }
}

function detailLines(problem: ApiError['problem']): string {
  const errors = problem.errors as { field: string; message: string }[] | undefined;
  if (!Array.isArray(errors) || errors.length <= 1) return '';
  return errors.map((e) => `\n  ${e.field}: ${e.message}`).join('');
}

async function run(argv: readonly string[], io: Io): Promise<number> {
  const line = parseCommandLine(argv, io);
  if (line.kind === 'done') return line.code;
  const { verb, args, flags, command } = line;
  const config = loadConfig(io.env);
  if (verb === 'serve') return serve(io);
  if (verb === 'emulate') {
    const { emulate } = await import('./emulate.ts');
    return emulate(args, flags.port, io);
  }

  const url = flags.url ?? config.url;
  const { signer, region } = await signingFor(url, flags);
  if (verb === 'dashboard') {
    const { dashboard } = await import('./dashboard.ts');
    return dashboard(
      {
        url,
        port: flags.port,
        ...(signer === undefined ? {} : { signer, region }),
      },
      io,
    );
  }
  const client = new FerryClient(url, flags.token ?? config.token, signer);
  const id = () => {
    const [value] = args;
    if (value === undefined) throw new UsageError(`${verb} needs an execution id`, verb);
    return value;
  };
  const print = (value: unknown, human: () => string) =>
    io.out.write(flags.json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);

  switch (verb) {
    case 'bid': {
      const reply = await client.json<{ executionId: string; bid: Execution['bid'] }>(
        'POST',
        '/v1/bids',
        jobSpec(flags, command, verb),
      );
      print(reply.body, () => describeBid(reply.body.executionId, reply.body.bid));
      return reply.body.bid.accepted ? 0 : 1;
    }
    case 'accept':
    case 'reject': {
      if (verb === 'accept' && flags.justification !== undefined) {
        throw new UsageError('--justification goes with reject (or result --accept/--reject)', verb);
      }
      if (verb === 'accept') refuseJsonFollow(flags, verb);
      const reply = await client.json<Execution>(
        'POST',
        `/v1/bids/${encodeURIComponent(id())}/${verb}`,
        justification(flags),
      );
      if (verb === 'accept' && (flags.wait || flags.follow)) return watchJob(client, flags, reply.body, io);
      print(reply.body, () => `${reply.body.id} ${reply.body.state}`);
      return 0;
    }
    case 'submit':
      return submit(client, flags, command, io);
    case 'status': {
      const reply = await client.json<Execution>('GET', `/v1/executions/${encodeURIComponent(id())}`);
      const place =
        reply.body.state === 'QUEUED' && !flags.json ? await queuePlaceOf(client, id()) : undefined;
      print(reply.body, () =>
        [
          describeExecution(reply.body),
          ...(place === undefined ? [] : [`  queue     ${describePlace(place)}`]),
        ].join('\n'),
      );
      return 0;
    }
    case 'ls': {
      const query = new URLSearchParams();
      for (const state of flags.state ?? []) query.append('state', state.toUpperCase());
      for (const label of flags.label ?? []) {
        if (label.indexOf('=') <= 0) throw new UsageError(`--label must be KEY=VALUE, got ${label}`, verb);
        query.append('label', label);
      }
      if (flags.image !== undefined) query.set('image', flags.image);
      if (flags.limit !== undefined) query.set('limit', String(numberFlag('--limit', flags.limit, verb)));
      if (flags.cursor !== undefined) query.set('cursor', flags.cursor);
      const reply = await client.json<{ items: Execution[]; nextCursor?: string }>(
        'GET',
        `/v1/executions?${query}`,
      );
      print(reply.body, () =>
        table(reply.body.items, {
          labels: flags.labels === true,
          width: io.out.isTTY ? (io.out as { columns?: number }).columns : undefined,
          ...(reply.body.nextCursor === undefined ? {} : { next: nextPage(argv, reply.body.nextCursor) }),
        }),
      );
      return 0;
    }
    case 'wait': {
      const execution = await whileWatching(io, id(), () =>
        waitUntilDone(
          client,
          id(),
          io,
          flags.timeout === undefined ? undefined : duration('--timeout', flags.timeout, verb),
        ),
      );
      print(execution, () => describeExecution(execution));
      if (!flags.json && isTerminal(execution.state)) summarize(execution, io);
      return isTerminal(execution.state) ? exitCodeOf(execution) : 1;
    }
    case 'logs': {
      const stream = flags.stderr ? 'stderr' : 'stdout';
      if (flags.follow) {
        if (flags.json)
          throw new UsageError('--json and --follow do not mix: follow prints the output as it comes', verb);
        const printed = await whileWatching(io, id(), () => {
          const following = follow(client, id(), stream, stream === 'stdout' ? io.out : io.err, io.err);
          if (io.err.isTTY) void announceQueuePlace(client, id(), io, following);
          return following;
        });
        if (printed === 0) io.err.write(`ferry: ${id()} printed nothing on ${stream}\n`);
        return 0;
      }
      const reply = await client.bytes(`/v1/executions/${encodeURIComponent(id())}/logs?stream=${stream}`);
      if (flags.json) {
        const text = reply.body.toString('utf8');
        const utf8 = Buffer.from(text, 'utf8').equals(reply.body);
        print(
          {
            executionId: id(),
            stream,
            bytes: reply.body.length,
            encoding: utf8 ? 'utf8' : 'base64',
            data: utf8 ? text : reply.body.toString('base64'),
          },
          () => '',
        );
        return 0;
      }
      io.out.write(reply.body);
      if (reply.body.length === 0) io.err.write(`ferry: ${id()} printed nothing on ${stream}\n`);
      return 0;
    }
    case 'rm': {
      const outcomes: { executionId: string; deleted: boolean; error?: string }[] = [];
      for (const executionId of args) {
        try {
          await client.empty('DELETE', `/v1/executions/${encodeURIComponent(executionId)}`);
          outcomes.push({ executionId, deleted: true });
          if (!flags.json) io.out.write(`deleted ${executionId}\n`);
        } catch (error) {
          if (!(error instanceof ApiError)) throw error;
          outcomes.push({ executionId, deleted: false, error: error.message });
          if (!flags.json) io.err.write(`ferry: ${executionId}: ${error.message}\n`);
        }
      }
      if (flags.json) io.out.write(`${JSON.stringify(outcomes, null, 2)}\n`);
      return outcomes.every((o) => o.deleted) ? 0 : 1;
    }
    case 'cancel': {
      const reply = await client.json<Execution>('POST', `/v1/executions/${encodeURIComponent(id())}/cancel`);
      print(
        reply.body,
        () => `${reply.body.id} ${reply.body.state}${reply.body.stopRequested ? ' (stopping)' : ''}`,
      );
      return 0;
    }
    case 'result': {
      if (flags.accept && flags.reject)
        throw new UsageError('--accept and --reject exclude each other', verb);
      if (flags.justification !== undefined && !flags.accept && !flags.reject) {
        throw new UsageError('--justification goes with --accept or --reject', verb);
      }
      const path = `/v1/executions/${encodeURIComponent(id())}/result`;
      if ((flags.accept || flags.reject) && flags.download !== undefined) {
        throw new UsageError('--download goes alone: download first, then --accept or --reject', verb);
      }
      if (flags.accept || flags.reject) {
        const reply = await client.json<Execution>(
          'POST',
          `${path}/${flags.accept ? 'accept' : 'reject'}`,
          justification(flags),
        );
        print(reply.body, () => {
          const to = reply.body.result?.publishedTo;
          return `${reply.body.id} result ${reply.body.result?.review ?? ''}${to === undefined ? '' : `; published to ${to}`}`;
        });
        return 0;
      }
      const reply = await client.json<ResultLinks & { review: string }>('GET', path);
      if (flags.download !== undefined) {
        const lines = await downloadResult(reply.body, flags.download, verb);
        print({ directory: flags.download, manifest: reply.body.manifest }, () => lines.join('\n'));
        return 0;
      }
      print(reply.body, () => describeResult(reply.body.manifest, reply.body.review, reply.body.links));
      return 0;
    }
    case 'node': {
      const reply = await client.json<NodeInfo>('GET', '/v1/node');
      print(reply.body, () => describeNode(reply.body));
      return 0;
    }
    default:
      throw new UsageError(`unknown command: ${verb}`, undefined);
  }
}

/**
 * A deployed Ferry sits behind API Gateway with IAM authorization: its execute-api URLs are
 * signed automatically; `--sigv4` signs for any other URL (a custom domain), with `--region`.
 */
async function signingFor(
  url: string,
  flags: Flags,
): Promise<{ signer?: undefined; region?: undefined } | { signer: RequestSigner; region: string }> {
  const region = flags.region ?? executeApiRegion(url);
  if (!flags.sigv4 && executeApiRegion(url) === undefined) return {};
  if (region === undefined) throw new UsageError(`--sigv4 needs --region: ${url} names no region`, undefined);
  return { signer: await sigv4FromDefaultChain(region), region };
}

async function serve(io: Io): Promise<number> {
  const { containRequestFault, startLocalServer } = await import('#shared/runtime/local.ts');
  const config = loadConfig(io.env);
  // A fault that escapes a request is that request's failure, not the server's; anything
  // else is a real crash and ends the process, as it would without these listeners.
  const onFault = (error: unknown) => {
    if (containRequestFault(error)) return;
    io.err.write(`ferry: crashed: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exit(1);
  };
  process.on('uncaughtException', onFault);
  process.on('unhandledRejection', onFault);
  let server: Awaited<ReturnType<typeof startLocalServer>>;
  try {
    server = await startLocalServer(config);
  } catch (error) {
    // One line that says what to change, and out at once: nothing started is left to wait for.
    const message = isFerryError(error) ? error.message : `cannot start: ${(error as Error).message}`;
    io.err.write(`ferry: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
    process.exit(1);
  }
  io.err.write(
    `ferry: serving on ${server.url} with the ${server.backend.platform} backend` +
      `${server.backend.platform === 'process' ? ' (jobs are NOT isolated)' : ''}; data in ${config.dataDir}\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  io.err.write('ferry: stopping (running containers keep running and are picked up at the next start)\n');
  // Closing stops new work and flushes the store; it is bounded so a stuck engine call cannot
  // hold the exit. The bound is 3 s, well inside the 5 s a prompt exit is promised in (and that
  // service managers commonly wait before SIGKILL), leaving room for loading, signalling and
  // exiting around it. The process then exits outright: the engine's attach streams and waits
  // of running containers would keep it alive, and the next start adopts those containers.
  await Promise.race([server.close(), new Promise((resolve) => setTimeout(resolve, 3000).unref())]);
  process.exit(0);
}

const DURATION_UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

/** Seconds from `90`, `90s`, `10m`, `1h30m` or `1.5h`; anything else is a usage error. */
function duration(name: string, text: string, verb: string): number {
  const plain = /^\d+(\.\d+)?$/.test(text);
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)];
  const whole = parts.map((part) => part[0]).join('') === text;
  if (!plain && (parts.length === 0 || !whole)) {
    throw new UsageError(`${name} must be a duration (90, 90s, 10m, 1h30m), got ${text}`, verb);
  }
  if (plain) return Number(text);
  return parts.reduce((sum, part) => sum + Number(part[1]) * (DURATION_UNITS[part[2] ?? 's'] ?? 1), 0);
}

/** A decimal number option (no hex, no exponent), refused here rather than sent for the server to puzzle over. */
function numberFlag(name: string, text: string, verb: string, signed = false): number {
  if (!(signed ? /^-?\d+(\.\d+)?$/ : /^\d+(\.\d+)?$/).test(text.trim())) {
    throw new UsageError(`${name} must be a number, got ${text}`, verb);
  }
  return Number(text);
}

const numberOrText = (text: string): number | string => (/^\d+(\.\d+)?$/.test(text) ? Number(text) : text);

function pairs(
  list: readonly string[] | undefined,
  what: string,
  verb: string,
): Record<string, string> | undefined {
  if (list === undefined) return undefined;
  const result: Record<string, string> = {};
  for (const item of list) {
    const at = item.indexOf('=');
    if (at <= 0) throw new UsageError(`${what} must be KEY=VALUE, got ${item}`, verb);
    result[item.slice(0, at)] = item.slice(at + 1);
  }
  return result;
}

/** The job spec in `--file`: a JSON object, or a usage error saying what it holds instead. */
function specFile(file: string, verb: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new UsageError(`cannot read the job spec ${file}: ${(error as Error).message}`, verb);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    const held = parsed === null ? 'null' : Array.isArray(parsed) ? 'an array' : `a ${typeof parsed}`;
    throw new UsageError(`the job spec ${file} must hold a JSON object, not ${held}`, verb);
  }
  return { ...(parsed as Record<string, unknown>) };
}

/**
 * `--input SOURCE:PATH`: the path is what follows the last ":/" (URLs hold ":" too). A source
 * ending in "/" is a directory; `@FILE` sends a local text file as the input's content.
 */
function inputOf(text: string, verb: string): Record<string, unknown> {
  const split = text.lastIndexOf(':/');
  // The only ":/" being the scheme's ("s3://b/k") means no path was given.
  if (split <= 0 || text.startsWith('//', split + 1))
    throw new UsageError(`--input takes SOURCE:PATH, e.g. s3://bucket/key:/data/in.csv, got ${text}`, verb);
  const source = text.slice(0, split);
  const path = text.slice(split + 1);
  if (source.startsWith('@')) {
    let content: string;
    try {
      content = fs.readFileSync(source.slice(1), 'utf8');
    } catch (error) {
      throw new UsageError(`--input ${source}: ${(error as Error).message}`, verb);
    }
    return { content, path };
  }
  return source.endsWith('/') ? { url: source, path, type: 'DIRECTORY' } : { url: source, path };
}

function jobSpec(flags: Flags, command: readonly string[], verb: string): Record<string, unknown> {
  const spec = flags.file === undefined ? {} : specFile(flags.file, verb);
  const set = (key: string, value: unknown) => {
    if (value !== undefined) spec[key] = value;
  };
  set('image', flags.image);
  if (command.length > 0) spec.command = [...command];
  const resources: Record<string, unknown> = { ...(spec.resources as object | undefined) };
  if (flags.cpu !== undefined) resources.cpu = numberFlag('--cpu', flags.cpu, verb);
  if (flags.gpu !== undefined) resources.gpu = numberFlag('--gpu', flags.gpu, verb);
  if (flags.memory !== undefined) resources.memory = numberOrText(flags.memory);
  if (flags.disk !== undefined) resources.disk = numberOrText(flags.disk);
  if (Object.keys(resources).length > 0) spec.resources = resources;
  if (flags.timeout !== undefined) {
    const timeout = duration('--timeout', flags.timeout, verb);
    if (!Number.isInteger(timeout))
      throw new UsageError(`--timeout must be whole seconds, got ${flags.timeout}`, verb);
    spec.timeoutSeconds = timeout;
  }
  set('env', pairs(flags.env, '--env', verb));
  set('labels', pairs(flags.label, '--label', verb));
  set('workdir', flags.workdir);
  set('network', flags.network);
  if (flags.priority !== undefined) spec.priority = numberFlag('--priority', flags.priority, verb, true);
  if (flags.publish !== undefined) spec.publish = { destination: flags.publish };
  const limits: Record<string, unknown> = { ...(spec.outputLimits as object | undefined) };
  if (flags.stdoutLimit !== undefined) limits.stdoutBytes = numberOrText(flags.stdoutLimit);
  if (flags.stderrLimit !== undefined) limits.stderrBytes = numberOrText(flags.stderrLimit);
  if (flags.inlineLimit !== undefined) limits.inlineBytes = numberOrText(flags.inlineLimit);
  if (flags.keep !== undefined) limits.keep = flags.keep;
  if (flags.outputLimit !== undefined) limits.outputBytes = numberOrText(flags.outputLimit);
  if (flags.input !== undefined)
    spec.inputs = [...((spec.inputs as unknown[]) ?? []), ...flags.input.map((i) => inputOf(i, verb))];
  if (flags.output !== undefined) {
    spec.outputs = [
      ...((spec.outputs as unknown[]) ?? []),
      ...flags.output.map((o) =>
        o.length > 1 && o.endsWith('/') ? { path: o, type: 'DIRECTORY' } : { path: o },
      ),
    ];
  }
  if (Object.keys(limits).length > 0) spec.outputLimits = limits;
  // With a spec file the server checks it whole and names every field it refuses (`cmd` for `command`).
  if (flags.file !== undefined) return spec;
  if (spec.image === undefined) throw new UsageError('--image is required (or give it in --file)', verb);
  if (spec.command === undefined) {
    throw new UsageError(
      `give the job's command after \`--\`: ferry ${verb} --image ${String(spec.image)} -- echo hello`,
      verb,
    );
  }
  return spec;
}

async function submit(
  client: FerryClient,
  flags: Flags,
  command: readonly string[],
  io: Io,
): Promise<number> {
  refuseJsonFollow(flags, 'submit');
  const headers =
    flags.idempotencyKey === undefined ? undefined : { 'idempotency-key': flags.idempotencyKey };
  const reply = await client.json<Execution>('POST', '/v1/jobs', jobSpec(flags, command, 'submit'), headers);
  const submitted = reply.body;
  if (!flags.wait && !flags.follow) {
    io.out.write(flags.json ? `${JSON.stringify(submitted, null, 2)}\n` : `${submitted.id}\n`);
    return 0;
  }
  return watchJob(client, flags, submitted, io);
}

function refuseJsonFollow(flags: Flags, verb: string): void {
  if (flags.json && flags.follow) {
    throw new UsageError(
      "--json and --follow do not mix: the job's output would run into the JSON; use --json --wait, then ferry logs",
      verb,
    );
  }
}

/**
 * After a job is queued: waits for its end, or follows its output, then prints what it left
 * and returns its exit code.
 */
async function watchJob(client: FerryClient, flags: Flags, submitted: Execution, io: Io): Promise<number> {
  if (!flags.json && io.err.isTTY) io.err.write(`ferry: ${submitted.id} queued\n`);
  const done = await whileWatching(io, submitted.id, async () => {
    if (flags.follow) {
      const following = Promise.all([
        follow(client, submitted.id, 'stdout', io.out, io.err),
        follow(client, submitted.id, 'stderr', io.err, io.err),
      ]);
      if (io.err.isTTY) void announceQueuePlace(client, submitted.id, io, following);
      await following;
    }
    return waitUntilDone(client, submitted.id, io);
  });
  if (flags.json) {
    io.out.write(`${JSON.stringify(done, null, 2)}\n`);
  } else if (!flags.follow) {
    if (done.result !== undefined) {
      const base = `/v1/executions/${encodeURIComponent(done.id)}/logs`;
      io.out.write((await client.bytes(`${base}?stream=stdout`)).body);
      io.err.write((await client.bytes(`${base}?stream=stderr`)).body);
    }
  }
  if (!flags.json) summarize(done, io);
  return exitCodeOf(done);
}

/**
 * One line on stderr when a job did not end well (state, exit code, reason, where to look),
 * or when its output was cut to its limits.
 */
function summarize(done: Execution, io: Io): void {
  if (done.state !== 'COMPLETED') {
    io.err.write(`ferry: ${done.id} ${done.state}${done.reason ? `: ${done.reason}` : ''}\n`);
  } else if (done.exitCode !== 0 && done.exitCode !== null && done.exitCode !== undefined) {
    io.err.write(
      `ferry: ${done.id} COMPLETED with exit code ${done.exitCode}; \`ferry result ${done.id}\` shows the result\n`,
    );
  } else if (done.result?.stdout.truncated || done.result?.stderr.truncated) {
    io.err.write(`ferry: output was truncated to its limit; see \`ferry result ${done.id}\`\n`);
  }
}

/** The last state seen of each execution being waited on or followed, for the Ctrl-C line. */
const watched = new Map<string, string>();

/**
 * Runs a wait or a follow; if the person presses Ctrl-C meanwhile, says that the job goes on
 * and how to stop it, and exits 130 as an interrupted command does.
 */
async function whileWatching<T>(io: Io, id: string, watch: () => Promise<T>): Promise<T> {
  const interrupted = () => {
    const state = watched.get(id);
    io.err.write(
      `\r\x1b[K\nferry: stopped watching; ${id} is ${state === undefined ? 'still going' : `still ${state}`}; \`ferry cancel ${id}\` stops it\n`,
    );
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  try {
    return await watch();
  } finally {
    process.removeListener('SIGINT', interrupted);
  }
}

/** The job's own exit code; for runs that did not end by themselves, a code in the style of timeout(1) and docker. */
function exitCodeOf(execution: Execution): number {
  switch (execution.state) {
    case 'COMPLETED':
      return execution.exitCode ?? 0;
    case 'TIMED_OUT':
      return 124;
    case 'CANCELLED':
      return 130;
    default:
      return 125;
  }
}

async function waitUntilDone(
  client: FerryClient,
  id: string,
  io: Io,
  timeoutSeconds?: number,
): Promise<Execution> {
  const started = Date.now();
  const progress = io.err.isTTY === true;
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  let frame = 0;
  let last: Execution | undefined;
  // While the job is queued, the line also says its place in line and what it waits for.
  let why = '';
  let askedAt = 0;
  const explain = async () => {
    if (last?.state !== 'QUEUED') {
      why = '';
      return;
    }
    if (Date.now() - askedAt < QUEUE_POLL_MS) return;
    askedAt = Date.now();
    const place = await queuePlaceOf(client, id);
    why = place === undefined ? '' : ` ${describePlace(place)}`;
  };
  const ticker = progress
    ? setInterval(() => {
        const elapsed = ((Date.now() - started) / 1000).toFixed(0);
        void explain();
        const line = `${frames[frame++ % frames.length]} ${id} ${last?.state ?? 'waiting'}${why} ${elapsed}s `;
        const width = (io.err as { columns?: number }).columns;
        io.err.write(
          `\r\x1b[K${width !== undefined && width > 0 && line.length >= width ? line.slice(0, width - 1) : line}`,
        );
      }, 100)
    : undefined;
  try {
    for (;;) {
      const left =
        timeoutSeconds === undefined ? 20 : Math.min(20, timeoutSeconds - (Date.now() - started) / 1000);
      // The first call answers at once; each next one as soon as the state changes, so the
      // progress line always shows where the job is.
      const query = new URLSearchParams({
        timeoutSeconds: String(Math.max(0, Math.floor(last === undefined ? 0 : left))),
      });
      const current = last?.state;
      if (current !== undefined) {
        for (const state of EXECUTION_STATES) if (state !== current) query.append('state', state);
      }
      const reply = await client.json<Execution>(
        'GET',
        `/v1/executions/${encodeURIComponent(id)}/wait?${query}`,
      );
      last = reply.body;
      watched.set(id, last.state);
      if (isTerminal(last.state)) return last;
      if (timeoutSeconds !== undefined && (Date.now() - started) / 1000 >= timeoutSeconds) return last;
    }
  } finally {
    if (ticker !== undefined) {
      clearInterval(ticker);
      io.err.write('\r\x1b[K');
    }
  }
}

/** How long `--follow` keeps trying a server that stopped answering (a restart) before it gives up. */
const FOLLOW_RECONNECT_SECONDS = 120;

async function follow(
  client: FerryClient,
  id: string,
  stream: 'stdout' | 'stderr',
  out: NodeJS.WritableStream,
  notices: NodeJS.WritableStream,
): Promise<number> {
  let offset = 0;
  let lostSince: number | undefined;
  for (;;) {
    let reply: Awaited<ReturnType<FerryClient['bytes']>>;
    try {
      reply = await client.bytes(
        `/v1/executions/${encodeURIComponent(id)}/logs?stream=${stream}&follow=true&offset=${offset}&waitSeconds=20`,
      );
    } catch (error) {
      // The run ended with no output stored (it never ran, or its result was lost): nothing
      // more to follow; the final state line says why.
      if (error instanceof ApiError && error.status === 409) return offset;
      // The server went away (a restart, a crash): the job goes on, and so does the follow,
      // from the byte it had reached, once the server answers again.
      if (!(error instanceof Unreachable)) throw error;
      const now = Date.now();
      if (lostSince === undefined) {
        lostSince = now;
        notices.write(
          `ferry: ${stream} of ${id}: the server is not answering; following again from byte ${offset} when it is back (Ctrl-C to stop)\n`,
        );
      } else if (now - lostSince > FOLLOW_RECONNECT_SECONDS * 1000) {
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
      continue;
    }
    if (lostSince !== undefined) {
      lostSince = undefined;
      notices.write(`ferry: ${stream} of ${id}: the server is back; following from byte ${offset}\n`);
    }
    const state = reply.headers.get('ferry-state');
    if (state !== null) watched.set(id, state);
    const skipped = Number(reply.headers.get('ferry-skipped-bytes') ?? '0');
    if (skipped > 0) out.write(`\n[ferry: ${skipped} bytes not kept]\n`);
    if (reply.body.length > 0) out.write(reply.body);
    offset = Number(reply.headers.get('ferry-next-offset') ?? offset);
    if (reply.headers.get('ferry-complete') === 'true') return offset;
  }
}

/** How often a queued job's place is asked for while someone watches it. */
const QUEUE_POLL_MS = 2000;

interface QueuePlace {
  readonly position: number;
  readonly positionAtLeast: boolean;
  readonly queuedJobs: number;
  readonly waitingFor: 'capacity' | 'priority' | 'reservation' | 'dispatch';
  readonly reason: string;
  readonly reservedFor?: string;
}

/** The job's place in the queue, or undefined once it is no longer queued (or cannot be told). */
async function queuePlaceOf(client: FerryClient, id: string): Promise<QueuePlace | undefined> {
  try {
    return (await client.json<QueuePlace>('GET', `/v1/executions/${encodeURIComponent(id)}/queue`)).body;
  } catch {
    return undefined;
  }
}

/** "#2 of 5 in line, waiting for capacity: needs …", for the wait line and the follow notices. */
function describePlace(place: QueuePlace): string {
  const at = `#${place.position}${place.positionAtLeast ? '+' : ''} of ${place.queuedJobs} in line`;
  switch (place.waitingFor) {
    case 'capacity':
      return `${at}, waiting for capacity: ${place.reason}`;
    case 'priority':
      return `${at}, behind a job of higher priority: ${place.reason}`;
    case 'reservation':
      return `${at}, capacity is held for ${place.reservedFor ?? 'a job'} that has waited longest: ${place.reason}`;
    case 'dispatch':
      return `${at}, capacity is free: starting`;
  }
}

/**
 * While a followed job is queued, says on the terminal where it stands each time that changes,
 * one line each (its output may already share the terminal), until it leaves the queue.
 */
async function announceQueuePlace(
  client: FerryClient,
  id: string,
  io: Io,
  until: Promise<unknown>,
): Promise<void> {
  let ended = false;
  void until.finally(() => {
    ended = true;
  });
  let said = '';
  while (!ended) {
    const place = await queuePlaceOf(client, id);
    if (place === undefined) return;
    const note = describePlace(place);
    if (note !== said) io.err.write(`ferry: ${id} QUEUED ${note}\n`);
    said = note;
    await new Promise((resolve) => setTimeout(resolve, QUEUE_POLL_MS));
  }
}

interface NodeInfo {
  readonly version: string;
  readonly backend: string;
  readonly isolated: boolean;
  readonly capacity: { maxConcurrency: number; cpu: number; memoryMiB: number; starvationSeconds: number };
  readonly usage: { runningJobs: number; queuedJobs: number; cpu: number; memoryMiB: number };
  readonly perJobLimits: {
    cpu: number;
    memoryMiB: number;
    gpu: boolean;
    timeoutSeconds: { min: number; max: number };
    outputBytesPerStream: number;
    network: string[];
  };
}

function describeNode(node: NodeInfo): string {
  const MiB = 1024 * 1024;
  const { capacity: c, usage: u, perJobLimits: l } = node;
  return [
    `ferry ${node.version}, ${node.backend} backend${node.isolated ? '' : ' (jobs are NOT isolated)'}`,
    `  running   ${u.runningJobs} of at most ${c.maxConcurrency} jobs; ${u.queuedJobs} queued`,
    `  in use    ${u.cpu} of ${c.cpu} vCPU, ${formatBytes(u.memoryMiB * MiB)} of ${formatBytes(c.memoryMiB * MiB)}`,
    `  per job   up to ${l.cpu} vCPU, ${formatBytes(l.memoryMiB * MiB)}, ${l.gpu ? 'GPUs' : 'no GPU'}, ` +
      `timeout ${l.timeoutSeconds.min}–${l.timeoutSeconds.max} s, ${formatBytes(l.outputBytesPerStream)} per stream, ` +
      `network ${l.network.join(' or ')}`,
    `  a queued job reserves capacity after ${c.starvationSeconds} s`,
  ].join('\n');
}

function describeBid(executionId: string, bid: Execution['bid']): string {
  if (!bid.accepted) return `declined: ${bid.reason}`;
  const c = bid.constraints;
  const e = bid.estimate;
  return [
    `offer ${executionId}: ${bid.reason}`,
    c
      ? `  size      ${c.cpu} vCPU, ${formatBytes(c.memoryMiB * 1024 * 1024)}, ${c.diskGiB} GiB disk (${c.platform})`
      : '',
    e
      ? `  estimate  $${e.costPerHourUsd}/hour, at most $${e.maxCostUsd}; queue wait ~${e.queueWaitSeconds}s` +
        (e.queueWaitAtMostSeconds === undefined || e.queueWaitAtMostSeconds === e.queueWaitSeconds
          ? ''
          : ` (an estimate from how long the running jobs have run; at most ${e.queueWaitAtMostSeconds}s by their timeouts)`)
      : '',
    ...(c?.notes ?? []).map((n) => `  note      ${n}`),
    `  expires   ${bid.expiresAt}`,
    `accept with: ferry accept ${executionId}`,
  ]
    .filter((line) => line !== '')
    .join('\n');
}

/** The body of a decision: the caller's justification, when given. */
function justification(flags: Flags): { justification: string } | undefined {
  if (flags.justification === undefined) return undefined;
  if (flags.justification === '') throw new UsageError('--justification must not be empty', undefined);
  return { justification: flags.justification };
}

function describeExecution(e: Execution): string {
  const lines = [
    `${e.id}  ${e.state}${e.exitCode === undefined || e.exitCode === null ? '' : `  exit ${e.exitCode}`}`,
    `  image     ${e.spec.image}`,
    `  command   ${e.spec.command.join(' ')}`,
  ];
  if (e.reason) lines.push(`  reason    ${e.reason}`);
  if (e.bid.constraints)
    lines.push(`  size      ${e.bid.constraints.cpu} vCPU, ${e.bid.constraints.memoryMiB} MiB`);
  for (const h of e.history) {
    const step = h.review === undefined ? h.state : `${h.state}  result ${h.review}`;
    lines.push(`  ${h.at}  ${step}${h.reason ? `  (${h.reason})` : ''}`);
    if (h.justification !== undefined) lines.push(`      justification: ${h.justification}`);
  }
  if (e.result) {
    const s = e.result.stdout;
    const r = e.result.stderr;
    lines.push(
      `  stdout    ${formatBytes(s.totalBytes)}${s.truncated ? ` (kept ${formatBytes(s.storedBytes)})` : ''}`,
      `  stderr    ${formatBytes(r.totalBytes)}${r.truncated ? ` (kept ${formatBytes(r.storedBytes)})` : ''}`,
      `  review    ${e.result.review}`,
    );
  }
  return lines.join('\n');
}

function describeResult(m: ResultManifest, review: string, links: ResultLinks['links']): string {
  const stream = (name: 'stdout' | 'stderr') => {
    const s = m[name];
    return `  ${name}    ${formatBytes(s.totalBytes)} produced, ${formatBytes(s.storedBytes)} stored${s.truncated ? ` (truncated, ${m.keep})` : ''}`;
  };
  const outputs = m.outputs.map((o) => {
    const what =
      o.missing === true
        ? 'nothing there'
        : `${o.type === 'DIRECTORY' ? `${o.files} files, ` : ''}${formatBytes(o.bytes)} stored` +
          (o.truncated ? ` of ${formatBytes(o.totalBytes)} (${o.skippedCount ?? 0} skipped or cut)` : '');
    return `  output    ${o.name} (${o.path}): ${what}`;
  });
  const fileLinks = m.outputs
    .filter((o) => o.type !== 'DIRECTORY' && links.outputs[o.name] !== undefined)
    .map((o) => `  ${o.name} link  ${links.outputs[o.name]}`);
  return [
    `${m.executionId}  exit ${m.exitCode ?? '-'}${m.signal ? ` (${m.signal})` : ''}${m.partial ? '  partial' : ''}  review ${review}`,
    stream('stdout'),
    stream('stderr'),
    ...outputs,
    `  stdout link  ${String(links.stdout)}`,
    `  stderr link  ${String(links.stderr)}`,
    ...fileLinks,
    ...(m.outputs.length > 0 ? ['  (ferry result ID --download DIR saves every file, checked)'] : []),
  ].join('\n');
}

/** The command that shows the next page: this one, every filter kept, with the new cursor. */
function nextPage(argv: readonly string[], cursor: string): string {
  const kept: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i] ?? '';
    if (word === '--cursor') {
      i++;
      continue;
    }
    if (word.startsWith('--cursor=')) continue;
    kept.push(/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`);
  }
  return `ferry ${kept.join(' ')} --cursor ${cursor}`;
}

/** 3s, 4m, 2h, 5d: how long, in its largest whole unit. */
function shortDuration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${seconds % 60 === 0 ? '' : `${seconds % 60}s`}`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d`;
}

function table(
  items: readonly Execution[],
  options: { labels: boolean; width?: number | undefined; next?: string },
  now = Date.now(),
): string {
  const header = [
    'ID',
    'STATE',
    'EXIT',
    'AGE',
    'DURATION',
    'IMAGE',
    'COMMAND',
    ...(options.labels ? ['LABELS'] : []),
  ];
  const rows = items.map((e) => {
    const started = e.startedAt === undefined ? undefined : Date.parse(e.startedAt);
    const ended = e.endedAt === undefined ? undefined : Date.parse(e.endedAt);
    const labels = Object.entries(e.spec.labels ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    return [
      e.id,
      e.state,
      e.exitCode === undefined || e.exitCode === null ? '' : String(e.exitCode),
      shortDuration(now - Date.parse(e.createdAt)),
      started === undefined ? '' : shortDuration((ended ?? now) - started),
      e.spec.image,
      e.spec.command.join(' ').replace(/\s+/g, ' '),
      ...(options.labels ? [labels] : []),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => {
    const text = cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
    // On a terminal a row is cut to its width rather than wrapped.
    return options.width !== undefined && text.length > options.width
      ? `${text.slice(0, Math.max(0, options.width - 1))}…`
      : text;
  };
  const out = [line(header), ...rows.map(line)];
  if (items.length === 0) out.push('(none)');
  if (options.next !== undefined) out.push(`(more: ${options.next})`);
  return out.join('\n');
}
