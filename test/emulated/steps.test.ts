// Jobs with steps on AWS end to end: the synthesized stack on the emulator, each step its own
// container in one Fargate task, started once the step before it has ended (successfully, or
// at all after a step whose failure is ignored). The publisher reads each step's output in
// turn into one pair of streams and records how each step ended; volumes are task volumes the
// steps share. Every AWS call is checked against the template's policies.
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Execution, ResultManifest } from '../../shared/domain/execution.ts';
import { describeDenials, type Harness, startHarness } from '../support/emulated-aws.ts';

if (!inject('dockerAvailable') && process.env.CI === 'true') {
  throw new Error('CI=true but no Docker Engine: the emulated deployment cannot run tasks');
}

const image = inject('testImage');

let h: Harness;
let callsBefore = 0;

beforeAll(async () => {
  h = await startHarness();
  callsBefore = h.deployment.calls.length;
}, 180_000);
afterAll(async () => {
  await h?.close();
});
afterEach(async () => {
  await h.expectLedgerEmpty();
  const denied = h.denied(callsBefore);
  callsBefore = h.deployment.calls.length;
  expect(denied, describeDenials(denied)).toEqual([]);
});

const sh = (script: string, extra: object = {}) => ({ image, command: ['sh', '-c', script], ...extra });
const manifestOf = async (id: string) =>
  (await h.client.json<{ manifest: ResultManifest }>('GET', `/v1/executions/${id}/result`)).body.manifest;
const streamOf = async (id: string, stream: 'stdout' | 'stderr') =>
  (await h.client.bytes(`/v1/executions/${id}/logs?stream=${stream}`)).body.toString();

describe.skipIf(!inject('dockerAvailable'))('steps in one Fargate task', () => {
  it('runs the steps in order, sharing a volume, each with its own env and working directory', async () => {
    const submitted = await h.submit({
      steps: [
        sh('echo "made by $WHO" > /work/note.txt; pwd; echo first', {
          env: { WHO: 'step one' },
          workdir: '/work/one',
        }),
        sh('cat /work/note.txt; pwd; echo second >&2; tr a-z A-Z < /work/note.txt > /out/result.txt', {
          env: { WHO: 'step two' },
          workdir: '/tmp',
        }),
      ],
      volumes: ['/work'],
      outputs: [{ path: '/out/result.txt' }],
    });
    expect(submitted.state, submitted.reason).not.toBe('DECLINED');
    const done = await h.waitFor(submitted.id, undefined, 120_000);
    expect(done.state, done.reason).toBe('COMPLETED');
    expect(done.exitCode).toBe(0);
    const stdout = await streamOf(done.id, 'stdout');
    expect(stdout).toBe('/work/one\nfirst\nmade by step one\n/tmp\n');
    expect(await streamOf(done.id, 'stderr')).toBe('second\n');

    const manifest = await manifestOf(done.id);
    expect(manifest.steps?.map((s) => [s.exitCode, s.stdoutFrom, s.stderrFrom])).toEqual([
      [0, 0, 0],
      [0, '/work/one\nfirst\n'.length, 0],
    ]);
    for (const step of manifest.steps ?? []) {
      expect(Date.parse(step.startedAt ?? '')).toBeLessThanOrEqual(Date.parse(step.endedAt));
    }
    expect(Date.parse(manifest.steps?.[1]?.startedAt ?? '')).toBeGreaterThanOrEqual(
      Date.parse(manifest.steps?.[0]?.endedAt ?? '') - 1000,
    );
    expect(manifest.outputs.find((o) => o.name === 'result.txt')).toMatchObject({
      bytes: 'MADE BY STEP ONE\n'.length,
      truncated: false,
    });
    expect(manifest.partial).toBe(false);
  });

  it('stops at the first failure that is not ignored, and goes on past one that is', async () => {
    const failing = await h.submit({
      steps: [sh('echo one'), sh('echo two; exit 3'), sh('echo never')],
    });
    const missing = await h.submit({
      steps: [sh('echo one'), { image, command: ['no-such-program'] }, sh('echo never')],
    });
    const ignoring = await h.submit({
      steps: [sh('echo one; exit 4', { ignoreError: true }), sh('echo two')],
    });
    // The job ran and ended with the failing step's exit code, as a one-step job would.
    const failed = await h.waitFor(failing.id, undefined, 120_000);
    expect(failed.state, failed.reason).toBe('COMPLETED');
    expect(failed.exitCode).toBe(3);
    expect(await streamOf(failed.id, 'stdout')).toBe('one\ntwo\n');
    expect((await manifestOf(failed.id)).steps?.map((s) => s.exitCode)).toEqual([0, 3]);

    const went = await h.waitFor(ignoring.id, undefined, 120_000);
    expect(went.state, went.reason).toBe('COMPLETED');
    expect(went.exitCode).toBe(0);
    expect(await streamOf(went.id, 'stdout')).toBe('one\ntwo\n');
    expect((await manifestOf(went.id)).steps?.map((s) => s.exitCode)).toEqual([4, 0]);

    // A later step whose program is not there fails with 127, and says why.
    const notFound = await h.waitFor(missing.id, undefined, 120_000);
    expect(notFound).toMatchObject({ state: 'COMPLETED', exitCode: 127 });
    expect(await streamOf(notFound.id, 'stdout')).toBe('one\n');
    expect(await streamOf(notFound.id, 'stderr')).toMatch(/cannot run no-such-program/);
    const steps = (await manifestOf(notFound.id)).steps;
    expect(steps?.map((s) => s.exitCode)).toEqual([0, 127]);
    expect(steps?.[1]?.startError).toMatch(/cannot run no-such-program/);
  });

  it('counts the timeout from the first step and starts no step after it', async () => {
    const submitted = await h.submit({
      timeoutSeconds: 4,
      steps: [sh('sleep 2; echo one'), sh('echo two; sleep 30; echo late'), sh('echo never')],
    });
    const done = await h.waitFor(submitted.id, undefined, 120_000);
    expect(done.state, done.reason).toBe('TIMED_OUT');
    expect(await streamOf(done.id, 'stdout')).toBe('one\ntwo\n');
    const manifest = await manifestOf(done.id);
    expect(manifest.timedOut).toBe(true);
    expect(manifest.steps?.map((s) => [s.exitCode, s.signal])).toEqual([
      [0, null],
      [143, 'SIGTERM'],
    ]);
    // Step two had what step one left of the 4 s, not 4 s of its own.
    const second = manifest.steps?.[1];
    const ran = Date.parse(second?.endedAt ?? '') - Date.parse(second?.startedAt ?? '');
    expect(ran).toBeLessThan(3500);
  });

  it('cancels the step that is running, and no later step starts', async () => {
    const submitted = await h.submit({
      steps: [sh('echo one'), sh('echo two; sleep 60'), sh('echo never')],
    });
    const deadline = Date.now() + 120_000;
    while (!(await streamOf(submitted.id, 'stdout').catch(() => '')).includes('two')) {
      if (Date.now() > deadline)
        throw new Error(`step two never printed: ${JSON.stringify(await h.get(submitted.id))}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    await h.client.json<Execution>('POST', `/v1/executions/${submitted.id}/cancel`);
    const done = await h.waitFor(submitted.id, undefined, 120_000);
    expect(done.state, done.reason).toBe('CANCELLED');
    expect(await streamOf(done.id, 'stdout')).toBe('one\ntwo\n');
    const manifest = await manifestOf(done.id);
    expect(manifest.steps?.length).toBe(2);
    expect(manifest.steps?.[1]?.signal).toBe('SIGTERM');
  });

  it('runs a TES task of two executors as one task, one executor log each', async () => {
    const created = await h.client.json<{ id: string }>('POST', '/ga4gh/tes/v1/tasks', {
      name: 'two executors',
      executors: [
        { image, command: ['sh', '-c', 'echo shared > /data/file; echo wrote'] },
        { image, command: ['sh', '-c', 'cat /data/file'] },
      ],
      volumes: ['/data'],
    });
    expect(created.status).toBe(200);
    const id = created.body.id;
    await h.waitFor(id, undefined, 120_000);
    const task = (
      await h.client.json<{
        state: string;
        logs: { logs: { exit_code: number; stdout: string }[] }[];
      }>('GET', `/ga4gh/tes/v1/tasks/${id}?view=FULL`)
    ).body;
    expect(task.state).toBe('COMPLETE');
    expect(task.logs[0]?.logs.map((log) => [log.exit_code, log.stdout])).toEqual([
      [0, 'wrote\n'],
      [0, 'shared\n'],
    ]);
  });
});
