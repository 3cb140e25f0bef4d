import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { TaskStateChangeDetail } from '../../shared/domain/task-event.ts';
import { BackendError, IdempotencyConflict, StorageUnavailable } from '../../shared/errors.ts';
import { acceptBid, askForBid, submitJob } from '../../shared/use-cases/bids.ts';
import { dispatch } from '../../shared/use-cases/dispatch.ts';
import { cancelExecution } from '../../shared/use-cases/executions.ts';
import { sweep } from '../../shared/use-cases/sweep.ts';
import { handleTaskStateChange } from '../../shared/use-cases/task-events.ts';
import { buildTestCore } from '../support/core.ts';

const OWNER = 'owner-a';
const job = { image: 'alpine:3', command: ['true'], timeoutSeconds: 60 };

function event(id: string, version: number, lastStatus: string, extra: Partial<TaskStateChangeDetail> = {}) {
  return { taskArn: `task/${id}`, startedBy: id, version, lastStatus, ...extra };
}

const exited = (id: string, version: number, exitCode: number) =>
  event(id, version, 'STOPPED', {
    stopCode: 'EssentialContainerExited',
    containers: [{ name: 'job', exitCode }],
  });

describe('dispatch under at-least-once delivery', () => {
  it('launches once when the same message comes three times', async () => {
    const { core, backend } = await buildTestCore();
    const execution = await submitJob(core, OWNER, job);

    const outcomes = [];
    for (let i = 0; i < 3; i++) outcomes.push((await dispatch(core, { executionId: execution.id })).outcome);

    expect(outcomes).toEqual(['launched', 'dropped', 'dropped']);
    expect(backend.launched).toEqual([`task/${execution.id}`]);
    expect((await core.store.get(execution.id))?.state).toBe('LAUNCHING');
  });

  it('defers a job that does not fit and launches it once capacity frees', async () => {
    const { core, backend, queue } = await buildTestCore();
    const first = await submitJob(core, OWNER, { ...job, resources: { cpu: 2 } });
    const second = await submitJob(core, OWNER, { ...job, resources: { cpu: 1 } });
    await dispatch(core, { executionId: first.id });

    const deferred = await dispatch(core, { executionId: second.id });
    expect(deferred).toMatchObject({ outcome: 'deferred' });
    expect(queue.depth).toBe(3); // two accepts and the deferral

    await handleTaskStateChange(core, exited(first.id, 2, 0));
    expect((await dispatch(core, { executionId: second.id })).outcome).toBe('launched');
    expect(backend.launched).toHaveLength(2);
  });

  it('retries throttling with backoff, and fails a launch the backend refuses for good', async () => {
    const { core, backend } = await buildTestCore();
    const throttled = await submitJob(core, OWNER, job);
    backend.failures.push(new BackendError('Rate exceeded', { retryable: true }));
    expect(await dispatch(core, { executionId: throttled.id })).toMatchObject({ outcome: 'deferred' });
    expect((await core.store.get(throttled.id))?.deferrals).toBe(1);
    expect(await dispatch(core, { executionId: throttled.id })).toMatchObject({ outcome: 'launched' });

    const invalid = await submitJob(core, OWNER, job);
    backend.failures.push(new BackendError('image not found', { retryable: false }));
    await dispatch(core, { executionId: invalid.id });
    const failed = await core.store.get(invalid.id);
    expect(failed?.state).toBe('FAILED');
    expect(failed?.reason).toBe('launch failed: image not found');
  });

  it('gives each launch attempt an upload secret, keeping only its digest, written before the task starts', async () => {
    const { core, backend } = await buildTestCore();
    const execution = await submitJob(core, OWNER, job);
    const digest = (secret = '') => createHash('sha256').update(secret).digest('hex');
    const secrets = () => (backend.tickets.get(execution.id) ?? []).map((t) => t.uploadSecret);
    let recordedAtLaunch: string[] = [];
    backend.duringLaunch = async () => {
      recordedAtLaunch =
        (await core.store.get(execution.id))?.launches?.map((l) => l.uploadSecretDigest) ?? [];
    };
    backend.failures.push(new BackendError('Rate exceeded', { retryable: true }));

    await dispatch(core, { executionId: execution.id });
    await dispatch(core, { executionId: execution.id });

    expect(secrets()).toHaveLength(2);
    for (const secret of secrets()) expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(new Set(secrets()).size).toBe(2);
    const stored = await core.store.get(execution.id);
    expect(stored?.launches?.map((l) => l.uploadSecretDigest)).toEqual(secrets().map(digest));
    expect(recordedAtLaunch).toEqual(secrets().map(digest));
    for (const secret of secrets()) expect(JSON.stringify(stored)).not.toContain(secret);
  });

  it('stops a task whose execution was cancelled while the launch was in flight', async () => {
    const { core, backend } = await buildTestCore();
    const execution = await submitJob(core, OWNER, job);
    backend.duringLaunch = async () => {
      backend.duringLaunch = undefined;
      await cancelExecution(core, OWNER, execution.id);
    };

    await dispatch(core, { executionId: execution.id });

    expect(backend.stopped).toEqual([`task/${execution.id}`]);
    await handleTaskStateChange(core, event(execution.id, 3, 'STOPPED', { stopCode: 'UserInitiated' }));
    expect((await core.store.get(execution.id))?.state).toBe('CANCELLED');
  });

  it('drops the message of a job cancelled while queued', async () => {
    const { core, backend } = await buildTestCore();
    const execution = await submitJob(core, OWNER, job);
    await cancelExecution(core, OWNER, execution.id);
    expect(await dispatch(core, { executionId: execution.id })).toMatchObject({ outcome: 'dropped' });
    expect(backend.launched).toEqual([]);
  });
});

describe('one live chain of dispatch messages per job', () => {
  it('drops a message superseded by the sweeper, so copies never multiply', async () => {
    const { core, queue, now } = await buildTestCore();
    const blocker = await submitJob(core, OWNER, { ...job, resources: { cpu: 2 } });
    const waiting = await submitJob(core, OWNER, { ...job, resources: { cpu: 1 } });
    await dispatch(core, { executionId: blocker.id });
    const firstToken = (await core.store.get(waiting.id))?.dispatchToken;
    expect(await dispatch(core, { executionId: waiting.id, token: firstToken })).toMatchObject({
      outcome: 'deferred',
    });

    now.value = new Date(now.value.getTime() + 61_000);
    const report = await sweep(core);

    expect(report.requeued).toBe(1);
    const renewed = (await core.store.get(waiting.id))?.dispatchToken;
    expect(renewed).not.toBe(firstToken);
    expect(await dispatch(core, { executionId: waiting.id, token: firstToken })).toEqual({
      outcome: 'dropped',
      reason: 'superseded by a newer dispatch message',
    });
    expect(await dispatch(core, { executionId: waiting.id, token: renewed })).toMatchObject({
      outcome: 'deferred',
    });
    expect(queue.depth).toBeGreaterThan(0);
  });

  it('sends one message however often a bid is accepted', async () => {
    const { core, queue } = await buildTestCore();
    const offer = await askForBid(core, OWNER, job);
    await acceptBid(core, OWNER, offer.id);
    await acceptBid(core, OWNER, offer.id);
    expect(queue.depth).toBe(1);
  });
});

describe('task state changes', () => {
  it('ignores duplicates and out-of-order events', async () => {
    const { core } = await buildTestCore();
    const execution = await submitJob(core, OWNER, job);
    await dispatch(core, { executionId: execution.id });

    // The stop arrives first, then the (older) running event, then the stop again.
    expect(await handleTaskStateChange(core, exited(execution.id, 3, 4))).toBe('applied');
    expect(await handleTaskStateChange(core, event(execution.id, 2, 'RUNNING'))).toBe('ignored');
    expect(await handleTaskStateChange(core, exited(execution.id, 3, 4))).toBe('ignored');

    const final = await core.store.get(execution.id);
    expect(final).toMatchObject({ state: 'COMPLETED', exitCode: 4 });
    expect(final?.history.map((h) => h.state)).toEqual(['OFFERED', 'QUEUED', 'LAUNCHING', 'COMPLETED']);
  });

  it('maps out-of-memory and failed starts to FAILED with a reason', async () => {
    const { core } = await buildTestCore();
    const oom = await submitJob(core, OWNER, { ...job, resources: { memory: 512 } });
    await dispatch(core, { executionId: oom.id });
    await handleTaskStateChange(
      core,
      event(oom.id, 2, 'STOPPED', {
        containers: [
          { name: 'job', exitCode: 137, reason: 'OutOfMemoryError: Container killed due to memory usage' },
        ],
      }),
    );
    expect(await core.store.get(oom.id)).toMatchObject({
      state: 'FAILED',
      reason: 'out of memory: the job used more than its 512 MiB limit',
    });

    const unpullable = await submitJob(core, OWNER, job);
    await dispatch(core, { executionId: unpullable.id });
    await handleTaskStateChange(
      core,
      event(unpullable.id, 2, 'STOPPED', {
        stopCode: 'TaskFailedToStart',
        stoppedReason: 'CannotPullContainerError',
      }),
    );
    expect((await core.store.get(unpullable.id))?.reason).toBe(
      'the task failed to start: CannotPullContainerError',
    );

    // An operator's StopTask while the images were still being pulled: nothing ran.
    const drained = await submitJob(core, OWNER, job);
    await dispatch(core, { executionId: drained.id });
    await handleTaskStateChange(
      core,
      event(drained.id, 2, 'STOPPED', {
        stopCode: 'UserInitiated',
        stoppedReason: 'Drained for maintenance',
        containers: [{ name: 'job' }, { name: 'ferry-publisher' }],
      }),
    );
    expect(await core.store.get(drained.id)).toMatchObject({
      state: 'FAILED',
      reason: 'the task was stopped before the job ran (UserInitiated): Drained for maintenance',
    });
  });
});

describe('sweeper', () => {
  it('expires offers, times out overdue runs and fails lost tasks', async () => {
    const { core, backend, now } = await buildTestCore();
    const offer = await askForBid(core, OWNER, job);
    const overdue = await submitJob(core, OWNER, { ...job, timeoutSeconds: 5 });
    const lost = await submitJob(core, OWNER, { ...job, timeoutSeconds: 3600 });
    await dispatch(core, { executionId: overdue.id });
    await dispatch(core, { executionId: lost.id });
    await handleTaskStateChange(
      core,
      event(overdue.id, 2, 'RUNNING', { startedAt: now.value.toISOString() }),
    );
    backend.tasks.delete(`task/${lost.id}`);

    now.value = new Date(now.value.getTime() + 301_000);
    const report = await sweep(core);

    expect(report).toMatchObject({ expiredBids: 1, timedOut: 1, lostTasks: 1 });
    expect((await core.store.get(offer.id))?.state).toBe('EXPIRED');
    expect(backend.stopped).toContain(`task/${overdue.id}`);
    await handleTaskStateChange(core, event(overdue.id, 3, 'STOPPED', { stopCode: 'UserInitiated' }));
    expect((await core.store.get(overdue.id))?.state).toBe('TIMED_OUT');
    expect(await core.store.get(lost.id)).toMatchObject({
      state: 'FAILED',
      reason: 'the task disappeared from the backend without a stop event',
    });
    await expect(acceptBid(core, OWNER, offer.id)).rejects.toThrow(/EXPIRED/);
  });

  it('skips a record it cannot write and handles every other one in the same pass', async () => {
    const { core, now } = await buildTestCore();
    const offers = [];
    for (let i = 0; i < 3; i++) offers.push(await askForBid(core, OWNER, job));
    const [first, broken, last] = offers.map((o) => o.id);
    const store = core.store;
    const failing = {
      create: store.create.bind(store),
      get: store.get.bind(store),
      list: store.list.bind(store),
      countByState: store.countByState.bind(store),
      queueHead: store.queueHead.bind(store),
      queuedAhead: store.queuedAhead.bind(store),
      delete: store.delete.bind(store),
      update: async (...[next, read]: Parameters<typeof store.update>) => {
        if (next.id === broken) throw new StorageUnavailable('the data directory cannot be written');
        return store.update(next, read);
      },
    };

    now.value = new Date(now.value.getTime() + 301_000);
    const report = await sweep({ ...core, store: failing });

    expect(report).toMatchObject({ expiredBids: 2, skipped: 1 });
    expect((await store.get(first ?? ''))?.state).toBe('EXPIRED');
    expect((await store.get(last ?? ''))?.state).toBe('EXPIRED');
    expect((await store.get(broken ?? ''))?.state).toBe('OFFERED');
  });
});

describe('keyed requests', () => {
  const request = { key: 'owner-a/key-1', fingerprint: 'fp-1' };

  it('a retried submission returns the execution its first try stored, and sends no second message', async () => {
    const { core, queue } = await buildTestCore();
    const first = await submitJob(core, OWNER, job, request);
    const retried = await submitJob(core, OWNER, job, request);

    expect(retried.id).toBe(first.id);
    expect(queue.depth).toBe(1);
    await expect(submitJob(core, OWNER, job, { ...request, fingerprint: 'other' })).rejects.toBeInstanceOf(
      IdempotencyConflict,
    );
  });

  it('a retried declined submission is declined again with the same execution', async () => {
    const { core } = await buildTestCore();
    const tooBig = { ...job, resources: { cpu: 64 } };
    const first = await submitJob(core, OWNER, tooBig, request).catch((error: unknown) => error);
    const again = await submitJob(core, OWNER, tooBig, request).catch((error: unknown) => error);

    expect(first).toMatchObject({ code: 'bid-declined' });
    expect((again as { details: unknown }).details).toEqual((first as { details: unknown }).details);
    expect((await core.store.list({ owner: OWNER, limit: 10 })).items).toHaveLength(1);
  });

  it('a retried accepted submission returns its job even if a fresh bid would now decline', async () => {
    const { core, queue } = await buildTestCore();
    const first = await submitJob(core, OWNER, job, request);
    const stricter = {
      ...core,
      settings: { ...core.settings, policy: { ...core.settings.policy, imageDeny: ['*'] } },
    };
    await expect(submitJob(stricter, OWNER, job)).rejects.toMatchObject({ code: 'bid-declined' });

    const retried = await submitJob(stricter, OWNER, job, request);
    const asked = await askForBid(stricter, OWNER, job, request);

    expect(retried).toEqual(first);
    expect(asked.id).toBe(first.id);
    expect(asked.state).toBe('QUEUED');
    expect(queue.depth).toBe(1);
  });

  it('a submission whose message cannot be queued stores nothing that could run later', async () => {
    const { core, database, queue } = await buildTestCore();
    // The queue refuses the message, and the record cannot be changed afterwards either.
    database.db.exec(`
      CREATE TRIGGER refuse_message BEFORE INSERT ON queue BEGIN SELECT RAISE(ABORT, 'queue refused'); END;
      CREATE TRIGGER refuse_change BEFORE UPDATE ON executions BEGIN SELECT RAISE(ABORT, 'store refused'); END;`);

    await expect(submitJob(core, OWNER, job, request)).rejects.toThrow('queue refused');
    database.db.exec('DROP TRIGGER refuse_message; DROP TRIGGER refuse_change;');

    expect((await core.store.list({ owner: OWNER, limit: 10 })).items).toEqual([]);
    expect((await sweep(core)).requeued).toBe(0);
    expect(queue.depth).toBe(0);
    // The key is free: a retry runs the request.
    expect((await submitJob(core, OWNER, job, request)).state).toBe('QUEUED');
  });
});
