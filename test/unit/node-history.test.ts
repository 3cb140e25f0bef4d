// The node's recent past, as both stores keep it: a sample a minute (the last one of a minute
// wins), read back oldest first from a time on, nothing kept past a few hours.
import { describe, expect, it } from 'vitest';
import { LocalDatabase } from '../../shared/adapters/local/database.ts';
import { SqliteNodeHistory } from '../../shared/adapters/local/sqlite-history.ts';
import { describeNode } from '../../shared/use-cases/node.ts';
import { sweep } from '../../shared/use-cases/sweep.ts';
import { buildTestCore } from '../support/core.ts';
import { tempDir } from '../support/server.ts';

const at = (minutes: number, seconds = 0) =>
  new Date(Date.UTC(2030, 0, 1, 12, minutes, seconds)).toISOString();

describe('the node history in the local database', () => {
  it('keeps one sample a minute, the last of it, and reads from a time on, oldest first', async () => {
    const history = new SqliteNodeHistory(LocalDatabase.open(await tempDir()));
    await history.record({ at: at(0, 5), runningJobs: 1, queuedJobs: 4 });
    await history.record({ at: at(0, 40), runningJobs: 2, queuedJobs: 3 });
    await history.record({ at: at(1, 10), runningJobs: 2, queuedJobs: 0 });
    expect(await history.since(new Date(at(0)))).toEqual([
      { at: at(0, 40), runningJobs: 2, queuedJobs: 3 },
      { at: at(1, 10), runningJobs: 2, queuedJobs: 0 },
    ]);
    expect(await history.since(new Date(at(1)))).toHaveLength(1);
    // Hours later the old samples are gone.
    await history.record({
      at: new Date(Date.parse(at(1)) + 4 * 3600_000).toISOString(),
      runningJobs: 0,
      queuedJobs: 0,
    });
    expect(await history.since(new Date(at(0)))).toHaveLength(1);
  });

  it('is recorded by the sweeper and read back by the node’s description', async () => {
    const { core, now } = await buildTestCore();
    const history = new SqliteNodeHistory(LocalDatabase.open(await tempDir()));
    const withHistory = { ...core, history };
    await sweep(withHistory);
    now.value = new Date(now.value.getTime() + 61_000);
    await sweep(withHistory);
    const node = await describeNode(withHistory);
    expect(node.history).toHaveLength(2);
    expect(node.history[0]).toMatchObject({ runningJobs: 0, queuedJobs: 0 });
    // An hour later they are out of the window the description shows.
    now.value = new Date(now.value.getTime() + 3700_000);
    expect((await describeNode(withHistory)).history).toEqual([]);
  });
});
