// Records for store tests: an OFFERED execution as the bid use case would create it.
import type { Execution } from '../../shared/domain/execution.ts';
import { parseJobSpec } from '../../shared/domain/job-spec.ts';

export function offeredExecution(id: string, createdAt: string, owner = 'a'): Execution {
  return {
    id,
    owner,
    state: 'OFFERED',
    version: 1,
    spec: parseJobSpec({ image: 'alpine', command: ['true'] }),
    bid: { accepted: true, reason: 'test' },
    createdAt,
    updatedAt: createdAt,
    deferrals: 0,
    history: [{ state: 'OFFERED', at: createdAt }],
  };
}
