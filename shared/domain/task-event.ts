// The ECS "Task State Change" event, the one shape in which every backend reports a
// task's life: ECS through EventBridge, the local backends by building the same object.

export interface TaskContainerState {
  readonly name: string;
  readonly lastStatus?: string;
  readonly exitCode?: number;
  readonly reason?: string;
}

export interface TaskStateChangeDetail {
  readonly taskArn: string;
  readonly clusterArn?: string;
  readonly lastStatus: string;
  readonly desiredStatus?: string;
  /** Ferry starts every task with startedBy = the execution id. */
  readonly startedBy?: string;
  readonly stopCode?: string;
  readonly stoppedReason?: string;
  readonly containers?: readonly TaskContainerState[];
  /** Increments with every change of the task; later events carry larger versions. */
  readonly version: number;
  readonly createdAt?: string;
  readonly startedAt?: string;
  readonly stoppingAt?: string;
  readonly stoppedAt?: string;
}

export interface TaskStateChangeEvent {
  readonly version: '0';
  readonly id: string;
  readonly 'detail-type': 'ECS Task State Change';
  readonly source: 'aws.ecs' | 'ferry.local';
  readonly account: string;
  readonly time: string;
  readonly region: string;
  readonly resources: readonly string[];
  readonly detail: TaskStateChangeDetail;
}

/** The container that runs the job's command; other containers are Ferry's own helpers. */
export const JOB_CONTAINER = 'job';

/** The container of a job's step (0-based): the first is the job's container, step K is `job-stepK`. */
export const stepContainer = (index: number): string =>
  index === 0 ? JOB_CONTAINER : `${JOB_CONTAINER}-step${index + 1}`;

/** Whether a task's container runs one of the job's steps. */
export const isStepContainer = (name: string): boolean =>
  name === JOB_CONTAINER || /^job-step[0-9]+$/.test(name);

/** Opens the reason of a run that Fargate Spot took the capacity of. */
export const SPOT_RECLAIMED = 'the Fargate Spot capacity was reclaimed';

/** Opens a container's `reason` when the job ran but its result could not be stored. */
export const RESULT_NOT_STORED = 'ResultNotStoredError';

/**
 * Whether the event reports the task's job as ended. ECS reports DEPROVISIONING once every
 * container has stopped and STOPPED once the task's resources are given back; a local backend
 * reports DEPROVISIONING only when it could not yet free them (a container the engine has not
 * removed). The execution ends at the first; its capacity is given back at STOPPED.
 */
export const jobEnded = (detail: Pick<TaskStateChangeDetail, 'lastStatus'>): boolean =>
  detail.lastStatus === 'STOPPED' || detail.lastStatus === 'DEPROVISIONING';

export function taskStateChange(
  detail: TaskStateChangeDetail,
  meta: { id: string; time: string; source?: TaskStateChangeEvent['source'] },
): TaskStateChangeEvent {
  return {
    version: '0',
    id: meta.id,
    'detail-type': 'ECS Task State Change',
    source: meta.source ?? 'ferry.local',
    account: '000000000000',
    time: meta.time,
    region: 'local',
    resources: [detail.taskArn],
    detail,
  };
}
