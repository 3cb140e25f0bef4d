// A TES task whose stored result cannot be had still shows, saying why in its system logs,
// rather than passing for a run that printed nothing.
import { describe, expect, it } from 'vitest';
import type { Execution } from '../../shared/domain/execution.ts';
import { resultKeys } from '../../shared/domain/execution.ts';
import { getTask } from '../../shared/use-cases/tes-tasks.ts';
import { buildTestCore } from '../support/core.ts';
import { offeredExecution } from '../support/fixtures.ts';

const stream = { totalBytes: 3, storedBytes: 3, truncated: false };

describe('the TES FULL view of a result that cannot be read', () => {
  it('names what kept the output from the view', async () => {
    const { core } = await buildTestCore();
    const base = offeredExecution('ex-gone', '2030-01-01T00:00:00.000Z');
    const ended: Execution = {
      ...base,
      state: 'COMPLETED',
      exitCode: 0,
      startedAt: '2030-01-01T00:00:01.000Z',
      endedAt: '2030-01-01T00:00:02.000Z',
      result: {
        review: 'PENDING',
        exitCode: 0,
        manifestKey: resultKeys(base.id).manifest,
        stdout: stream,
        stderr: stream,
      },
    };
    await core.store.create(ended);

    const gone = await getTask(core, base.owner, base.id, 'FULL');
    expect(gone.logs?.[0]?.system_logs).toContain('the stored result is no longer there');

    await core.objects.put(resultKeys(base.id).manifest, '{not json');
    const garbled = await getTask(core, base.owner, base.id, 'FULL');
    expect((garbled.logs?.[0]?.system_logs as string[] | undefined)?.at(-1)).toMatch(
      /^the stored result could not be read: /,
    );
    // The view still answers, without made-up output.
    expect(garbled.logs?.[0]?.logs).toEqual([
      expect.objectContaining({ exit_code: 0, stdout: '', stderr: '' }),
    ]);
  });
});
