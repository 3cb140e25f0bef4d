// The local server's retention: ended executions older than the retention period are deleted,
// record and stored output, a batch at a time (on AWS, DynamoDB's TTL and the bucket's
// lifecycle rule do the same).
import type { Logger } from '../../logger.ts';
import type { CapacityLedger, ObjectStore } from '../../ports.ts';
import type { SqliteExecutionStore } from './sqlite-store.ts';

const BATCH = 100;

/** Deletes up to a batch of executions that ended before `cutoff`; returns how many. */
export async function pruneEnded(
  store: SqliteExecutionStore,
  objects: ObjectStore,
  ledger: CapacityLedger,
  cutoff: Date,
  log: Logger,
): Promise<number> {
  const holding = new Set(await ledger.holders());
  let pruned = 0;
  for (const execution of store.endedBefore(cutoff, BATCH)) {
    if (holding.has(execution.id)) continue;
    try {
      await store.delete(execution.id, execution);
      await objects.deletePrefix(`executions/${execution.id}/`);
      pruned++;
    } catch (error) {
      log.warn('could not delete an execution past its retention', { executionId: execution.id, error });
    }
  }
  return pruned;
}
