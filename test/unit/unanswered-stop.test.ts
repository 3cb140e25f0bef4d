// A container the engine will not stop (a fork bomb at its pid limit can make every call to the
// Docker Engine hang): the job still ends TIMED_OUT about a second after its deadline, and its
// capacity stays taken until the container is really gone. The engine here is a stand-in whose
// calls about the container never answer until the test lets them.
import { PassThrough } from 'node:stream';
import type Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { DirectoryObjectStore } from '../../shared/adapters/local/dir-object-store.ts';
import { DockerBackend } from '../../shared/adapters/local/docker-backend.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import type { TaskStateChangeDetail, TaskStateChangeEvent } from '../../shared/domain/task-event.ts';
import { silentLogger } from '../../shared/logger.ts';
import { submitJob } from '../../shared/use-cases/bids.ts';
import { dispatch } from '../../shared/use-cases/dispatch.ts';
import { sweep } from '../../shared/use-cases/sweep.ts';
import { handleTaskStateChange } from '../../shared/use-cases/task-events.ts';
import { amend, mutate } from '../../shared/use-cases/transitions.ts';
import { buildTestCore } from '../support/core.ts';
import { offeredExecution } from '../support/fixtures.ts';
import { tempDir } from '../support/server.ts';

/** An engine that runs the container, then stops answering anything about it until `recover`. */
function stuckEngine() {
  const never = new Promise<never>(() => {});
  const calls: string[] = [];
  let answering = false;
  const unanswered = (call: string) => {
    calls.push(call);
    return never;
  };
  const container = {
    attach: async () => new PassThrough(),
    start: async () => undefined,
    wait: () => unanswered('wait'),
    inspect: () => unanswered('inspect'),
    kill: ({ signal }: { signal: string }) => unanswered(`kill ${signal}`),
    stop: () => unanswered('stop'),
    remove: () => {
      calls.push('remove');
      return answering ? Promise.resolve() : never;
    },
  };
  const docker = {
    getImage: () => ({ inspect: async () => ({}) }),
    createContainer: async () => container,
    getContainer: () => container,
    listContainers: async () => [],
  } as unknown as Docker;
  return {
    docker,
    calls,
    recover: () => {
      answering = true;
    },
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until<T>(what: () => T | undefined, seconds: number): Promise<T> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = what();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`not within ${seconds}s`);
    await sleep(20);
  }
}

describe('a stop the Docker Engine never answers', () => {
  it('escalates, reports the task ended with its resources held, and STOPPED once it is removed', async () => {
    const engine = stuckEngine();
    const events: TaskStateChangeDetail[] = [];
    const dir = await tempDir();
    const objects = await DirectoryObjectStore.open(dir, () => 'http://127.0.0.1:1');
    // The wrapper's capture: the stand-in engine runs nothing, so its spool stays empty.
    const backend = new DockerBackend(
      engine.docker,
      'server-a',
      objects,
      (event: TaskStateChangeEvent) => events.push(event.detail),
      silentLogger,
      { kind: 'wrapper', wrapperPath: '/nonexistent/ferry-wrapper', spoolRoot: `${dir}/spool` },
    );
    const offered = offeredExecution('ex_stuck', new Date().toISOString());
    const execution: Execution = { ...offered, spec: { ...offered.spec, timeoutSeconds: 1 } };

    const { taskId } = await backend.launch(execution, {
      cpu: 1,
      memoryMiB: 512,
      diskGiB: 20,
      platform: 'docker',
      notes: [],
    });
    const running = await until(() => events.find((e) => e.lastStatus === 'RUNNING'), 5);
    const ended = await until(() => events.find((e) => e.lastStatus === 'DEPROVISIONING'), 5);

    const late = Date.parse(ended.stoppedAt ?? '') - (Date.parse(running.startedAt ?? '') + 1000);
    expect(late).toBeGreaterThanOrEqual(0);
    expect(late).toBeLessThan(1_500);
    expect(engine.calls).toEqual(expect.arrayContaining(['kill SIGTERM', 'kill SIGKILL', 'remove']));
    expect(ended).toMatchObject({
      desiredStatus: 'STOPPED',
      containers: [{ name: 'job', lastStatus: 'STOPPED' }],
    });
    const manifest = JSON.parse((await objects.get('executions/ex_stuck/result.json'))?.toString() ?? '{}');
    expect(manifest).toMatchObject({ timedOut: true, partial: true });
    // Still holding what it was given: not reported gone, not STOPPED.
    expect(await backend.describe([taskId])).toEqual([
      { taskId, executionId: 'ex_stuck', lastStatus: 'RUNNING' },
    ]);
    await sleep(1_500);
    expect(events.some((e) => e.lastStatus === 'STOPPED')).toBe(false);

    engine.recover();
    await until(() => events.find((e) => e.lastStatus === 'STOPPED'), 10);
    expect(await backend.describe([taskId])).toMatchObject([{ lastStatus: 'STOPPED' }]);
  }, 30_000);
});

describe('an execution whose task ended with its resources held', () => {
  it('is TIMED_OUT at once, and keeps its capacity until the task is STOPPED', async () => {
    const { core, backend } = await buildTestCore();
    const execution = await submitJob(core, 'owner-a', {
      image: 'alpine:3',
      command: ['true'],
      timeoutSeconds: 5,
    });
    await dispatch(core, { executionId: execution.id });
    const taskArn = `task/${execution.id}`;
    await handleTaskStateChange(core, {
      taskArn,
      startedBy: execution.id,
      version: 1,
      lastStatus: 'RUNNING',
    });
    // The deadline has passed: the sweeper (or the backend) asked for the stop.
    await mutate(core.store, execution.id, (current) =>
      amend(current, new Date(), { stopRequested: { intent: 'timeout', at: new Date().toISOString() } }),
    );

    await handleTaskStateChange(core, {
      taskArn,
      startedBy: execution.id,
      version: 2,
      lastStatus: 'DEPROVISIONING',
      stopCode: 'UserInitiated',
      containers: [{ name: 'job', lastStatus: 'STOPPED' }],
    });

    expect((await core.store.get(execution.id))?.state).toBe('TIMED_OUT');
    expect(await core.ledger.holders()).toEqual([execution.id]);
    // The sweeper asks the backend, which still has the task: the capacity stays taken.
    backend.tasks.set(taskArn, 'RUNNING');
    await sweep(core);
    expect(await core.ledger.holders()).toEqual([execution.id]);

    await handleTaskStateChange(core, {
      taskArn,
      startedBy: execution.id,
      version: 3,
      lastStatus: 'STOPPED',
    });
    expect(await core.ledger.holders()).toEqual([]);
    expect((await core.store.get(execution.id))?.state).toBe('TIMED_OUT');
  });

  it('gives its capacity back at the sweep once the backend no longer has the task', async () => {
    const { core, backend } = await buildTestCore();
    const execution = await submitJob(core, 'owner-a', { image: 'alpine:3', command: ['true'] });
    await dispatch(core, { executionId: execution.id });
    const taskArn = `task/${execution.id}`;
    await handleTaskStateChange(core, {
      taskArn,
      startedBy: execution.id,
      version: 2,
      lastStatus: 'DEPROVISIONING',
      containers: [{ name: 'job', exitCode: 0 }],
    });
    expect(await core.ledger.holders()).toEqual([execution.id]);

    backend.tasks.set(taskArn, 'STOPPED');
    await sweep(core);

    expect(await core.ledger.holders()).toEqual([]);
  });
});
