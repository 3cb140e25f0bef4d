// Changing an execution: every write goes through here, so every write is checked
// against the transition table and conditional on the version that was read.
import type { Execution } from '../domain/execution.ts';
import { canTransition, type ExecutionState, isTerminal } from '../domain/states.ts';
import { InvalidTransition, NotFound, StaleExecution } from '../errors.ts';
import type { ExecutionStore } from '../ports.ts';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
export type ExecutionPatch = Partial<
  Omit<Mutable<Execution>, 'id' | 'owner' | 'version' | 'state' | 'history'>
>;

/** The execution moved to `to`, with the patch applied; throws InvalidTransition if the table forbids it. */
export function moveTo(
  execution: Execution,
  to: ExecutionState,
  now: Date,
  patch: ExecutionPatch = {},
  reason?: string,
  /** What the caller said about this step, kept in its history entry. */
  justification?: string,
): Execution {
  if (!canTransition(execution.state, to)) {
    throw new InvalidTransition(`execution ${execution.id} is ${execution.state}; it cannot become ${to}`, {
      details: { state: execution.state },
    });
  }
  const at = now.toISOString();
  return {
    ...execution,
    // The reason a run ended (or never ran) is the execution's reason too.
    ...(reason !== undefined && isTerminal(to) ? { reason } : {}),
    ...patch,
    state: to,
    version: execution.version + 1,
    updatedAt: at,
    history: [
      ...execution.history,
      {
        state: to,
        at,
        ...(reason === undefined ? {} : { reason }),
        ...(justification === undefined ? {} : { justification }),
      },
    ],
  };
}

/** The execution with fields changed but its state kept. */
export function amend(execution: Execution, now: Date, patch: ExecutionPatch): Execution {
  return { ...execution, ...patch, version: execution.version + 1, updatedAt: now.toISOString() };
}

/**
 * Reads the execution, lets `decide` compute the next version (or undefined for "leave it"),
 * and writes it conditionally. On a lost race it reads again and decides again, so the
 * decision is always made on the current state.
 */
export async function mutate(
  store: ExecutionStore,
  id: string,
  decide: (current: Execution) => Execution | undefined,
  attempts = 8,
  /** The version the caller just wrote, if any: the first attempt starts from it without a read. */
  known?: Execution,
): Promise<Execution> {
  let fresh = known;
  for (let attempt = 1; ; attempt++) {
    const current = fresh ?? (await store.get(id));
    fresh = undefined;
    if (current === undefined) throw new NotFound(`execution ${id} does not exist`);
    const next = decide(current);
    if (next === undefined) return current;
    try {
      await store.update(next, current);
      return next;
    } catch (error) {
      if (!(error instanceof StaleExecution) || attempt >= attempts) throw error;
    }
  }
}
