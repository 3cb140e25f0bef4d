// The task-events handler: an ECS "Task State Change" event from EventBridge (or from a
// local backend, in the same shape) applied to its execution.
import middy from '@middy/core';
import type { Core } from '#shared/core.ts';
import type { TaskStateChangeEvent } from '#shared/domain/task-event.ts';
import { handleTaskStateChange, type TaskEventOutcome } from '#shared/use-cases/task-events.ts';

export function createTaskEventsHandler(core: Core) {
  return middy<TaskStateChangeEvent, { outcome: TaskEventOutcome }>().handler(async (event) => {
    if (event['detail-type'] !== 'ECS Task State Change' || typeof event.detail?.taskArn !== 'string') {
      core.log.warn('ignoring an event that is not an ECS task state change', { id: event.id });
      return { outcome: 'ignored' as const };
    }
    const outcome = await handleTaskStateChange(core, event.detail);
    core.log.debug('task event', { taskArn: event.detail.taskArn, status: event.detail.lastStatus, outcome });
    return { outcome };
  });
}
