// The TES API's operations, on the /v1 use cases: a task is created through the same bid and
// accept as POST /v1/jobs, read, listed and cancelled as an execution is. What differs is only
// the shape, which shared/http/tes.ts maps both ways.
import type { Core } from '../core.ts';
import type { Execution } from '../domain/execution.ts';
import { LABEL_KEY, parseBody } from '../domain/job-spec.ts';
import { BidDeclined, TaskDeclined } from '../errors.ts';
import {
  ferryStatesOf,
  jobOfTask,
  type TesState,
  type TesTask,
  TesTaskSchema,
  type TesView,
  taskOf,
  tesStateOf,
} from '../http/tes.ts';
import { getOwned, type KeyedRequest, submitJob } from './bids.ts';
import { cancelExecution, listExecutions } from './executions.ts';
import { loadManifest, readStoredSpan } from './results.ts';

/** Stored results read at once for a page in the FULL view. */
const FULL_VIEW_READS = 16;

export async function createTask(
  core: Core,
  owner: string,
  body: unknown,
  request?: KeyedRequest,
): Promise<{ id: string }> {
  const task = parseBody(TesTaskSchema, body);
  const job = jobOfTask(task, {
    maxTimeoutSeconds: core.settings.policy.maxTimeoutSeconds,
    allowEgress: core.settings.policy.allowEgress,
  });
  for (const warning of job.warnings)
    core.log.warn('a TES task asked for what Ferry does not do', { warning });
  try {
    return { id: (await submitJob(core, owner, job.spec, request)).id };
  } catch (error) {
    // TES answers a task the server will not run with 400, the reason in the body.
    if (error instanceof BidDeclined) throw new TaskDeclined(error.message, { details: error.details });
    throw error;
  }
}

export async function getTask(core: Core, owner: string, id: string, view: TesView): Promise<TesTask> {
  return viewOf(core, await getOwned(core, owner, id), view);
}

export interface TaskQuery {
  readonly view: TesView;
  readonly pageSize: number;
  readonly pageToken?: string;
  readonly namePrefix?: string;
  readonly state?: TesState;
  /** tag_key and tag_value zipped: an empty value matches any value of the key. */
  readonly tags: readonly (readonly [string, string])[];
}

export async function listTasks(
  core: Core,
  owner: string,
  query: TaskQuery,
): Promise<{ tasks: TesTask[]; next_page_token?: string }> {
  const states = query.state === undefined ? [] : ferryStatesOf(query.state);
  if (query.state !== undefined && states.length === 0) return { tasks: [] };
  // A key Ferry could not have stored as a label is on no task.
  if (query.tags.some(([key]) => !LABEL_KEY.test(key))) return { tasks: [] };
  const labels = Object.fromEntries(query.tags.filter(([, value]) => value !== ''));
  const labelKeys = query.tags.filter(([, value]) => value === '').map(([key]) => key);
  const page = await listExecutions(core, owner, {
    states,
    ...(Object.keys(labels).length > 0 ? { labels } : {}),
    ...(labelKeys.length > 0 ? { labelKeys } : {}),
    ...(query.namePrefix === undefined || query.namePrefix === '' ? {} : { namePrefix: query.namePrefix }),
    limit: query.pageSize,
    ...(query.pageToken === undefined || query.pageToken === '' ? {} : { cursor: query.pageToken }),
  });
  // Some TES states are parts of a Ferry state (COMPLETE and EXECUTOR_ERROR of COMPLETED): a page
  // may hold fewer than asked, and the token still leads on.
  const items =
    query.state === undefined ? page.items : page.items.filter((e) => tesStateOf(e) === query.state);
  // The FULL view reads each stored result: a few at a time, in order.
  const tasks: TesTask[] = [];
  for (let at = 0; at < items.length; at += FULL_VIEW_READS) {
    tasks.push(
      ...(await Promise.all(items.slice(at, at + FULL_VIEW_READS).map((e) => viewOf(core, e, query.view)))),
    );
  }
  return { tasks, ...(page.nextCursor === undefined ? {} : { next_page_token: page.nextCursor }) };
}

export async function cancelTask(core: Core, owner: string, id: string): Promise<Record<string, never>> {
  await cancelExecution(core, owner, id);
  return {};
}

/**
 * The FULL view shows each executor's output, kept in the stored result: the inline part of it
 * for a task of one executor, and the first bytes of each executor's part of it for several.
 */
async function viewOf(core: Core, execution: Execution, view: TesView): Promise<TesTask> {
  // BASIC lists the files delivered to outputs' urls, which only the stored result knows.
  const needed =
    view === 'FULL' || (view === 'BASIC' && execution.spec.outputs.some((o) => o.url !== undefined));
  // A result that cannot be read leaves the task without its output: system_logs says why.
  const notes: string[] = [];
  const manifest =
    needed && execution.result !== undefined && execution.result.review !== 'REJECTED'
      ? await loadManifest(core, execution.id).then(
          (found) => {
            if (found === undefined) notes.push('the stored result is no longer there');
            return found;
          },
          (error: Error) => {
            notes.push(`the stored result could not be read: ${error.message}`);
            return undefined;
          },
        )
      : undefined;
  const steps = manifest?.steps;
  if (view !== 'FULL' || manifest === undefined || steps === undefined)
    return taskOf(execution, view, manifest, { notes });
  const limit = execution.spec.outputLimits.inlineBytes;
  const text = async (stream: 'stdout' | 'stderr', index: number) => {
    const from = steps[index]?.[stream === 'stdout' ? 'stdoutFrom' : 'stderrFrom'] ?? 0;
    const next = steps[index + 1];
    const to =
      next === undefined
        ? manifest[stream].totalBytes
        : next[stream === 'stdout' ? 'stdoutFrom' : 'stderrFrom'];
    try {
      return (await readStoredSpan(core, manifest, stream, { from, to }, limit)).toString('utf8');
    } catch (error) {
      notes.push(`executor ${index + 1}'s ${stream} could not be read: ${(error as Error).message}`);
      return '';
    }
  };
  const stepOutput = await Promise.all(
    steps.map(async (_, index) => ({
      stdout: await text('stdout', index),
      stderr: await text('stderr', index),
    })),
  );
  return taskOf(execution, view, manifest, { stepOutput, notes });
}
