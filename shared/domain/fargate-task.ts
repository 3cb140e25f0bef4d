// What Ferry asks ECS for one execution, beyond its task definition: the task overrides
// (size, the job's argv and environment, the publisher's settings and upload secret) and the
// task's tags. Pure, so the bid can measure exactly what the ECS backend will send.
import { outputDir, parentOf, plainPath } from './data-plan.ts';
import { FARGATE_RULES } from './fargate-rules.ts';
import { type DataType, type JobInput, type JobOutput, type JobSpec, stepsOf } from './job-spec.ts';
import { stepContainer } from './task-event.ts';
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

/** Where a step (0-based) and the publisher meet: its FIFOs and its exit record. */
export const stepIoDir = (index: number): string =>
  index === 0 ? `${SHARED_PATH}/io` : `${SHARED_PATH}/io/step-${index + 1}`;
/** Where the first step records when the job's time started, so later steps get what is left. */
export const STARTED_FILE = `${SHARED_PATH}/io/started`;

/**
 * ECS takes at most this many containers in one task definition: Ferry's init and publisher,
 * the stage container when the job has data, and one per step.
 */
export const CONTAINERS_PER_TASK = FARGATE_RULES.containersPerTaskDefinition;

/** How many containers a job's task definition holds. */
export const taskContainerCount = (spec: TaskDataSpec & Partial<Pick<JobSpec, 'steps'>>): number =>
  2 + (taskDataPlan(spec).volumes.length > 0 ? 1 : 0) + (spec.steps?.length ?? 1);

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

/** What lays out a job's data: its inputs, its outputs and the volumes its steps share. */
export type TaskDataSpec = Pick<JobSpec, 'inputs' | 'outputs'> & Partial<Pick<JobSpec, 'volumes'>>;

export function taskDataPlan(spec: TaskDataSpec): TaskDataPlan {
  const wanted = [
    // A volume the job asked for is an empty writable directory its steps share.
    ...(spec.volumes ?? []).map((volume) => ({ dir: plainPath(volume), relative: '', writes: true })),
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
  const places = wanted
    .slice(spec.volumes?.length ?? 0)
    .map((w) => ({ volume: dirs.indexOf(w.dir), relative: w.relative }));
  return {
    volumes,
    inputs: places.slice(0, spec.inputs.length),
    outputs: places.slice(spec.inputs.length),
  };
}

/** What a Fargate task cannot mount or fetch, in words; empty when it can. */
export function taskDataProblems(spec: TaskDataSpec): string[] {
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
export function taskDataNotes(spec: TaskDataSpec): string[] {
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

function holders(spec: TaskDataSpec, dir: string): string {
  const plan = taskDataPlan(spec);
  const v = plan.volumes.findIndex((volume) => volume.containerPath === dir);
  return [
    ...(spec.volumes ?? []).filter((volume) => plainPath(volume) === dir).map((volume) => `volume ${volume}`),
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

export function stageOrder(spec: TaskDataSpec, diskGiB: number): StageOrder {
  const plan = taskDataPlan(spec);
  return {
    diskBytes: diskGiB * GiB,
    volumes: plan.volumes.map(({ writable, mountPoints }) => ({ writable, mountPoints })),
    inputs: spec.inputs.map((input, i) => ({ ...input, ...(plan.inputs[i] ?? { volume: 0, relative: '' }) })),
  };
}

export function publisherOutputs(spec: TaskDataSpec): PublisherOutput[] {
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
  spec: Pick<JobSpec, 'image' | 'command' | 'env' | 'timeoutSeconds' | 'outputLimits' | 'workdir'> &
    Partial<Pick<JobSpec, 'inputs' | 'outputs' | 'volumes' | 'steps'>>,
  executionId: string,
  size: FargateTaskSize,
  /** The launch attempt's upload secret: the publisher's alone, never the job's, never a tag. */
  uploadSecret: string,
): FargateTaskOverrides {
  const data = { inputs: spec.inputs ?? [], outputs: spec.outputs ?? [], volumes: spec.volumes ?? [] };
  const steps = stepsOf(spec);
  return {
    cpu: size.cpu,
    memory: size.memory,
    // Fargate gives 20 GiB without asking, and refuses an override below 21.
    ...(size.ephemeralStorageGiB > 20 ? { ephemeralStorage: { sizeInGiB: size.ephemeralStorageGiB } } : {}),
    containerOverrides: [
      ...steps.map((step, index) => ({
        name: stepContainer(index),
        // The wrapper's own arguments, then the step's argv untouched.
        command: [
          '--io',
          stepIoDir(index),
          '--timeout',
          String(spec.timeoutSeconds),
          // The job's time counts from its first step, whichever container runs it.
          ...(steps.length > 1 ? ['--timeout-from', STARTED_FILE] : []),
          // RunTask cannot set a container's working directory; the wrapper enters it.
          ...(step.workdir === undefined ? [] : ['--workdir', step.workdir]),
          '--',
          ...step.command,
        ],
        environment: Object.entries(step.env).map(([name, value]) => ({ name, value })),
      })),
      ...(taskDataPlan(data).volumes.length === 0
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
          // Present whenever the job has steps: one step whose failure is ignored ends in 0.
          ...(spec.steps === undefined
            ? []
            : [
                {
                  name: 'FERRY_STEPS',
                  value: JSON.stringify(steps.map((step) => ({ ignoreError: step.ignoreError }))),
                },
              ]),
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
