// The sweeper handler: a scheduled event runs one sweep.
import middy from '@middy/core';
import type { ScheduledEvent } from 'aws-lambda';
import type { Core } from '#shared/core.ts';
import { type SweepReport, sweep } from '#shared/use-cases/sweep.ts';

export function createSweeperHandler(core: Core) {
  return middy<ScheduledEvent | Record<string, never>, SweepReport>().handler(async () => {
    const report = await sweep(core);
    if (Object.values(report).some((n) => n > 0)) core.log.info('sweep', { ...report });
    return report;
  });
}
