// The execution state machine: one table of allowed transitions. Nothing else decides
// whether a state may follow another; stores write only transitions this table allows.

export const EXECUTION_STATES = [
  'OFFERED',
  'DECLINED',
  'BID_REJECTED',
  'EXPIRED',
  'QUEUED',
  'LAUNCHING',
  'RUNNING',
  'COMPLETED',
  'FAILED',
  'CANCELLED',
  'TIMED_OUT',
] as const;

export type ExecutionState = (typeof EXECUTION_STATES)[number];

const TRANSITIONS: Readonly<Record<ExecutionState, readonly ExecutionState[]>> = {
  OFFERED: ['QUEUED', 'BID_REJECTED', 'EXPIRED'],
  DECLINED: [],
  BID_REJECTED: [],
  EXPIRED: [],
  // QUEUED → FAILED: the launch was refused for good (bad image, invalid request).
  QUEUED: ['LAUNCHING', 'CANCELLED', 'FAILED'],
  // LAUNCHING → COMPLETED etc.: a short job may stop before its RUNNING event is seen.
  LAUNCHING: ['RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT'],
  RUNNING: ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT'],
  COMPLETED: [],
  FAILED: [],
  CANCELLED: [],
  TIMED_OUT: [],
};

export const TERMINAL_STATES: readonly ExecutionState[] = EXECUTION_STATES.filter(
  (state) => TRANSITIONS[state].length === 0,
);

/** States in which a task may exist on the backend and hold capacity. */
export const ACTIVE_STATES: readonly ExecutionState[] = ['LAUNCHING', 'RUNNING'];

/** States after which a result (stdout, stderr, exit code) exists. */
export const RUN_ENDED_STATES: readonly ExecutionState[] = ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT'];

export const canTransition = (from: ExecutionState, to: ExecutionState): boolean =>
  TRANSITIONS[from].includes(to);

export const isTerminal = (state: ExecutionState): boolean => TRANSITIONS[state].length === 0;

export const isExecutionState = (value: string): value is ExecutionState =>
  (EXECUTION_STATES as readonly string[]).includes(value);

export const allowedTransitions = (from: ExecutionState): readonly ExecutionState[] => TRANSITIONS[from];
