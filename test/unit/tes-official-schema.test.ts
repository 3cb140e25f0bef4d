// What Ferry answers on the TES routes, checked against the official TES 1.1 schema (the
// published OpenAPI document's, kept as a fixture) in every view, with controls that prove the
// check can fail.
import { describe, expect, it } from 'vitest';
import type { Execution, ResultManifest, StreamResult } from '../../shared/domain/execution.ts';
import { parseJobSpec } from '../../shared/domain/job-spec.ts';
import { SPOT_RECLAIMED } from '../../shared/domain/task-event.ts';
import { serviceInfo, TES_VIEWS, taskOf } from '../../shared/http/tes.ts';
import { offeredExecution } from '../support/fixtures.ts';
import { expectTesShape } from '../support/tes-schema.ts';

const CREATED = '2026-03-01T10:00:00.000Z';
const STARTED = '2026-03-01T10:00:05.000Z';
const ENDED = '2026-03-01T10:01:00.000Z';

const constraints = {
  platform: 'docker' as const,
  cpu: 0.5,
  memoryMiB: 1536,
  diskGiB: 20,
  notes: ['disk is not limited on this platform'],
};

/** An execution as the store holds it: offered, then moved on to `state` with `extra`. */
function execution(state: Execution['state'], extra: Partial<Execution> = {}, spec: object = {}): Execution {
  const base = offeredExecution(`ex-${state.toLowerCase()}`, CREATED);
  return {
    ...base,
    state,
    spec: parseJobSpec({ image: 'alpine:3', command: ['sh', '-c', 'echo hi'], ...spec }),
    bid: { accepted: true, reason: 'fits', constraints },
    ...extra,
  };
}

const stream = (text: string): StreamResult => ({
  totalBytes: text.length,
  storedBytes: text.length,
  truncated: false,
  headBytes: text.length,
  tailBytes: 0,
  omittedBytes: 0,
  inline: text,
  inlineEncoding: 'utf8',
  inlineTruncated: false,
});

const manifest = (executionId: string, exitCode: number): ResultManifest => ({
  executionId,
  exitCode,
  signal: null,
  partial: false,
  startedAt: STARTED,
  endedAt: ENDED,
  stdout: stream('hi\n'),
  stderr: stream(exitCode === 0 ? '' : 'boom\n'),
  outputs: [],
  keep: 'head+tail',
});

const ran = { startedAt: STARTED, endedAt: ENDED };

const cases: { name: string; execution: Execution; manifest?: ResultManifest }[] = [
  { name: 'queued', execution: execution('QUEUED', { queuedAt: CREATED }) },
  {
    name: 'offered, with no resolved size',
    execution: { ...execution('OFFERED'), bid: { accepted: true, reason: 'ok' } },
  },
  { name: 'initializing', execution: execution('LAUNCHING', { launchedAt: STARTED }) },
  { name: 'running', execution: execution('RUNNING', { startedAt: STARTED }) },
  {
    name: 'cancelling while running',
    execution: execution('RUNNING', { startedAt: STARTED, stopRequested: { intent: 'cancel', at: ENDED } }),
  },
  {
    name: 'completed with exit code 0',
    execution: execution('COMPLETED', { ...ran, exitCode: 0 }),
    manifest: manifest('ex-completed', 0),
  },
  {
    name: 'completed with a failing exit code',
    execution: execution('COMPLETED', { ...ran, exitCode: 3 }),
    manifest: manifest('ex-completed', 3),
  },
  {
    name: 'timed out',
    execution: execution('TIMED_OUT', { ...ran, exitCode: null, reason: 'ran out of time' }),
  },
  {
    name: 'failed on the system side',
    execution: execution('FAILED', { ...ran, exitCode: null, reason: 'the task stopped: out of memory' }),
  },
  {
    name: 'preempted',
    execution: execution('FAILED', { ...ran, reason: `${SPOT_RECLAIMED} (SpotInterruption)` }),
  },
  {
    name: 'cancelled before it started',
    execution: execution('CANCELLED', { endedAt: ENDED, reason: 'cancelled' }),
  },
  { name: 'declined', execution: execution('DECLINED', { bid: { accepted: false, reason: 'too big' } }) },
  {
    name: 'with inputs, tags, a name, env and a workdir',
    execution: execution(
      'COMPLETED',
      { ...ran, exitCode: 0 },
      {
        name: 'align',
        description: 'aligns reads',
        env: { A: '1' },
        workdir: '/work',
        inputs: [
          { url: 's3://data/reads.fq', path: '/in/reads.fq' },
          { content: 'ref\n', path: '/in/ref.txt' },
          { url: 's3://data/index/', path: '/in/index', type: 'DIRECTORY' },
        ],
        labels: { run: 'r1', 'team/lab': 'alice' },
      },
    ),
    manifest: manifest('ex-completed', 0),
  },
  {
    name: 'with steps, volumes and outputs delivered to their url',
    execution: {
      ...execution('COMPLETED', { ...ran, exitCode: 0 }),
      spec: parseJobSpec({
        steps: [
          { image: 'alpine:3', command: ['make'] },
          { image: 'alpine:3', command: ['make', 'check'], ignoreError: true },
        ],
        volumes: ['/work'],
        outputs: [
          { path: '/work/report.txt', url: 'file:///srv/out/report.txt' },
          { path: '/work/tables', type: 'DIRECTORY', url: 'file:///srv/out/tables' },
          { path: '/work/kept.txt' },
        ],
      }),
    },
    manifest: {
      ...manifest('ex-completed', 0),
      steps: [
        { exitCode: 0, signal: null, startedAt: STARTED, endedAt: STARTED, stdoutFrom: 0, stderrFrom: 0 },
        { exitCode: 2, signal: null, startedAt: STARTED, endedAt: ENDED, stdoutFrom: 3, stderrFrom: 0 },
      ],
      outputs: [
        {
          name: 'report.txt',
          path: '/work/report.txt',
          type: 'FILE',
          key: 'executions/ex-completed/outputs/report.txt',
          bytes: 7,
          totalBytes: 7,
          files: 1,
          truncated: false,
          deliveredTo: 'file:///srv/out/report.txt',
        },
        {
          name: 'tables',
          path: '/work/tables',
          type: 'DIRECTORY',
          key: 'executions/ex-completed/outputs/tables/',
          bytes: 3,
          totalBytes: 3,
          files: 1,
          truncated: false,
          entries: [{ path: 'a b.csv', bytes: 3, sha256: '0'.repeat(64) }],
          deliveredTo: 'file:///srv/out/tables',
        },
      ],
    },
  },
];

describe('Ferry’s TES answers against the official TES 1.1 schema', () => {
  for (const view of TES_VIEWS) {
    it.each(cases)(`a task $name, in the ${view} view`, ({ execution, manifest }) => {
      const task = taskOf(execution, view, manifest);
      expectTesShape('tesTask', task, { view });
      // What goes over the wire is JSON: nothing may depend on undefined fields.
      expectTesShape('tesTask', JSON.parse(JSON.stringify(task)), { view });
    });

    it(`a page of tasks, in the ${view} view`, () => {
      const tasks = cases.map((c) => taskOf(c.execution, view, c.manifest));
      expectTesShape('tesListTasksResponse', { tasks, next_page_token: 'abc' }, { view });
      expectTesShape('tesListTasksResponse', { tasks: [] }, { view });
    });
  }

  it('shows the parts the BASIC view leaves out only in the FULL view', () => {
    const { execution: inputs, manifest: stored } = cases.find((c) =>
      c.name.startsWith('with inputs'),
    ) as (typeof cases)[number];
    const full = taskOf(inputs, 'FULL', stored);
    expect(JSON.stringify(full)).toContain('"content"');
    expect(JSON.stringify(full)).toContain('"stdout"');
    expect(JSON.stringify(full)).toContain('"system_logs"');
    expect(() => expectTesShape('tesTask', full, { view: 'BASIC' })).toThrow(/left out of the BASIC view/);
  });

  it('a task Ferry shows is a task as published, in the BASIC and FULL views', () => {
    for (const { execution, manifest } of cases) {
      expectTesShape('tesTask', taskOf(execution, 'FULL', manifest));
      expectTesShape('tesTask', taskOf(execution, 'BASIC', manifest));
    }
  });

  it('the create and cancel answers', () => {
    expectTesShape('tesCreateTaskResponse', { id: 'ex-01' });
    expectTesShape('tesCancelTaskResponse', {});
  });

  it('the service-info document', () => {
    for (const storage of [[], ['s3://data/', 'https://example.org/']]) {
      expectTesShape(
        'tesServiceInfo',
        serviceInfo({ version: '0.1.0', backend: 'docker', url: 'https://ferry.example.com/', storage }),
      );
    }
    expectTesShape(
      'tesServiceInfo',
      serviceInfo({ version: '0.1.0', backend: 'fargate', url: 'https://localhost:8080/', storage: [] }),
    );
  });
});

// biome-ignore lint/suspicious/noExplicitAny: the controls reach into the JSON to break it
type Json = Record<string, any>;

describe('the check fails what is not TES 1.1', () => {
  const completed = cases.find((c) => c.name === 'completed with exit code 0') as (typeof cases)[number];
  /** A FULL task as sent, with an executor log, to break. */
  const task = (): Json =>
    JSON.parse(JSON.stringify(taskOf(completed.execution, 'FULL', completed.manifest)));

  it('a state TES does not have', () => {
    expect(() => expectTesShape('tesTask', { ...task(), state: 'DONE' }, { view: 'FULL' })).toThrow(
      /\/state must be equal to one of the allowed values/,
    );
    expect(() => expectTesShape('tesTask', { id: 'x', state: 'DONE' }, { view: 'MINIMAL' })).toThrow(
      /\/state/,
    );
  });

  it('an output size as a number rather than the int64 string', () => {
    const broken = task();
    broken.logs[0].outputs = [{ url: 's3://b/o', path: '/out/o', size_bytes: 1024 }];
    expect(() => expectTesShape('tesTask', broken, { view: 'FULL' })).toThrow(
      /\/logs\/0\/outputs\/0\/size_bytes must be string/,
    );
    broken.logs[0].outputs[0].size_bytes = '1024';
    expectTesShape('tesTask', broken, { view: 'FULL' });
    broken.logs[0].outputs[0].size_bytes = '1 KiB';
    expect(() => expectTesShape('tesTask', broken, { view: 'FULL' })).toThrow(/must match format "int64"/);
  });

  it('a missing id, or missing executors outside the MINIMAL view', () => {
    const { id: _, ...noId } = task();
    for (const view of TES_VIEWS) {
      expect(() =>
        expectTesShape('tesTask', view === 'MINIMAL' ? { state: 'QUEUED' } : noId, { view }),
      ).toThrow(/must have required property 'id'/);
    }
    expect(() => expectTesShape('tesCreateTaskResponse', {})).toThrow(/must have required property 'id'/);
    const { executors: __, ...noExecutors } = task();
    expect(() => expectTesShape('tesTask', noExecutors, { view: 'BASIC' })).toThrow(/'executors'/);
    expect(() => expectTesShape('tesListTasksResponse', { tasks: [noExecutors] }, { view: 'FULL' })).toThrow(
      /\/tasks\/0 must have required property 'executors'/,
    );
  });

  it('more than id and state in the MINIMAL view', () => {
    expect(() => expectTesShape('tesListTasksResponse', { tasks: [task()] }, { view: 'MINIMAL' })).toThrow(
      /\/tasks\/0\/executors is left out of the MINIMAL view/,
    );
  });

  it('wrong types further in, each named with its place', () => {
    const broken = task();
    broken.executors[0].command = 'echo hi';
    broken.resources.cpu_cores = 0.5;
    broken.tags = { run: 1 };
    broken.logs[0].logs[0].exit_code = '0';
    let message = '';
    try {
      expectTesShape('tesTask', broken, { view: 'FULL' });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message.split('\n').slice(1)).toEqual([
      '  - /resources/cpu_cores must be integer',
      '  - /resources/cpu_cores must match format "int32"',
      '  - /executors/0/command must be array',
      '  - /tags/run must be string',
      '  - /logs/0/logs/0/exit_code must be integer',
    ]);
  });

  it('a service-info that is not TES’s, or lacks what GA4GH service-info requires', () => {
    const info = serviceInfo({ version: '1', backend: 'docker', url: 'https://x.example/', storage: [] });
    expect(() =>
      expectTesShape('tesServiceInfo', { ...info, type: { ...info.type, artifact: 'wes' } }),
    ).toThrow(/\/type\/artifact must be equal to one of the allowed values: tes/);
    const { organization: _, ...noOrganization } = info;
    expect(() => expectTesShape('tesServiceInfo', noOrganization)).toThrow(/'organization'/);
    expect(() =>
      expectTesShape('tesServiceInfo', { ...info, organization: { name: 'x', url: 'not a url' } }),
    ).toThrow(/\/organization\/url must match format "uri"/);
  });
});
