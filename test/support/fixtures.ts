// Records for store tests: an OFFERED execution as the bid use case would create it; what a
// launch attempt hands a backend.
import type { Execution } from '../../shared/domain/execution.ts';
import { parseJobSpec } from '../../shared/domain/job-spec.ts';
import { mintUploadSecret } from '../../shared/domain/upload-links.ts';
import type { LaunchTicket } from '../../shared/ports.ts';

/** A launch attempt's ticket, with a fresh upload secret. */
export const ticket = (): LaunchTicket => ({ uploadSecret: mintUploadSecret() });

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
