// The TES 1.1 mapping: task documents to job specs, executions to TES states and views.
import { describe, expect, it } from 'vitest';
import { EXECUTION_STATES } from '../../shared/domain/states.ts';
import { ValidationError } from '../../shared/errors.ts';
import { ferryStatesOf, jobOfTask, TES_STATES, TesTaskSchema, tesStateOf } from '../../shared/http/tes.ts';

const settings = { maxTimeoutSeconds: 86_400, allowEgress: true };
const task = (extra: object = {}) =>
  TesTaskSchema.parse({ executors: [{ image: 'alpine:3', command: ['echo', 'hi'] }], ...extra });

describe('a TES task as a Ferry job', () => {
  it('takes the executor, resources in decimal gigabytes, tags as labels and inline content over url', () => {
    const { spec, warnings } = jobOfTask(
      task({
        name: 'align',
        description: 'aligns reads',
        executors: [{ image: 'alpine:3', command: ['sh', '-c', 'x'], env: { A: '1' }, workdir: '/w' }],
        resources: { cpu_cores: 2, ram_gb: 4, disk_gb: 30, zones: ['eu-west-1a'] },
        inputs: [
          { path: '/in/a.txt', content: 'text', url: 's3://ignored/x' },
          { path: '/in/b', url: 's3://data/b/', type: 'DIRECTORY' },
        ],
        tags: { run: 'r1' },
        id: 'set-by-the-server',
        state: 'COMPLETE',
      }),
      settings,
    );
    expect(spec).toEqual({
      name: 'align',
      description: 'aligns reads',
      image: 'alpine:3',
      command: ['sh', '-c', 'x'],
      env: { A: '1' },
      workdir: '/w',
      // 4 GB is 3,815 MiB; 30 GB is 28 GiB (rounded up).
      resources: { cpu: 2, memory: 3815, disk: 28 },
      timeoutSeconds: 86_400,
      network: 'egress',
      inputs: [
        { content: 'text', path: '/in/a.txt', type: 'FILE' },
        { url: 's3://data/b/', path: '/in/b', type: 'DIRECTORY' },
      ],
      labels: { run: 'r1' },
    });
    expect(warnings).toEqual(['resources.zones: ignored; Ferry places tasks itself']);
    expect(jobOfTask(task(), { ...settings, allowEgress: false }).spec.network).toBe('none');
  });

  it('makes several executors the job’s steps, volumes its volumes and outputs with a url delivered ones', () => {
    const { spec } = jobOfTask(
      TesTaskSchema.parse({
        executors: [
          { image: 'a:1', command: ['make'], workdir: '/src', env: { A: '1' } },
          { image: 'b:1', command: ['check'], ignore_error: true },
        ],
        volumes: ['/shared'],
        outputs: [{ path: '/shared/report.txt', url: 'file:///srv/out/report.txt' }],
      }),
      settings,
    );
    expect(spec).toMatchObject({
      steps: [
        { image: 'a:1', command: ['make'], workdir: '/src', env: { A: '1' } },
        { image: 'b:1', command: ['check'], ignoreError: true },
      ],
      volumes: ['/shared'],
      outputs: [{ path: '/shared/report.txt', type: 'FILE', url: 'file:///srv/out/report.txt' }],
    });
    expect(spec.image).toBeUndefined();
    // One executor whose failure is ignored is a step too; one plain executor is the job itself.
    const ignoring = jobOfTask(
      task({ executors: [{ image: 'a:1', command: ['x'], ignore_error: true }] }),
      settings,
    );
    expect(ignoring.spec.steps).toEqual([{ image: 'a:1', command: ['x'], ignoreError: true }]);
    expect(jobOfTask(task(), settings).spec.steps).toBeUndefined();
  });

  it('refuses what Ferry cannot do yet, naming each field', () => {
    const refused = (extra: object) => {
      try {
        jobOfTask(task(extra), settings);
      } catch (error) {
        if (error instanceof ValidationError) return error.problems.map((p) => p.field);
        throw error;
      }
      return [];
    };
    expect(
      refused({
        executors: [
          { image: 'a:1', command: ['x'], stdout: '/tmp/out' },
          { image: 'b:1', command: ['y'], stdin: '/in/x' },
        ],
        outputs: [{ path: '/out', url: 'file:///srv/out', path_prefix: '/out/' }],
        resources: { backend_parameters: { queue: 'q' }, backend_parameters_strict: true },
        tags: { 'not ok': 'v' },
      }),
    ).toEqual([
      'executors.0.stdout',
      'executors.1.stdin',
      'outputs.0.path_prefix',
      'resources.backend_parameters',
      'tags.not ok',
    ]);
    expect(
      refused({ executors: Array.from({ length: 17 }, () => ({ image: 'a:1', command: ['x'] })) }),
    ).toEqual(['executors']);
    expect(refused({ resources: { backend_parameters: { queue: 'q' } } })).toEqual([]);
    expect(() => TesTaskSchema.parse({ executors: [] })).toThrow(/at least one executor/);
    expect(() => TesTaskSchema.parse({ executors: [{ image: 'a', command: ['x'] }], extra: 1 })).toThrow();
  });
});

describe('TES states', () => {
  const execution = (state: (typeof EXECUTION_STATES)[number], extra: object = {}) => ({
    state,
    exitCode: null,
    ...extra,
  });

  it('maps every Ferry state, and an exit code, a Spot reclaim or a cancel in progress', () => {
    expect(tesStateOf(execution('QUEUED'))).toBe('QUEUED');
    expect(tesStateOf(execution('LAUNCHING'))).toBe('INITIALIZING');
    expect(tesStateOf(execution('RUNNING'))).toBe('RUNNING');
    expect(tesStateOf(execution('RUNNING', { stopRequested: { intent: 'cancel', at: 'x' } }))).toBe(
      'CANCELING',
    );
    expect(tesStateOf(execution('RUNNING', { stopRequested: { intent: 'timeout', at: 'x' } }))).toBe(
      'RUNNING',
    );
    expect(tesStateOf(execution('COMPLETED', { exitCode: 0 }))).toBe('COMPLETE');
    expect(tesStateOf(execution('COMPLETED', { exitCode: 2 }))).toBe('EXECUTOR_ERROR');
    expect(tesStateOf(execution('TIMED_OUT'))).toBe('EXECUTOR_ERROR');
    expect(tesStateOf(execution('FAILED', { reason: 'out of memory' }))).toBe('SYSTEM_ERROR');
    expect(
      tesStateOf(
        execution('FAILED', { reason: 'the Fargate Spot capacity was reclaimed (SpotInterruption): gone' }),
      ),
    ).toBe('PREEMPTED');
    expect(tesStateOf(execution('CANCELLED'))).toBe('CANCELED');
    expect(tesStateOf(execution('DECLINED'))).toBe('SYSTEM_ERROR');
  });

  it('lists, for each TES state, every Ferry state that can show as it', () => {
    const samples = EXECUTION_STATES.flatMap((state) => [
      execution(state),
      execution(state, { exitCode: 0 }),
      execution(state, { exitCode: 1 }),
      execution(state, { stopRequested: { intent: 'cancel', at: 'x' } }),
      execution(state, { reason: 'the Fargate Spot capacity was reclaimed (SpotInterruption)' }),
    ]);
    for (const tes of TES_STATES) {
      const expected = new Set(samples.filter((s) => tesStateOf(s) === tes).map((s) => s.state));
      for (const state of expected) expect(ferryStatesOf(tes), tes).toContain(state);
    }
  });
});
