import { describe, expect, it } from 'vitest';
import { EcsBackend } from '../../shared/adapters/aws/ecs-backend.ts';
import { fargateProfile, makeBid } from '../../shared/domain/bidding.ts';
import {
  dataMounts,
  dataProblems,
  outputLocation,
  sourceAllowed,
  sourceOf,
} from '../../shared/domain/data-plan.ts';
import type { Execution } from '../../shared/domain/execution.ts';
import {
  taskDataNotes,
  taskDataPlan,
  taskDataProblems,
  taskOverrides,
} from '../../shared/domain/fargate-task.ts';
import {
  DEFAULT_OUTPUT_LIMITS,
  type JobInput,
  type JobOutput,
  parseJobSpec,
} from '../../shared/domain/job-spec.ts';
import { uploadRefusal } from '../../shared/domain/upload-links.ts';
import { ValidationError } from '../../shared/errors.ts';
import { silentLogger } from '../../shared/logger.ts';

const file = (url: string, path: string): JobInput => ({ url, path, type: 'FILE' });
const out = (path: string, name: string, type: JobOutput['type'] = 'FILE'): JobOutput => ({
  path,
  name,
  type,
});
const ALLOW = ['s3://data/in/', 'https://example.com/files/'];

describe('what a bid checks of inputs and outputs', () => {
  it('passes apart, absolute paths from allowed sources', () => {
    expect(
      dataProblems(
        {
          inputs: [
            file('s3://data/in/a.csv', '/data/a.csv'),
            { url: 's3://data/in/refs/', path: '/refs', type: 'DIRECTORY' },
            file('https://example.com/files/x', '/web/x'),
            { content: 'hello', path: '/etc/app.conf', type: 'FILE' },
          ],
          outputs: [
            out('/out/report.txt', 'report.txt'),
            out('/data/result.csv', 'result.csv'),
            out('/many', 'many', 'DIRECTORY'),
          ],
        },
        ALLOW,
      ),
    ).toEqual([]);
  });

  it('names each path that is not absolute or plain, or is reserved', () => {
    const problems = dataProblems(
      {
        inputs: [
          file('s3://data/in/a', 'data/a'),
          file('s3://data/in/b', '/data/../etc/b'),
          file('s3://data/in/c', '/proc/c'),
        ],
        outputs: [out('/', 'root', 'DIRECTORY'), out('/top.txt', 'top.txt')],
      },
      ALLOW,
    );
    expect(problems).toEqual([
      'input s3://data/in/a at data/a: the path is not absolute',
      'input s3://data/in/b at /data/../etc/b: the path must be plain: no "." or ".." parts, no "//"',
      'input s3://data/in/c at /proc/c: the path is under /proc, which Ferry or the kernel holds',
      'output /: the path is the root directory',
      'output /top.txt: a FILE output must be in a directory below /, which is made for the job to write in',
    ]);
  });

  it('names paths that overlap, and an output inside an input', () => {
    const problems = dataProblems(
      {
        inputs: [{ url: 's3://data/in/refs/', path: '/refs', type: 'DIRECTORY' }],
        outputs: [
          out('/refs/new.txt', 'new.txt'),
          out('/out', 'out', 'DIRECTORY'),
          out('/out/x.txt', 'x.txt'),
        ],
      },
      ALLOW,
    );
    expect(problems).toContain(
      'input s3://data/in/refs/ at /refs and output /refs/new.txt overlap: each path must be apart from the others',
    );
    expect(problems).toContain(
      'output /out and output /out/x.txt overlap: each path must be apart from the others',
    );
    expect(problems).toContain('output /refs/new.txt is inside input /refs, which is read-only');
  });

  it('declines sources outside the allowed prefixes, matching whole path segments', () => {
    const source = sourceOf(file('s3://data/in-private/a', '/a'));
    expect('problem' in source ? source.problem : sourceAllowed(source, ALLOW)).toBe(false);
    const host = sourceOf(file('https://example.com.evil.org/files/x', '/x'));
    expect('problem' in host ? host.problem : sourceAllowed(host, ['https://example.com'])).toBe(false);
    expect(dataProblems({ inputs: [file('s3://other/x', '/x/y')], outputs: [] }, [])).toEqual([
      'input s3://other/x is not from an allowed source; FERRY_INPUT_ALLOW allows none (only inline content)',
    ]);
    expect(
      dataProblems({ inputs: [file('http://example.com/files/x', '/x/y')], outputs: [] }, ['*']),
    ).toEqual([
      'input http://example.com/files/x: only s3://, https:// and file:// sources (or inline content) can be fetched',
    ]);
  });

  it('declines too many inputs or outputs', () => {
    const inputs = Array.from({ length: 65 }, (_, i) => ({
      content: 'x',
      path: `/in/${i}`,
      type: 'FILE' as const,
    }));
    expect(dataProblems({ inputs, outputs: [] }, [])).toEqual([
      '65 inputs asked; at most 64 are fetched for a job',
    ]);
  });
});

describe('the spec of inputs and outputs', () => {
  it('takes url or content, names outputs after their paths, and types FILE by default', () => {
    const spec = parseJobSpec({
      image: 'alpine:3',
      command: ['true'],
      inputs: [
        { url: 's3://b/k', path: '/in/k' },
        { content: 'hi', path: '/in/c' },
      ],
      outputs: [{ path: '/a/out.txt' }, { path: '/b/out.txt' }, { path: '/c/report', type: 'DIRECTORY' }],
    });
    expect(spec.inputs).toEqual([
      { url: 's3://b/k', path: '/in/k', type: 'FILE' },
      { content: 'hi', path: '/in/c', type: 'FILE' },
    ]);
    expect(spec.outputs.map((o) => o.name)).toEqual(['a_out.txt', 'b_out.txt', 'report']);
  });

  it('refuses an input with both url and content, or neither', () => {
    for (const input of [{ url: 's3://b/k', content: 'x', path: '/a' }, { path: '/a' }]) {
      expect(() => parseJobSpec({ image: 'alpine:3', command: ['true'], inputs: [input] })).toThrow(
        /inputs\.0: give either url or content/,
      );
    }
    expect(() =>
      parseJobSpec({ image: 'alpine:3', command: ['true'], inputs: [{ url: 'nope', path: '/a' }] }),
    ).toThrow(ValidationError);
  });
});

describe('where a job’s data is mounted', () => {
  it('mounts each input, each directory output and each FILE output’s directory once, outermost first', () => {
    const spec = {
      inputs: [file('s3://data/in/a', '/data/sub/a.csv')],
      outputs: [
        out('/data/r1.txt', 'r1'),
        out('/data/r2.txt', 'r2'),
        out('/results', 'results', 'DIRECTORY'),
      ],
    };
    expect(dataMounts(spec)).toEqual([
      { kind: 'outputs', index: 0, containerPath: '/data' },
      { kind: 'outputs', index: 1, containerPath: '/results' },
      { kind: 'input', index: 0, containerPath: '/data/sub/a.csv', type: 'FILE' },
    ]);
    expect(outputLocation(spec, out('/data/r2.txt', 'r2'))).toEqual({ mount: 0, relative: 'r2.txt' });
    expect(outputLocation(spec, out('/results', 'results', 'DIRECTORY'))).toEqual({ mount: 1, relative: '' });
  });
});

describe('a bid on inputs', () => {
  const policy = {
    imageAllow: ['*'],
    imageDeny: [],
    registryAllow: ['docker.io'],
    publishAllow: [],
    inputAllow: ['s3://data/'],
    minTimeoutSeconds: 1,
    maxTimeoutSeconds: 3600,
    allowEgress: true,
    maxOutputBytes: 1024 ** 3,
  };
  const profile = {
    platform: 'docker' as const,
    maxCpu: 4,
    maxMemoryMiB: 8192,
    supportsGpu: false,
    supportsInputs: true,
    supportsOutputs: true,
    supportsPublish: true,
    maxSteps: 16,
    supportsVolumes: true,
    enforcesNetworkNone: true,
  };
  const bidOn = (spec: object, inputSizes: object[]) =>
    makeBid({
      spec: parseJobSpec({ image: 'alpine:3', command: ['true'], ...spec }),
      policy,
      profile,
      facts: { presentImages: new Set(['alpine:3']), inputSizes },
      expiresAt: '2030-01-01T00:00:00.000Z',
      queueEstimate: () => ({ waitSeconds: 0, runningJobs: 0, queuedJobs: 0 }),
    });

  it('declines inputs larger than the disk the job gets, naming the large ones', () => {
    const bid = bidOn({ inputs: [{ url: 's3://data/huge.bin', path: '/in/huge.bin' }] }, [
      { bytes: 25 * 1024 ** 3 },
    ]);
    expect(bid.accepted).toBe(false);
    expect(bid.reason).toBe(
      'inputs take 25 GiB (s3://data/huge.bin 25 GiB); the job gets 20 GiB of disk (ask for more with resources.disk)',
    );
    expect(
      bidOn({ inputs: [{ url: 's3://data/huge.bin', path: '/in/huge.bin' }], resources: { disk: 30 } }, [
        { bytes: 25 * 1024 ** 3 },
      ]).accepted,
    ).toBe(true);
  });

  it('accepts an input not there yet, saying the job fails then if it is still missing', () => {
    const bid = bidOn({ inputs: [{ url: 's3://data/later.csv', path: '/in/later.csv' }] }, [
      { missing: true },
    ]);
    expect(bid.accepted).toBe(true);
    expect(bid.constraints?.notes).toContain(
      'input s3://data/later.csv is not there now; the job fails before it runs if it is still missing then',
    );
  });
});

describe('a job’s data in a Fargate task', () => {
  it('makes a volume per directory, outermost first, with mount points for the volumes inside', () => {
    const spec = {
      inputs: [
        file('s3://data/in/a', '/data/a.csv'),
        file('s3://data/in/b', '/data/b.csv'),
        { url: 's3://data/in/refs/', path: '/data/refs', type: 'DIRECTORY' as const },
      ],
      outputs: [out('/work/out/report.txt', 'report'), out('/data/out', 'out', 'DIRECTORY')],
    };
    const plan = taskDataPlan(spec);
    expect(plan.volumes).toEqual([
      { name: 'data-0', containerPath: '/data', writable: false, mountPoints: ['out', 'refs'] },
      { name: 'data-1', containerPath: '/data/out', writable: true, mountPoints: [] },
      { name: 'data-2', containerPath: '/data/refs', writable: false, mountPoints: [] },
      { name: 'data-3', containerPath: '/work/out', writable: true, mountPoints: [] },
    ]);
    expect(plan.inputs).toEqual([
      { volume: 0, relative: 'a.csv' },
      { volume: 0, relative: 'b.csv' },
      { volume: 2, relative: '' },
    ]);
    expect(plan.outputs).toEqual([
      { volume: 3, relative: 'report.txt' },
      { volume: 1, relative: '' },
    ]);
    expect(taskDataProblems(spec)).toEqual([]);
  });

  it('makes a directory holding inputs and outputs writable, and says so', () => {
    const spec = { inputs: [file('s3://data/in/a', '/io/a.csv')], outputs: [out('/io/b.csv', 'b')] };
    expect(taskDataPlan(spec).volumes).toEqual([
      { name: 'data-0', containerPath: '/io', writable: true, mountPoints: [] },
    ]);
    // Each once: the Fargate checks run a single time in a bid.
    const bid = makeBid({
      spec: parseJobSpec({
        image: 'alpine:3',
        command: ['true'],
        inputs: [{ content: 'x', path: '/io/a.csv' }],
        outputs: [{ path: '/io/b.csv' }],
      }),
      policy: {
        imageAllow: ['*'],
        imageDeny: [],
        registryAllow: ['docker.io'],
        publishAllow: [],
        inputAllow: [],
        minTimeoutSeconds: 1,
        maxTimeoutSeconds: 3600,
        allowEgress: true,
        maxOutputBytes: 1024 ** 3,
      },
      profile: fargateProfile(false),
      facts: { presentImages: new Set(['alpine:3']) },
      expiresAt: '2030-01-01T00:00:00.000Z',
      queueEstimate: () => ({ waitSeconds: 0, runningJobs: 0, queuedJobs: 0 }),
    });
    expect(bid.constraints?.notes.filter((note) => note.includes('/io'))).toEqual(taskDataNotes(spec));
    expect(taskDataNotes(spec)).toEqual([
      'on Fargate the directory of a FILE input or output is a volume of its own: what the image has in /io is hidden',
      '/io holds inputs and outputs: on Fargate it is writable, its inputs read-only files',
    ]);
  });

  it('declines a volume that would hide what the image needs to run', () => {
    expect(
      taskDataProblems({
        inputs: [file('s3://data/in/a', '/etc/app.conf'), file('s3://data/in/b', '/b')],
        outputs: [],
      }),
    ).toEqual([
      '/ would be a volume of its own on Fargate (it holds input /b), hiding what the image has there; put the data in a directory of its own',
      '/etc would be a volume of its own on Fargate (it holds input /etc/app.conf), hiding what the image has there; put the data in a directory of its own',
    ]);
  });

  it('tells the stage container and the publisher where each input and output is', () => {
    const spec = {
      inputs: [{ content: 'hello', path: '/in/greeting.txt', type: 'FILE' as const }],
      outputs: [out('/out', 'out', 'DIRECTORY')],
    };
    const overrides = taskOverrides(
      {
        ...spec,
        image: 'alpine:3.20',
        command: ['true'],
        env: {},
        timeoutSeconds: 60,
        outputLimits: DEFAULT_OUTPUT_LIMITS,
      },
      'ex_1',
      { cpu: '256', memory: '512', ephemeralStorageGiB: 20 },
      'secret',
    );
    const env = (name: string) =>
      Object.fromEntries(
        (overrides.containerOverrides.find((c) => c.name === name)?.environment ?? []).map((e) => [
          e.name,
          e.value,
        ]),
      );
    expect(JSON.parse(env('ferry-stage').FERRY_STAGE ?? '')).toEqual({
      diskBytes: 20 * 1024 ** 3,
      volumes: [
        { writable: false, mountPoints: [] },
        { writable: true, mountPoints: [] },
      ],
      inputs: [
        { content: 'hello', path: '/in/greeting.txt', type: 'FILE', volume: 0, relative: 'greeting.txt' },
      ],
    });
    expect(JSON.parse(env('ferry-publisher').FERRY_OUTPUTS ?? '')).toEqual([
      { name: 'out', path: '/out', type: 'DIRECTORY', volume: 1, relative: '' },
    ]);
  });

  it('lets a publisher write the files under a DIRECTORY output, and nothing beside its outputs', () => {
    const execution = {
      id: 'ex_1',
      spec: { outputs: [out('/out', 'plots', 'DIRECTORY'), out('/r/report.txt', 'report')] },
    } as unknown as Execution;
    const put = (key: string) => uploadRefusal(execution, { action: 'put', key, contentType: 'text/plain' });
    expect(put('executions/ex_1/outputs/plots/a/b.png')).toBeUndefined();
    expect(put('executions/ex_1/outputs/report')).toBeUndefined();
    expect(put('executions/ex_1/outputs/plots')).toMatch(/not a key the publisher writes/);
    expect(put('executions/ex_1/outputs/plots/')).toMatch(/not a key the publisher writes/);
    expect(put('executions/ex_1/outputs/report/x')).toMatch(/not a key the publisher writes/);
    expect(put('executions/ex_1/outputs/other')).toMatch(/outputs\/plots\/…, outputs\/report$/);
  });
});

describe('a Fargate task of steps', () => {
  const spec = parseJobSpec({
    steps: [
      { image: 'alpine:3.20', command: ['make', 'all'], env: { STAGE: 'build' }, workdir: '/work' },
      { image: 'busybox:1.36', command: ['false'], ignoreError: true },
      { image: 'alpine:3.20', command: ['sh', '-c', 'cp /work/a /out/a'] },
    ],
    volumes: ['/work'],
    outputs: [{ path: '/out/a' }],
    timeoutSeconds: 90,
  });
  const backend = new EcsBackend({
    cluster: 'ferry',
    runnerImage: 'runner:1',
    bucket: 'results',
    subnets: ['subnet-1'],
    securityGroups: [],
    assignPublicIp: false,
    executionRoleArn: 'arn:aws:iam::123456789012:role/e',
    taskRoleArn: 'arn:aws:iam::123456789012:role/t',
    logGroup: '/ferry',
    region: 'us-east-1',
    capacityProvider: 'FARGATE',
    log: silentLogger,
  });

  it('chains a container per step after the one before, in one definition keyed by the steps', () => {
    const definition = backend.taskDefinitionFor(spec.image, spec);
    const byName = new Map(definition.containerDefinitions?.map((c) => [c.name, c]));
    expect(byName.get('ferry-init')?.command).toEqual(['--init', '/ferry', '3']);
    expect([...byName.keys()]).toEqual([
      'ferry-init',
      'ferry-stage',
      'job',
      'job-step2',
      'job-step3',
      'ferry-publisher',
    ]);
    expect(byName.get('job')?.dependsOn).toEqual([
      { containerName: 'ferry-init', condition: 'SUCCESS' },
      { containerName: 'ferry-stage', condition: 'SUCCESS' },
    ]);
    // After a step whose failure is ignored, the next one waits only for it to end.
    expect(byName.get('job-step2')).toMatchObject({
      image: 'busybox:1.36',
      dependsOn: [{ containerName: 'job', condition: 'SUCCESS' }],
    });
    expect(byName.get('job-step3')?.dependsOn).toEqual([
      { containerName: 'job-step2', condition: 'COMPLETE' },
    ]);
    // Every step sees the volume, writable, at its own path.
    for (const name of ['job', 'job-step2', 'job-step3']) {
      expect(byName.get(name)?.mountPoints).toContainEqual({
        sourceVolume: 'data-1',
        containerPath: '/work',
        readOnly: false,
      });
    }
    // Other images in the steps, or another step's failure ignored, is another definition;
    // other commands are the same one.
    const variant = (steps: (object | undefined)[]) =>
      parseJobSpec({ steps, volumes: spec.volumes, outputs: [{ path: '/out/a' }] });
    const [a, b, c] = spec.steps ?? [];
    const family = (s: ReturnType<typeof variant>) => backend.taskDefinitionFor(s.image, s).family;
    expect(family(variant([{ ...a, command: ['other'] }, b, c]))).toBe(definition.family);
    expect(family(variant([{ ...a, ignoreError: true }, { ...b, ignoreError: false }, c]))).not.toBe(
      definition.family,
    );
    expect(family(variant([{ ...a, image: 'busybox:1.36' }, b, c]))).not.toBe(definition.family);
    const swapped = parseJobSpec({
      steps: [...(spec.steps ?? [])].reverse(),
      volumes: spec.volumes,
      outputs: [{ path: '/out/a' }],
    });
    expect(backend.taskDefinitionFor(swapped.image, swapped).family).toBe(definition.family);
    expect(backend.taskDefinitionFor(spec.image, spec).family).toBe(definition.family);
  });

  it('gives each step its argv, env and io directory, the time to share, and the publisher the steps', () => {
    const overrides = taskOverrides(
      spec,
      'ex_1',
      { cpu: '256', memory: '512', ephemeralStorageGiB: 20 },
      'secret',
    );
    const byName = new Map(overrides.containerOverrides.map((c) => [c.name, c]));
    expect(byName.get('job')).toEqual({
      name: 'job',
      command: [
        '--io',
        '/ferry/io',
        '--timeout',
        '90',
        '--timeout-from',
        '/ferry/io/started',
        '--workdir',
        '/work',
        '--',
        'make',
        'all',
      ],
      environment: [{ name: 'STAGE', value: 'build' }],
    });
    expect(byName.get('job-step2')?.command).toEqual([
      '--io',
      '/ferry/io/step-2',
      '--timeout',
      '90',
      '--timeout-from',
      '/ferry/io/started',
      '--',
      'false',
    ]);
    expect(byName.get('job-step3')?.command?.slice(0, 2)).toEqual(['--io', '/ferry/io/step-3']);
    const publisher = Object.fromEntries(
      byName.get('ferry-publisher')?.environment.map((e) => [e.name, e.value]) ?? [],
    );
    expect(JSON.parse(publisher.FERRY_STEPS ?? '')).toEqual([
      { ignoreError: false },
      { ignoreError: true },
      { ignoreError: false },
    ]);
    // The volume is one of the data volumes the stage container opens to the job.
    const stage = Object.fromEntries(
      byName.get('ferry-stage')?.environment.map((e) => [e.name, e.value]) ?? [],
    );
    expect(JSON.parse(stage.FERRY_STAGE ?? '').volumes).toEqual([
      { writable: true, mountPoints: [] },
      { writable: true, mountPoints: [] },
    ]);
    // A plain job keeps its single container's arguments, and the publisher hears of no steps.
    const plain = taskOverrides(
      parseJobSpec({ image: 'alpine:3.20', command: ['true'] }),
      'ex_1',
      { cpu: '256', memory: '512', ephemeralStorageGiB: 20 },
      'secret',
    );
    expect(plain.containerOverrides[0]?.command).toEqual([
      '--io',
      '/ferry/io',
      '--timeout',
      '3600',
      '--',
      'true',
    ]);
    expect(JSON.stringify(plain)).not.toContain('FERRY_STEPS');
  });
});

describe('file:// sources', () => {
  it('name a path on Ferry’s machine, allowed only by a file:// prefix, never by *', () => {
    expect(sourceOf({ url: 'file:///srv/data/a%20b.csv', path: '/in/a', type: 'FILE' })).toEqual({
      kind: 'file',
      path: '/srv/data/a b.csv',
    });
    expect(sourceOf({ url: 'file://otherhost/srv/a', path: '/in/a', type: 'FILE' })).toEqual({
      problem: "input file://otherhost/srv/a: a file URL names a path on Ferry's own machine, file:///path",
    });
    const at = (path: string) => ({ kind: 'file' as const, path });
    expect(sourceAllowed(at('/srv/data/a.csv'), ['file:///srv/data/'])).toBe(true);
    expect(sourceAllowed(at('/srv/data-private/a.csv'), ['file:///srv/data'])).toBe(false);
    expect(sourceAllowed(at('/srv/data/a.csv'), ['*'])).toBe(false);
    // A URL's ".." parts are resolved before any check.
    const dotted = sourceOf({ url: 'file:///srv/data/../../etc/passwd', path: '/in/p', type: 'FILE' });
    expect(dotted).toEqual(at('/etc/passwd'));
  });

  it('are declined on Fargate, whose tasks cannot read the server’s machine', () => {
    expect(
      taskDataProblems({
        inputs: [{ url: 'file:///srv/a.csv', path: '/in/a.csv', type: 'FILE' }],
        outputs: [],
      }),
    ).toEqual([
      'input file:///srv/a.csv: a file:// source is on the machine Ferry runs on; a Fargate task cannot read it',
    ]);
  });
});
