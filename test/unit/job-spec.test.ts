import { describe, expect, it } from 'vitest';
import { imagesOf, parseJobSpec, stepsOf } from '../../shared/domain/job-spec.ts';
import { jobExitOf, stepLetsNextRun } from '../../shared/domain/steps.ts';
import { formatBytes, parseSize } from '../../shared/domain/units.ts';
import { ValidationError } from '../../shared/errors.ts';

const fail = (): never => {
  throw new Error('no such step');
};

function problemsOf(input: unknown): { field: string; message: string }[] {
  try {
    parseJobSpec(input);
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    return [...(error as ValidationError).problems];
  }
  throw new Error('expected the spec to be refused');
}

describe('job spec', () => {
  it('applies defaults to a minimal spec', () => {
    const spec = parseJobSpec({ image: 'alpine:3.20', command: ['echo', 'hi'] });
    expect(spec).toMatchObject({
      image: 'alpine:3.20',
      command: ['echo', 'hi'],
      env: {},
      timeoutSeconds: 3600,
      network: 'none',
      resources: { gpu: 0 },
      outputLimits: {
        stdoutBytes: 10 * 1024 * 1024,
        stderrBytes: 10 * 1024 * 1024,
        inlineBytes: 4096,
        keep: 'head+tail',
      },
      priority: 0,
    });
  });

  it('reads sizes as numbers or with units', () => {
    const spec = parseJobSpec({
      image: 'alpine',
      command: ['true'],
      resources: { cpu: 0.5, memory: '1.5GiB', disk: 40 },
      outputLimits: { stdoutBytes: '1MiB', stderrBytes: 2048, inlineBytes: '1KiB', keep: 'tail' },
    });
    expect(spec.resources).toEqual({ cpu: 0.5, memoryMiB: 1536, diskGiB: 40, gpu: 0 });
    expect(spec.outputLimits).toEqual({
      stdoutBytes: 1048576,
      stderrBytes: 2048,
      inlineBytes: 1024,
      keep: 'tail',
      outputBytes: 1024 ** 3,
      outputsBytes: 4 * 1024 ** 3,
      outputFiles: 10_000,
    });
    expect(parseJobSpec({ image: 'a', command: ['x'], resources: { memory: 512 } }).resources.memoryMiB).toBe(
      512,
    );
    expect(
      parseJobSpec({ image: 'a', command: ['x'], resources: { disk: '50 GB' } }).resources.diskGiB,
    ).toBeCloseTo(46.566, 2);
  });

  it('names unknown fields, at any depth', () => {
    expect(problemsOf({ image: 'a', command: ['x'], colour: 'red' })).toContainEqual({
      field: 'colour',
      message: 'unknown field',
    });
    expect(problemsOf({ image: 'a', command: ['x'], resources: { gpus: 1 } })).toContainEqual({
      field: 'resources.gpus',
      message: 'unknown field',
    });
  });

  it('refuses wrong types, empty commands and bad sizes with the field named', () => {
    expect(problemsOf({ image: 'a', command: 'echo hi' }).map((p) => p.field)).toEqual(['command']);
    expect(problemsOf({ image: 'a', command: [] })[0]?.message).toMatch(/at least one element/);
    expect(problemsOf({ image: 'a', command: [''] })[0]?.message).toMatch(/must not be empty/);
    expect(problemsOf({ image: 'a', command: ['x'], resources: { cpu: -1 } })[0]?.field).toBe(
      'resources.cpu',
    );
    expect(problemsOf({ image: 'a', command: ['x'], resources: { memory: 'lots' } })[0]?.message).toMatch(
      /not a size: "lots"/,
    );
    expect(problemsOf({ image: 'a', command: ['x'], env: { A: 1 } })[0]?.field).toBe('env.A');
    expect(problemsOf({ image: 'a', command: ['x'], env: { '1A': 'x' } })[0]?.field).toBe('env.1A');
    expect(problemsOf({ image: 'Not An Image', command: ['x'] })[0]?.field).toBe('image');
    expect(problemsOf({ image: 'a', command: ['x'], timeoutSeconds: 0 })[0]?.field).toBe('timeoutSeconds');
    expect(problemsOf({ image: 'a', command: ['x'], workdir: 'relative' })[0]?.field).toBe('workdir');
    expect(problemsOf(null)[0]?.field).toBe('(body)');
  });

  it('bounds counts and sizes', () => {
    const env = Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`V${i}`, 'x']));
    expect(problemsOf({ image: 'a', command: ['x'], env })[0]?.message).toMatch(/at most 256/);
    expect(problemsOf({ image: 'a', command: ['x', 'y'.repeat(200 * 1024)] })[0]?.message).toMatch(
      /too long/,
    );
    expect(problemsOf({ image: 'a', command: Array.from({ length: 5000 }, () => 'x') })[0]?.message).toMatch(
      /at most 4096/,
    );
  });

  it('refuses sizes beyond floating point, which would be stored as null', () => {
    for (const resources of [{ memory: 1e308 }, { disk: 1e300 }, { memory: `${'9'.repeat(400)}GiB` }]) {
      const [problem] = problemsOf({ image: 'a', command: ['x'], resources });
      expect(problem?.field).toBe(`resources.${Object.keys(resources)[0]}`);
      expect(problem?.message).toMatch(/too large/);
    }
  });

  it('keeps the inline view within what is stored', () => {
    const spec = parseJobSpec({
      image: 'a',
      command: ['x'],
      outputLimits: { stdoutBytes: 100, stderrBytes: 50, inlineBytes: 4096 },
    });
    expect(spec.outputLimits.inlineBytes).toBe(100);
  });
});

describe('sizes', () => {
  it('parses binary and decimal units', () => {
    expect(parseSize('1KiB', 1)).toBe(1024);
    expect(parseSize('1kb', 1)).toBe(1000);
    expect(parseSize(' 2 GiB ', 1)).toBe(2 * 1024 ** 3);
    expect(parseSize('3', 1024)).toBe(3072);
    expect(parseSize('12 parsecs', 1)).toBeUndefined();
    expect(parseSize(Number.NaN, 1)).toBeUndefined();
  });

  it('prints sizes for people', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(10 * 1024 * 1024)).toBe('10 MiB');
  });
});

describe('job steps', () => {
  const step = (command: string[], more: object = {}) => ({ image: 'alpine:3', command, ...more });

  it('takes steps instead of image and command, the first step showing as the job’s', () => {
    const spec = parseJobSpec({
      steps: [
        step(['make'], { env: { A: '1' }, workdir: '/src' }),
        step(['make', 'test'], { ignoreError: true }),
      ],
    });
    expect(spec).toMatchObject({ image: 'alpine:3', command: ['make'], env: { A: '1' }, workdir: '/src' });
    expect(stepsOf(spec)).toEqual([
      { image: 'alpine:3', command: ['make'], env: { A: '1' }, workdir: '/src', ignoreError: false },
      { image: 'alpine:3', command: ['make', 'test'], env: {}, ignoreError: true },
    ]);
    expect(imagesOf(spec)).toEqual(['alpine:3']);
  });

  it('makes one plain step a plain job, and a job without steps one step', () => {
    const one = parseJobSpec({ steps: [step(['true'])] });
    expect(one.steps).toBeUndefined();
    expect(stepsOf(one)).toEqual([{ image: 'alpine:3', command: ['true'], env: {}, ignoreError: false }]);
    // A single step whose failure is ignored still needs the steps to say so.
    expect(parseJobSpec({ steps: [step(['false'], { ignoreError: true })] }).steps).toHaveLength(1);
  });

  it('refuses image or command beside steps, neither, and too many steps', () => {
    expect(problemsOf({ image: 'alpine:3', steps: [step(['true'])] })).toEqual([
      { field: 'image', message: 'give it in each step when the job has steps' },
    ]);
    expect(problemsOf({ timeoutSeconds: 5 })).toEqual([
      { field: 'image', message: 'required (or give steps)' },
      { field: 'command', message: 'required (or give steps)' },
    ]);
    expect(problemsOf({ steps: [] })[0]).toEqual({ field: 'steps', message: 'must have at least one step' });
    expect(problemsOf({ steps: Array.from({ length: 17 }, () => step(['true'])) })[0]?.message).toBe(
      'must have at most 16 steps',
    );
    expect(problemsOf({ steps: [step([]), { command: ['x'] }] }).map((p) => p.field)).toEqual([
      'steps.0.command',
      'steps.1.image',
    ]);
  });

  it('ends a job at its first failure not ignored, with that step’s exit code', () => {
    const steps = stepsOf(
      parseJobSpec({ steps: [step(['a'], { ignoreError: true }), step(['b']), step(['c'])] }),
    );
    const ok = { exitCode: 0, signal: null };
    const failed = (exitCode: number) => ({ exitCode, signal: null });
    expect(stepLetsNextRun(steps[0] ?? fail(), failed(9))).toBe(true);
    expect(stepLetsNextRun(steps[1] ?? fail(), failed(2))).toBe(false);
    expect(jobExitOf(steps, [failed(9), ok, ok], false)).toEqual(ok);
    expect(jobExitOf(steps, [failed(9), failed(2)], false)).toEqual(failed(2));
    // Stopped in a step whose failure is ignored: its code, not a success.
    expect(jobExitOf(steps, [failed(143)], true)).toEqual(failed(143));
    expect(jobExitOf(steps, [{ exitCode: null, signal: null }], false)).toEqual({
      exitCode: 0,
      signal: null,
    });
  });
});
