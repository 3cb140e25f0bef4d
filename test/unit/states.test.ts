import { describe, expect, it } from 'vitest';
import {
  allowedTransitions,
  canTransition,
  EXECUTION_STATES,
  type ExecutionState,
  isTerminal,
  TERMINAL_STATES,
} from '../../shared/domain/states.ts';

// The whole table, written out once more by hand: any change to the state machine must
// change this test too, on purpose.
const EXPECTED: Record<ExecutionState, ExecutionState[]> = {
  OFFERED: ['QUEUED', 'BID_REJECTED', 'EXPIRED'],
  DECLINED: [],
  BID_REJECTED: [],
  EXPIRED: [],
  QUEUED: ['LAUNCHING', 'CANCELLED', 'FAILED'],
  LAUNCHING: ['RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT'],
  RUNNING: ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT'],
  COMPLETED: [],
  FAILED: [],
  CANCELLED: [],
  TIMED_OUT: [],
};

describe('execution state machine', () => {
  for (const from of EXECUTION_STATES) {
    for (const to of EXECUTION_STATES) {
      const allowed = EXPECTED[from].includes(to);
      it(`${from} → ${to} is ${allowed ? 'allowed' : 'refused'}`, () => {
        expect(canTransition(from, to)).toBe(allowed);
      });
    }
  }

  it('has exactly the terminal states of the design', () => {
    expect([...TERMINAL_STATES].sort()).toEqual(
      ['BID_REJECTED', 'CANCELLED', 'COMPLETED', 'DECLINED', 'EXPIRED', 'FAILED', 'TIMED_OUT'].sort(),
    );
    for (const state of TERMINAL_STATES) expect(allowedTransitions(state)).toEqual([]);
  });

  it('never lets a run go back to waiting', () => {
    for (const state of ['LAUNCHING', 'RUNNING'] as const) {
      expect(canTransition(state, 'QUEUED')).toBe(false);
      expect(canTransition(state, 'OFFERED')).toBe(false);
    }
    expect(canTransition('RUNNING', 'LAUNCHING')).toBe(false);
    expect(isTerminal('RUNNING')).toBe(false);
  });
});
