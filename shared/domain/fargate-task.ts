// What Ferry asks ECS for one execution, beyond its task definition: the task overrides
// (size, the job's argv and environment, the publisher's settings and upload secret) and the
// task's tags. Pure, so the bid can measure exactly what the ECS backend will send.
import { outputDir, parentOf, plainPath } from './data-plan.ts';
import type { DataType, JobInput, JobOutput, JobSpec } from './job-spec.ts';
import { JOB_CONTAINER } from './task-event.ts';
import { GiB } from './units.ts';

export const INIT_CONTAINER = 'ferry-init';
/** Fetches a job's inputs into its data volumes before the job's container starts. */
export const STAGE_CONTAINER = 'ferry-stage';
export const PUBLISHER_CONTAINER = 'ferry-publisher';
/** The task-local volume the containers share, and where it is mounted. */
export const SHARED_VOLUME = 'ferry';
export const SHARED_PATH = '/ferry';
/** Where Ferry's own containers see the job's data volumes: volume K at /ferry-data/K. */
export const DATA_ROOT = '/ferry-data';

/**
 * Directories a data volume may not replace: a Fargate volume is a whole directory, and these
 * hold what the image needs to run at all.
 */
const SYSTEM_DIRS = ['/', '/bin', '/etc', '/lib', '/lib32', '/lib64', '/libx32', '/sbin', '/usr', '/var'];

/** One task volume holding a job's data, mounted in the job's container at `containerPath`. */
export interface DataVolume {
  readonly name: string;
  readonly containerPath: string;
  /** True when the job writes outputs in it; inputs alone are mounted read-only. */
  readonly writable: boolean;
  /** Directories to make in it where another volume is mounted further down. */
  readonly mountPoints: readonly string[];
}

/** Where one input or output is: a volume, and the path inside it ('' for the volume itself). */
export interface DataPlace {
  readonly volume: number;
  readonly relative: string;
}

/**
 * How a job's data is laid out in a Fargate task. Task volumes are directories: a DIRECTORY
 * input or output is a volume of its own, and the files in one directory share the volume
 * made at that directory (a FILE input's directory too, which hides what the image has there).
 */
export interface TaskDataPlan {
  readonly volumes: readonly DataVolume[];
  readonly inputs: readonly DataPlace[];
  readonly outputs: readonly DataPlace[];
}

const baseName = (path: string): string => plainPath(path).slice(plainPath(path).lastIndexOf('/') + 1);

export function taskDataPlan(spec: Pick<JobSpec, 'inputs' | 'outputs'>): TaskDataPlan {
  const wanted = [
    ...spec.inputs.map((input) => ({
      dir: input.type === 'DIRECTORY' ? plainPath(input.path) : parentOf(input.path),
      relative: input.type === 'DIRECTORY' ? '' : baseName(input.path),
      writes: false,
    })),
    ...spec.outputs.map((output) => ({
      dir: outputDir(output),
      relative: output.type === 'DIRECTORY' ? '' : baseName(output.path),
      writes: true,
    })),
  ];
  // Outermost first, so a volume inside another is mounted after it.
  const dirs = [...new Set(wanted.map((w) => w.dir))].sort(
    (a, b) => a.split('/').length - b.split('/').length || (a < b ? -1 : a > b ? 1 : 0),
  );
  const volumes = dirs.map((dir, index) => ({
    name: `data-${index}`,
    containerPath: dir,
    writable: wanted.some((w) => w.dir === dir && w.writes),
    mountPoints: dirs
      .filter((inner) => inner !== dir && (dir === '/' ? true : inner.startsWith(`${dir}/`)))
      .map((inner) => inner.slice(dir === '/' ? 1 : dir.length + 1)),
  }));
  const places = wanted.map((w) => ({ volume: dirs.indexOf(w.dir), relative: w.relative }));
  return {
    volumes,
    inputs: places.slice(0, spec.inputs.length),
    outputs: places.slice(spec.inputs.length),
  };
}

/** What a Fargate task cannot mount or fetch, in words; empty when it can. */
export function taskDataProblems(spec: Pick<JobSpec, 'inputs' | 'outputs'>): string[] {
  const files = spec.inputs.flatMap((input) =>
    input.url?.startsWith('file:')
      ? [
          `input ${input.url}: a file:// source is on the machine Ferry runs on; a Fargate task cannot read it`,
        ]
      : [],
  );
  return files.concat(
    taskDataPlan(spec).volumes.flatMap((volume) =>
      SYSTEM_DIRS.includes(volume.containerPath)
        ? [
            `${volume.containerPath} would be a volume of its own on Fargate (it holds ${holders(spec, volume.containerPath)}), hiding what the image has there; put the data in a directory of its own`,
          ]
        : [],
    ),
  );
}

/** What a caller should know about the layout on Fargate. */
export function taskDataNotes(spec: Pick<JobSpec, 'inputs' | 'outputs'>): string[] {
  const plan = taskDataPlan(spec);
  const dirOf = (place: DataPlace | undefined) => plan.volumes[place?.volume ?? -1]?.containerPath ?? '';
  const fileDirs = [
    ...new Set([
      ...spec.inputs.flatMap((input, i) => (input.type === 'FILE' ? [dirOf(plan.inputs[i])] : [])),
      ...spec.outputs.flatMap((output, i) => (output.type === 'FILE' ? [dirOf(plan.outputs[i])] : [])),
    ]),
  ];
  const notes: string[] = [];
  if (fileDirs.length > 0) {
    notes.push(
      `on Fargate the directory of a FILE input or output is a volume of its own: what the image has in ${fileDirs.join(', ')} is hidden`,
    );
  }
  const mixed = plan.volumes.filter(
    (volume, v) => volume.writable && plan.inputs.some((place) => place.volume === v),
  );
  if (mixed.length > 0) {
    notes.push(
      `${mixed.map((v) => v.containerPath).join(', ')} holds inputs and outputs: on Fargate it is writable, its inputs read-only files`,
    );
  }
  return notes;
}

function holders(spec: Pick<JobSpec, 'inputs' | 'outputs'>, dir: string): string {
  const plan = taskDataPlan(spec);
  const v = plan.volumes.findIndex((volume) => volume.containerPath === dir);
  return [
    ...spec.inputs.filter((_, i) => plan.inputs[i]?.volume === v).map((input) => `input ${input.path}`),
    ...spec.outputs.filter((_, i) => plan.outputs[i]?.volume === v).map((output) => `output ${output.path}`),
  ].join(', ');
}

/** What the stage container is told: where each input goes, which volumes the job writes in. */
export interface StageOrder {
  readonly diskBytes: number;
  readonly volumes: readonly Pick<DataVolume, 'writable' | 'mountPoints'>[];
  readonly inputs: readonly (JobInput & DataPlace)[];
}

/** What the publisher is told of each output: its name and where it is in the data volumes. */
export interface PublisherOutput extends DataPlace {
  readonly name: string;
  readonly path: string;
  readonly type: DataType;
}

export function stageOrder(spec: Pick<JobSpec, 'inputs' | 'outputs'>, diskGiB: number): StageOrder {
  const plan = taskDataPlan(spec);
  return {
    diskBytes: diskGiB * GiB,
    volumes: plan.volumes.map(({ writable, mountPoints }) => ({ writable, mountPoints })),
    inputs: spec.inputs.map((input, i) => ({ ...input, ...(plan.inputs[i] ?? { volume: 0, relative: '' }) })),
  };
}

export function publisherOutputs(spec: Pick<JobSpec, 'inputs' | 'outputs'>): PublisherOutput[] {
  const plan = taskDataPlan(spec);
  return spec.outputs.map((output: JobOutput, i) => ({
    name: output.name,
    path: output.path,
    type: output.type,
    ...(plan.outputs[i] ?? { volume: 0, relative: '' }),
  }));
}

/** The task-level size of one execution, as ECS spells it. */
export interface FargateTaskSize {
  readonly cpu: string;
  readonly memory: string;
  readonly ephemeralStorageGiB: number;
}

export interface KeyValue {
  readonly name: string;
  readonly value: string;
}

export interface FargateTaskOverrides {
  readonly cpu: string;
  readonly memory: string;
  readonly ephemeralStorage?: { readonly sizeInGiB: number };
  containerOverrides: {
    readonly name: string;
    command?: string[];
    environment: KeyValue[];
  }[];
}

export interface TaskTag {
  readonly key: string;
  readonly value: string;
}

/** Longer than any execution id Ferry makes: a bid measures with it before the id exists. */
export const LONGEST_EXECUTION_ID = 'x'.repeat(64);

/** The label `key` as a task tag key. */
export const labelTagKey = (key: string): string => `ferry:label:${key}`;

/**
 * The limits the publisher applies: the streams', and the outputs' only when the job has any
 * (every character counts against the overrides limit).
 */
function publisherLimits(spec: Pick<JobSpec, 'outputLimits'> & Partial<Pick<JobSpec, 'outputs'>>) {
  const { stdoutBytes, stderrBytes, inlineBytes, keep } = spec.outputLimits;
  return (spec.outputs?.length ?? 0) > 0
    ? spec.outputLimits
    : { stdoutBytes, stderrBytes, inlineBytes, keep };
}

export function taskOverrides(
  spec: Pick<JobSpec, 'command' | 'env' | 'timeoutSeconds' | 'outputLimits' | 'workdir'> &
    Partial<Pick<JobSpec, 'inputs' | 'outputs'>>,
  executionId: string,
  size: FargateTaskSize,
  /** The launch attempt's upload secret: the publisher's alone, never the job's, never a tag. */
  uploadSecret: string,
): FargateTaskOverrides {
  const data = { inputs: spec.inputs ?? [], outputs: spec.outputs ?? [] };
  return {
    cpu: size.cpu,
    memory: size.memory,
    // Fargate gives 20 GiB without asking, and refuses an override below 21.
    ...(size.ephemeralStorageGiB > 20 ? { ephemeralStorage: { sizeInGiB: size.ephemeralStorageGiB } } : {}),
    containerOverrides: [
      {
        name: JOB_CONTAINER,
        // The wrapper's own arguments, then the job's argv untouched.
        command: [
          '--io',
          `${SHARED_PATH}/io`,
          '--timeout',
          String(spec.timeoutSeconds),
          // RunTask cannot set a container's working directory; the wrapper enters it.
          ...(spec.workdir === undefined ? [] : ['--workdir', spec.workdir]),
          '--',
          ...spec.command,
        ],
        environment: Object.entries(spec.env).map(([name, value]) => ({ name, value })),
      },
      ...(data.inputs.length + data.outputs.length === 0
        ? []
        : [
            {
              name: STAGE_CONTAINER,
              environment: [
                { name: 'FERRY_EXECUTION_ID', value: executionId },
                { name: 'FERRY_STAGE', value: JSON.stringify(stageOrder(data, size.ephemeralStorageGiB)) },
              ],
            },
          ]),
      {
        name: PUBLISHER_CONTAINER,
        environment: [
          { name: 'FERRY_EXECUTION_ID', value: executionId },
          { name: 'FERRY_OUTPUT_LIMITS', value: JSON.stringify(publisherLimits(spec)) },
          { name: 'FERRY_UPLOAD_SECRET', value: uploadSecret },
          ...(data.outputs.length === 0
            ? []
            : [{ name: 'FERRY_OUTPUTS', value: JSON.stringify(publisherOutputs(data)) }]),
        ],
      },
    ],
  };
}

/** Ferry's own tag first, then one per label: every label is carried, none is dropped. */
export function executionTags(executionId: string, labels: Readonly<Record<string, string>>): TaskTag[] {
  return [
    { key: 'ferry:execution', value: executionId },
    ...Object.entries(labels).map(([key, value]) => ({ key: labelTagKey(key), value })),
  ];
}
