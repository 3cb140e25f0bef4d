// The node's recent past in the local database: one row per minute (the last sample of that
// minute wins), and nothing older than a few hours.
import type { NodeHistory, NodeSample } from '../../ports.ts';
import type { LocalDatabase } from './database.ts';

const MINUTE_MS = 60_000;
/** How much of the past is kept: more than the hour a chart shows. */
export const HISTORY_KEPT_MS = 3 * 3600_000;

export class SqliteNodeHistory implements NodeHistory {
  constructor(private readonly database: LocalDatabase) {}

  async record(sample: NodeSample): Promise<void> {
    const at = Date.parse(sample.at);
    this.database.write(() => {
      this.database.db
        .prepare(
          'INSERT INTO node_samples (minute, at, running, queued) VALUES (?, ?, ?, ?) ' +
            'ON CONFLICT (minute) DO UPDATE SET at = excluded.at, running = excluded.running, queued = excluded.queued',
        )
        .run(Math.floor(at / MINUTE_MS), at, sample.runningJobs, sample.queuedJobs);
      this.database.db
        .prepare('DELETE FROM node_samples WHERE minute < ?')
        .run(Math.floor((at - HISTORY_KEPT_MS) / MINUTE_MS));
    });
  }

  async since(since: Date): Promise<readonly NodeSample[]> {
    const rows = this.database.read(
      () =>
        this.database.db
          .prepare('SELECT at, running, queued FROM node_samples WHERE at >= ? ORDER BY minute')
          .all(since.getTime()) as { at: number; running: number; queued: number }[],
    );
    return rows.map((row) => ({
      at: new Date(row.at).toISOString(),
      runningJobs: row.running,
      queuedJobs: row.queued,
    }));
  }
}
