// Containers made by an earlier Ferry carry their execution but not their server. After an
// upgrade, recovery on a real Docker Engine adopts such a container when its execution is active
// in this server's own store (it can only be this data directory's), and leaves every other
// such container alone: it may be another server's.
import { randomUUID } from 'node:crypto';
import fsp from 'node:fs/promises';
import type Docker from 'dockerode';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { DirectoryObjectStore } from '../../shared/adapters/local/dir-object-store.ts';
import { containerName, DockerBackend, LABEL_EXECUTION } from '../../shared/adapters/local/docker-backend.ts';
import { type Execution, resultKeys } from '../../shared/domain/execution.ts';
import type { TaskStateChangeDetail } from '../../shared/domain/task-event.ts';
import { silentLogger } from '../../shared/logger.ts';
import { docker, removeContainersOf, sleep } from '../support/docker.ts';
import { offeredExecution } from '../support/fixtures.ts';
import { tempDir } from '../support/server.ts';

const dockerAvailable = inject('dockerAvailable');
const image = inject('testImage');
if (!dockerAvailable && process.env.CI === 'true') {
  throw new Error('CI=true but no Docker Engine is available: the recovery suite must run');
}

/** A running container shaped like an earlier Ferry's job: named and labelled by its execution only. */
async function earlierFerryJob(executionId: string, script: string): Promise<Docker.Container> {
  const container = await docker.createContainer({
    name: containerName(executionId),
    Image: image,
    Entrypoint: ['sh'],
    Cmd: ['-c', script],
    Labels: { [LABEL_EXECUTION]: executionId },
    HostConfig: { NetworkMode: 'none', LogConfig: { Type: 'local', Config: {} } },
  });
  await container.start();
  return container;
}

describe.skipIf(!dockerAvailable)('recovery after an upgrade, with containers of an earlier Ferry', () => {
  const ids: string[] = [];
  const dirs: string[] = [];

  afterAll(async () => {
    await removeContainersOf(ids);
    for (const dir of dirs) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('adopts the one whose execution this store runs, and leaves one it does not know running', async () => {
    const ours = `ex_earlier_${randomUUID().slice(0, 8)}`;
    const unknown = `ex_unknown_${randomUUID().slice(0, 8)}`;
    ids.push(ours, unknown);
    await earlierFerryJob(ours, 'echo before; sleep 3; echo after');
    const theirs = await earlierFerryJob(unknown, 'sleep 120');
    const dir = await tempDir();
    dirs.push(dir);
    const objects = await DirectoryObjectStore.open(dir, () => 'http://127.0.0.1:1');
    const events: TaskStateChangeDetail[] = [];
    const backend = new DockerBackend(
      docker,
      `server-${randomUUID()}`,
      objects,
      (event) => events.push(event.detail),
      silentLogger,
      { kind: 'journal', spoolRoot: `${dir}/spool` },
    );
    const offered = offeredExecution(ours, new Date().toISOString());
    const running: Execution = {
      ...offered,
      state: 'RUNNING',
      task: { id: `docker/${ours}`, lastEventVersion: 1 },
    };

    const recovered = await backend.recover(new Map([[ours, running]]));

    expect(recovered).toEqual({ adopted: 1, removed: 0 });
    const deadline = Date.now() + 30_000;
    while (!events.some((e) => e.lastStatus === 'STOPPED') && Date.now() < deadline) await sleep(100);
    const stopped = events.find((e) => e.lastStatus === 'STOPPED');
    expect(stopped).toMatchObject({ startedBy: ours, containers: [{ exitCode: 0 }] });
    expect((await objects.get(resultKeys(ours).stdout))?.toString()).toBe('before\nafter\n');
    await expect(docker.getContainer(containerName(ours)).inspect()).rejects.toMatchObject({
      statusCode: 404,
    });
    // Not this store's execution: untouched, still running.
    expect((await theirs.inspect()).State.Running).toBe(true);
  }, 60_000);
});
