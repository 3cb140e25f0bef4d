// Dispatch on the emulated deployment: SQS's at-least-once delivery and a burst of jobs
// through the dispatcher's capped event source, with real containers. Nothing may run twice,
// nothing may land in a dead-letter queue, and the capacity ledger ends empty.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Execution } from '../../shared/domain/execution.ts';
import { describeDenials, type Harness, startHarness } from '../support/emulated-aws.ts';

if (!inject('dockerAvailable') && process.env.CI === 'true') {
  throw new Error('CI=true but no Docker Engine: the emulated deployment cannot run tasks');
}

const image = inject('testImage');
let h: Harness;

beforeAll(async () => {
  h = await startHarness();
}, 180_000);
afterAll(async () => {
  await h?.close();
});

describe.skipIf(!inject('dockerAvailable'))('dispatch through the deployed event source', () => {
  it('launches one task for a message delivered three times at once', async () => {
    const [poller] = h.deployment.pollers;
    if (poller === undefined) throw new Error('the stack has no SQS event source');
    poller.duplicates = 2;
    try {
      const submitted = await h.submit({ image, command: ['echo', 'once'] });
      const done = await h.waitFor(submitted.id);
      expect(done.state).toBe('COMPLETED');
      expect(h.deployment.realiser?.tasksStartedBy(submitted.id)).toHaveLength(1);
    } finally {
      poller.duplicates = 0;
    }
    await h.expectLedgerEmpty();
  });

  it('takes the CLI signed with SigV4 to the end, as a user on AWS would', async () => {
    const caller = h.deployment.addCaller('cli-user');
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        'bin/ferry.js',
        'submit',
        '--wait',
        '--sigv4',
        '--region',
        'us-east-1',
        '--image',
        image,
        '--',
        'echo',
        'signed',
      ],
      {
        env: {
          PATH: process.env.PATH ?? '',
          FERRY_URL: h.deployment.apiUrl,
          AWS_ACCESS_KEY_ID: caller.accessKeyId,
          AWS_SECRET_ACCESS_KEY: caller.secretAccessKey,
        },
      },
    );
    expect(stdout).toBe('signed\n');
    const unknown = { ...caller, accessKeyId: 'AKIANOSUCHKEY0000000' };
    const refused = await h
      .clientFor(unknown)
      .json('GET', '/v1/node')
      .catch((error: { status?: number }) => error);
    expect((refused as { status?: number }).status).toBe(403);
    await h.expectLedgerEmpty();
  });

  it('runs 200 jobs submitted at once: all finish, none dead-lettered, capacity returned', async () => {
    const count = 200;
    const since = h.deployment.calls.length;
    const submitted: Execution[] = [];
    for (let i = 0; i < count; i += 10) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(10, count - i) }, (_, j) =>
          h.submit({ image, command: ['echo', String(i + j)] }),
        ),
      );
      submitted.push(...batch);
    }
    // One waiter at a time: 200 callers polling at once would be a load test of the API instead.
    const ended: Execution[] = [];
    for (const s of submitted) ended.push(await h.waitFor(s.id, undefined, 600_000));
    expect(ended.map((e) => e.state).filter((s) => s !== 'COMPLETED')).toEqual([]);
    expect(await h.deadLetterDepth(/^ExecutorDeadLetters[0-9A-F]+$/)).toBe(0);
    expect(await h.deadLetterDepth(/^ExecutorTaskEventDeadLetters[0-9A-F]+$/)).toBe(0);
    expect(h.deployment.deadLetters).toEqual([]);
    await h.expectLedgerEmpty(60_000);
    const denied = h.denied(since);
    expect(denied, describeDenials(denied)).toEqual([]);
  }, 900_000);
});
