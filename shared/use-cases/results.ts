// Results: the manifest with download links, output by stream position (stored or live),
// and the caller's review — accepting publishes, rejecting deletes what was stored.

import { liveKey, readLiveObject } from '../capture/result-writer.ts';
import type { Core } from '../core.ts';
import type { Execution, ResultManifest, ReviewState, StreamResult } from '../domain/execution.ts';
import { resultKeys } from '../domain/execution.ts';
import type { ReviewBody } from '../domain/review.ts';
import { isTerminal, RUN_ENDED_STATES } from '../domain/states.ts';
import { InvalidTransition } from '../errors.ts';
import { getOwned } from './bids.ts';
import { amend, mutate } from './transitions.ts';

export type StreamName = 'stdout' | 'stderr';

export interface ResultView {
  readonly executionId: string;
  readonly state: Execution['state'];
  readonly review: ReviewState;
  readonly manifest: ResultManifest;
  readonly links: {
    readonly stdout: string;
    readonly stderr: string;
    readonly outputs: Readonly<Record<string, string>>;
    readonly expiresAt: string;
  };
}

export async function loadManifest(core: Core, id: string): Promise<ResultManifest | undefined> {
  const body = await core.objects.get(resultKeys(id).manifest);
  return body === undefined ? undefined : (JSON.parse(body.toString('utf8')) as ResultManifest);
}

function requireResult(execution: Execution): NonNullable<Execution['result']> {
  if (execution.result === undefined) {
    const why = RUN_ENDED_STATES.includes(execution.state)
      ? 'its run left no result'
      : `it is ${execution.state} and has not run to an end`;
    throw new InvalidTransition(`execution ${execution.id} has no result: ${why}`);
  }
  if (execution.result.review === 'REJECTED') {
    throw new InvalidTransition(`the result of execution ${execution.id} was rejected and deleted`);
  }
  return execution.result;
}

export async function getResult(core: Core, owner: string, id: string): Promise<ResultView> {
  const execution = await getOwned(core, owner, id);
  const result = requireResult(execution);
  const manifest = await loadManifest(core, id);
  if (manifest === undefined)
    throw new InvalidTransition(`the result of execution ${id} is no longer stored`);
  const seconds = core.settings.resultLinkSeconds;
  const keys = resultKeys(id);
  const outputs: Record<string, string> = {};
  for (const output of manifest.outputs) {
    // A directory's files each have a link, named NAME/PATH; a file's is named NAME.
    if (output.type === 'DIRECTORY') {
      for (const entry of output.entries ?? []) {
        outputs[`${output.name}/${entry.path}`] = await core.objects.downloadUrl(
          `${output.key}${entry.path}`,
          seconds,
        );
      }
    } else if (output.files > 0) {
      outputs[output.name] = await core.objects.downloadUrl(output.key, seconds);
    }
  }
  return {
    executionId: id,
    state: execution.state,
    review: result.review,
    manifest,
    links: {
      stdout: await core.objects.downloadUrl(keys.stdout, seconds),
      stderr: await core.objects.downloadUrl(keys.stderr, seconds),
      outputs,
      expiresAt: new Date(core.clock.now().getTime() + seconds * 1000).toISOString(),
    },
  };
}

/** What `published.json` says: the result's files at the destination, with their digests. */
function publishedManifest(manifest: ResultManifest, destination: string, prefix: string) {
  const at = (key: string) => `${destination}${key.slice(prefix.length)}`;
  const keys = resultKeys(manifest.executionId);
  const stream = (name: 'stdout' | 'stderr') => ({
    url: at(keys[name]),
    bytes: manifest[name].storedBytes,
    totalBytes: manifest[name].totalBytes,
    truncated: manifest[name].truncated,
    ...(manifest[name].sha256 === undefined ? {} : { sha256: manifest[name].sha256 }),
  });
  return {
    executionId: manifest.executionId,
    exitCode: manifest.exitCode,
    partial: manifest.partial,
    manifest: at(keys.manifest),
    stdout: stream('stdout'),
    stderr: stream('stderr'),
    outputs: manifest.outputs.map((output) => ({
      name: output.name,
      path: output.path,
      type: output.type,
      url: at(output.key),
      bytes: output.bytes,
      totalBytes: output.totalBytes,
      files: output.files,
      truncated: output.truncated,
      ...(output.missing ? { missing: true } : {}),
      ...(output.sha256 === undefined ? {} : { sha256: output.sha256 }),
      ...(output.entries === undefined
        ? {}
        : { entries: output.entries.map((e) => ({ ...e, url: at(`${output.key}${e.path}`) })) }),
      ...(output.skipped === undefined ? {} : { skipped: output.skipped, skippedCount: output.skippedCount }),
    })),
  };
}

export async function reviewResult(
  core: Core,
  owner: string,
  id: string,
  decision: 'ACCEPTED' | 'REJECTED',
  review: ReviewBody = {},
): Promise<Execution> {
  const execution = await getOwned(core, owner, id);
  const result = requireResult(execution);
  if (result.review === decision) return execution;
  if (result.review !== 'PENDING') {
    throw new InvalidTransition(`the result of execution ${id} was already ${result.review.toLowerCase()}`);
  }
  const keys = resultKeys(id);
  let publishedTo: string | undefined;
  if (decision === 'ACCEPTED' && execution.spec.publish !== undefined) {
    publishedTo = `${execution.spec.publish.destination.replace(/\/$/, '')}/${id}/`;
    const objects = await core.objects.list(keys.prefix);
    for (const object of objects) {
      await core.objects.copy(object.key, `${publishedTo}${object.key.slice(keys.prefix.length)}`);
    }
    const manifest = await loadManifest(core, id);
    if (manifest !== undefined) {
      // Beside the copies, what was published and where: every output's address, size, digest,
      // and whether it was cut or left out.
      await core.objects.putAt(
        `${publishedTo}published.json`,
        JSON.stringify(publishedManifest(manifest, publishedTo, keys.prefix), null, 2),
        'application/json',
      );
    }
  }
  if (decision === 'REJECTED') await core.objects.deletePrefix(keys.prefix);
  return mutate(core.store, id, (current) => {
    if (current.result === undefined || current.result.review !== 'PENDING') return undefined;
    const now = core.clock.now();
    const at = now.toISOString();
    const justification = review.justification === undefined ? {} : { justification: review.justification };
    return {
      ...amend(current, now, {
        result: {
          ...current.result,
          review: decision,
          reviewedAt: at,
          ...justification,
          ...(publishedTo === undefined ? {} : { publishedTo }),
        },
      }),
      // The review is a step of its own in the history; the state stays as it was.
      history: [...current.history, { state: current.state, at, review: decision, ...justification }],
    };
  });
}

export interface LogChunk {
  readonly data: Buffer;
  /** Stream position to ask for next. */
  readonly nextOffset: number;
  /** Bytes between the asked offset and the returned data that were not kept. */
  readonly skippedBytes: number;
  /** True when the run has ended and everything kept has been returned. */
  readonly complete: boolean;
  readonly state: Execution['state'];
}

/** Where the stored file holds a stream position: head bytes, omitted gap, then tail bytes. */
function readPlan(summary: StreamResult, position: number, maxBytes: number) {
  const tailStart = summary.totalBytes - summary.tailBytes;
  const markerBytes = summary.storedBytes - summary.headBytes - summary.tailBytes;
  if (position < summary.headBytes) {
    const end = Math.min(summary.headBytes, position + maxBytes);
    return { start: position, end, position, skipped: 0 };
  }
  const from = Math.max(position, tailStart);
  if (from >= summary.totalBytes || summary.tailBytes === 0) {
    return {
      start: 0,
      end: 0,
      position: summary.totalBytes,
      skipped: Math.max(0, summary.totalBytes - position),
    };
  }
  const start = summary.headBytes + markerBytes + (from - tailStart);
  return {
    start,
    end: Math.min(summary.storedBytes, start + maxBytes),
    position: from,
    skipped: from - position,
  };
}

/**
 * The stored bytes of a stream between positions `from` and `to`, at most `maxBytes` of them:
 * one step's part of a job's output. Bytes not kept are left out.
 */
export async function readStoredSpan(
  core: Core,
  manifest: ResultManifest,
  stream: StreamName,
  span: { readonly from: number; readonly to: number },
  maxBytes: number,
): Promise<Buffer> {
  const summary = manifest[stream];
  const start = readPlan(summary, span.from, 1).position;
  const length = Math.min(maxBytes, span.to - start);
  if (length <= 0) return Buffer.alloc(0);
  const plan = readPlan(summary, start, length);
  if (plan.end <= plan.start) return Buffer.alloc(0);
  const key = resultKeys(manifest.executionId)[stream];
  return (await core.objects.getRange(key, plan.start, plan.end)) ?? Buffer.alloc(0);
}

/**
 * Refuses to read the output of an ended execution that has none stored, saying why, rather
 * than answering with nothing as if the job had printed nothing.
 */
async function requireStoredOutput(core: Core, execution: Execution): Promise<ResultManifest> {
  const { id } = execution;
  if (execution.result === undefined) {
    const why = RUN_ENDED_STATES.includes(execution.state)
      ? `it ended ${execution.state}${execution.reason === undefined ? '' : `: ${execution.reason}`}`
      : `it is ${execution.state} and never ran`;
    throw new InvalidTransition(`the output of execution ${id} was not stored: ${why}`);
  }
  if (execution.result.review === 'REJECTED') {
    throw new InvalidTransition(`the result of execution ${id} was rejected and deleted`);
  }
  const manifest = await loadManifest(core, id);
  if (manifest === undefined) {
    throw new InvalidTransition(`the output of execution ${id} is no longer stored`);
  }
  return manifest;
}

/** What a plain read of a stream answers: the bytes, or a link when they are too many to carry. */
export type StoredLog =
  | { readonly kind: 'bytes'; readonly data: Buffer }
  | { readonly kind: 'link'; readonly url: string; readonly storedBytes: number };

/**
 * The whole stored output of one stream, as kept (with the omission marker for head+tail).
 * Over `inlineMaxBytes` it answers a download link instead, so no response outgrows what the
 * transport carries (a Lambda response holds 6 MB, base64 inflates by a third). While the run
 * goes on there is no stored object to link to: the live bytes come, at most `inlineMaxBytes`.
 */
export async function readStoredLog(
  core: Core,
  owner: string,
  id: string,
  stream: StreamName,
  inlineMaxBytes: number,
): Promise<StoredLog> {
  const execution = await getOwned(core, owner, id);
  if (!isTerminal(execution.state)) {
    const chunk = await readLog(core, owner, id, stream, {
      offset: 0,
      maxBytes: inlineMaxBytes,
      waitSeconds: 0,
    });
    return { kind: 'bytes', data: chunk.data };
  }
  const manifest = await requireStoredOutput(core, execution);
  const key = resultKeys(id)[stream];
  const { storedBytes } = manifest[stream];
  if (storedBytes > inlineMaxBytes) {
    return {
      kind: 'link',
      url: await core.objects.downloadUrl(key, core.settings.resultLinkSeconds),
      storedBytes,
    };
  }
  return { kind: 'bytes', data: (await core.objects.get(key)) ?? Buffer.alloc(0) };
}

/** The live window a Fargate publisher keeps in the object store while the job runs. */
async function readPublishedLive(
  core: Core,
  id: string,
  stream: StreamName,
  offset: number,
  maxBytes: number,
) {
  const object = await core.objects.get(liveKey(id, stream));
  return object === undefined ? undefined : readLiveObject(object, offset, maxBytes);
}

/**
 * Output from a stream position: from storage once the run has ended, from the backend
 * while it runs. With `waitSeconds` > 0 it holds until there is something new or the run ends.
 */
export async function readLog(
  core: Core,
  owner: string,
  id: string,
  stream: StreamName,
  options: { offset: number; maxBytes: number; waitSeconds: number },
): Promise<LogChunk> {
  const deadline = Date.now() + Math.min(options.waitSeconds, core.settings.maxWaitSeconds) * 1000;
  for (;;) {
    const execution = await getOwned(core, owner, id);
    if (isTerminal(execution.state)) {
      const manifest = await requireStoredOutput(core, execution);
      const plan = readPlan(manifest[stream], options.offset, options.maxBytes);
      const data =
        plan.end > plan.start
          ? ((await core.objects.getRange(resultKeys(id)[stream], plan.start, plan.end)) ?? Buffer.alloc(0))
          : Buffer.alloc(0);
      const nextOffset = plan.position + data.length;
      return {
        data,
        nextOffset,
        skippedBytes: plan.skipped,
        complete: readPlan(manifest[stream], nextOffset, 1).end === 0,
        state: execution.state,
      };
    }
    if (execution.task !== undefined) {
      const live =
        (await core.backend.readLive(execution.task.id, stream, options.offset, options.maxBytes)) ??
        (await readPublishedLive(core, id, stream, options.offset, options.maxBytes));
      if (live !== undefined && (live.data.length > 0 || live.skippedBytes > 0)) {
        return { ...live, complete: false, state: execution.state };
      }
    }
    const left = deadline - Date.now();
    if (left <= 0) {
      return {
        data: Buffer.alloc(0),
        nextOffset: options.offset,
        skippedBytes: 0,
        complete: false,
        state: execution.state,
      };
    }
    await core.changes.waitForChange(id, Math.min(left, 250));
  }
}
