// Helpers for the Docker end-to-end suites: what the engine holds for Ferry's executions,
// raw HTTP for problem replies, following a log, and the exact bytes `seq` prints.
import Docker from 'dockerode';
import type { FerryClient } from '../../cli/client.ts';
import type { Execution } from '../../shared/domain/execution.ts';

export const FERRY_LABEL = 'ferry.execution';

export const docker = new Docker();

/** The containers (any status) that belong to the given executions. */
export async function containersOf(executionIds: readonly string[]): Promise<Docker.ContainerInfo[]> {
  const wanted = new Set(executionIds);
  const all = await docker.listContainers({ all: true, filters: { label: [FERRY_LABEL] } });
  return all.filter((c) => wanted.has(c.Labels[FERRY_LABEL] ?? ''));
}

/** Force-removes whatever containers the given executions left (cleanup after a failed test). */
export async function removeContainersOf(executionIds: readonly string[]): Promise<void> {
  for (const info of await containersOf(executionIds)) {
    await docker
      .getContainer(info.Id)
      .remove({ force: true })
      .catch(() => undefined);
  }
}

/**
 * Counts, every `everyMs`, the containers of the given executions that exist on the engine,
 * until stopped; returns every count seen. Other suites' containers are not counted.
 */
export function sampleContainers(executionIds: () => readonly string[], everyMs = 100) {
  const counts: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      counts.push((await containersOf(executionIds())).length);
      await sleep(everyMs);
    }
  })();
  return {
    async stop(): Promise<number[]> {
      running = false;
      await loop;
      return counts;
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface RawReply {
  readonly status: number;
  readonly contentType: string;
  readonly body: Record<string, unknown>;
}

/** A request whose error reply the test wants to see whole (FerryClient turns errors into exceptions). */
export async function rawRequest(
  baseUrl: string,
  method: string,
  path: string,
  token?: string,
): Promise<RawReply> {
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const response = await fetch(`${baseUrl}${path}`, { method, headers });
  const text = await response.text();
  return {
    status: response.status,
    contentType: response.headers.get('content-type') ?? '',
    body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>),
  };
}

export interface FollowedChunk {
  readonly data: Buffer;
  readonly offset: number;
  readonly nextOffset: number;
  readonly complete: boolean;
  /** The execution's state when the chunk was served. */
  readonly state: Execution['state'];
}

/** Follows a stream from offset 0 the way `ferry logs --follow` does, until Ferry says it is complete. */
export async function followLog(
  client: FerryClient,
  id: string,
  stream: 'stdout' | 'stderr',
  seconds = 60,
): Promise<FollowedChunk[]> {
  const deadline = Date.now() + seconds * 1000;
  const chunks: FollowedChunk[] = [];
  let offset = 0;
  for (;;) {
    const reply = await client.bytes(
      `/v1/executions/${id}/logs?stream=${stream}&follow=true&offset=${offset}&waitSeconds=5`,
    );
    const nextOffset = Number(reply.headers.get('ferry-next-offset'));
    const complete = reply.headers.get('ferry-complete') === 'true';
    chunks.push({
      data: reply.body,
      offset,
      nextOffset,
      complete,
      state: reply.headers.get('ferry-state') as Execution['state'],
    });
    if (complete) return chunks;
    if (Date.now() > deadline) throw new Error(`log of ${id} not complete after ${seconds}s`);
    offset = nextOffset;
  }
}

/**
 * The first `length` bytes of what `seq FROM N | tr '\n' ' '` prints for a large enough N
 * ("1 2 3 …"): no two stretches are alike, so a slice taken from the wrong place never matches,
 * and without newlines the engine's log driver does not split it into millions of records.
 */
export function spacedNumbers(from: number, length: number): Buffer {
  const parts: string[] = [];
  let size = 0;
  for (let n = from; size < length; n++) {
    const part = `${n} `;
    parts.push(part);
    size += part.length;
  }
  return Buffer.from(parts.join('').slice(0, length), 'latin1');
}
