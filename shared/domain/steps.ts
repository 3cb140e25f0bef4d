// How a job with several steps goes on and ends, the same on every backend: steps run one after
// another; a step that fails (any exit but 0, or no exit at all) ends the job unless it has
// ignoreError; the job's exit code is that of the step that ended it, else 0.
import type { StepResult } from './execution.ts';
import type { JobStep } from './job-spec.ts';

type StepEnd = Pick<StepResult, 'exitCode' | 'signal'>;

const failed = (end: StepEnd): boolean => end.exitCode !== 0;

/** Whether the step after this one runs, now that this one has ended (and no stop came). */
export function stepLetsNextRun(step: Pick<JobStep, 'ignoreError'>, end: StepEnd): boolean {
  return !failed(end) || step.ignoreError;
}

/**
 * The job's exit code and signal once its steps have ended: the first failure that was not
 * ignored; else, when a stop cut the run short, the last step's; else 0.
 */
export function jobExitOf(
  steps: readonly Pick<JobStep, 'ignoreError'>[],
  results: readonly StepEnd[],
  stopped: boolean,
): StepEnd {
  const failure = results.find((end, index) => failed(end) && steps[index]?.ignoreError !== true);
  if (failure !== undefined) return { exitCode: failure.exitCode, signal: failure.signal };
  const last = results.at(-1);
  if (stopped && last !== undefined) return { exitCode: last.exitCode, signal: last.signal };
  return { exitCode: 0, signal: null };
}
