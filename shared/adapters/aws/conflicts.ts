// Writes that touch an item another transaction is writing (the capacity totals, the queue
// length, an execution a transaction is moving) are refused with a transaction conflict,
// which the SDK does not retry. Trying again shortly is safe: each try's conditions are
// decided afresh, so a retry can lose its condition but never apply twice.
import { TransactionCanceledException, TransactionConflictException } from '@aws-sdk/client-dynamodb';

/** Tries of one write that keeps colliding with other writers' before giving up. */
const CONFLICT_ATTEMPTS = 6;

export type Sleep = (ms: number) => Promise<void>;

export const realSleep: Sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A write refused only because another transaction held an item, not because of a condition. */
export function isConflict(error: unknown): boolean {
  if (error instanceof TransactionConflictException) return true;
  if (!(error instanceof TransactionCanceledException)) return false;
  const reasons = error.CancellationReasons ?? [];
  return (
    reasons.some((r) => r.Code === 'TransactionConflict') &&
    !reasons.some((r) => r.Code === 'ConditionalCheckFailed')
  );
}

/** Sends `write`, again after a short random pause each time it collides, a few times at most. */
export async function retryingConflicts<T>(write: () => Promise<T>, sleep: Sleep = realSleep): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (error) {
      if (!isConflict(error) || attempt >= CONFLICT_ATTEMPTS) throw error;
      await sleep(Math.random() * 25 * 2 ** attempt);
    }
  }
}
