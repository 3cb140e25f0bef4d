// The local executor's database: one SQLite file per data directory, held by one server at a
// time. This module owns the file: opening it, the exclusive hold, the schema and its
// migrations, the check for damage at open, the one-time import of the older JSON-lines
// journals, and the translation of SQLite's storage errors into Ferry's.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { StorageUnavailable } from '../../errors.ts';

export const DATABASE_FILE = 'ferry.db';

/** A start-up refusal: the message is the one line the operator sees. */
export class DatabaseRefused extends Error {}

/** A queued record's priority and queue time, as the queue indexes and their queries spell them. */
export const QUEUE_PRIORITY = "coalesce(json_extract(body, '$.spec.priority'), 0)";
export const QUEUED_AT = "coalesce(json_extract(body, '$.queuedAt'), created_at)";

/** The schema, one entry per version; `user_version` says how many have been applied. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE executions (
     id TEXT PRIMARY KEY,
     owner TEXT NOT NULL,
     state TEXT NOT NULL,
     created_at TEXT NOT NULL,
     version INTEGER NOT NULL,
     body TEXT NOT NULL,
     digest TEXT NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX executions_newest ON executions (created_at DESC, id DESC);
   CREATE INDEX executions_owner ON executions (owner, created_at DESC, id DESC);
   CREATE INDEX executions_state ON executions (state, created_at DESC, id DESC);
   CREATE TABLE idempotency (
     key TEXT PRIMARY KEY,
     state TEXT NOT NULL,
     expires_at INTEGER NOT NULL,
     body TEXT NOT NULL
   ) WITHOUT ROWID;
   CREATE TABLE queue (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     message_id TEXT NOT NULL UNIQUE,
     execution_id TEXT NOT NULL,
     body TEXT NOT NULL,
     sent_at INTEGER NOT NULL,
     visible_at INTEGER NOT NULL,
     receive_count INTEGER NOT NULL DEFAULT 0,
     receipt_handle TEXT UNIQUE
   );
   CREATE INDEX queue_visible ON queue (visible_at, sent_at, seq);
   CREATE INDEX queue_execution ON queue (execution_id);
   CREATE TABLE dead_letters (
     message_id TEXT PRIMARY KEY,
     body TEXT NOT NULL,
     sent_at INTEGER NOT NULL,
     receive_count INTEGER NOT NULL,
     dead_at INTEGER NOT NULL
   );`,
  'CREATE INDEX idempotency_expiry ON idempotency (expires_at);',
  // The head of the queue, so a dispatch reads a few records however long the queue is.
  `CREATE INDEX executions_queue_priority ON executions (${QUEUE_PRIORITY} DESC, ${QUEUED_AT}, id)
     WHERE state = 'QUEUED';
   CREATE INDEX executions_queue_age ON executions (${QUEUED_AT}, id) WHERE state = 'QUEUED';`,
  // The queue's length, kept by triggers in the transaction of every write that moves a record
  // into or out of QUEUED, so reading it costs one row however long the queue is.
  `CREATE TABLE queue_length (
     id INTEGER PRIMARY KEY CHECK (id = 1),
     jobs INTEGER NOT NULL CHECK (jobs >= 0)
   );
   INSERT INTO queue_length (id, jobs) SELECT 1, count(*) FROM executions WHERE state = 'QUEUED';
   CREATE TRIGGER executions_queued_in AFTER INSERT ON executions WHEN new.state = 'QUEUED'
   BEGIN UPDATE queue_length SET jobs = jobs + 1; END;
   CREATE TRIGGER executions_queued_moved AFTER UPDATE OF state ON executions
     WHEN (old.state = 'QUEUED') <> (new.state = 'QUEUED')
   BEGIN UPDATE queue_length SET jobs = jobs + (new.state = 'QUEUED') - (old.state = 'QUEUED'); END;
   CREATE TRIGGER executions_queued_out AFTER DELETE ON executions WHEN old.state = 'QUEUED'
   BEGIN UPDATE queue_length SET jobs = jobs - 1; END;`,
  // What ran and waited, a sample a minute, for the dashboard's chart of the last hour.
  `CREATE TABLE node_samples (
     minute INTEGER PRIMARY KEY,
     at INTEGER NOT NULL,
     running INTEGER NOT NULL,
     queued INTEGER NOT NULL
   );`,
];

/** A digest of a stored record, so a damaged byte that still parses is caught, not believed. */
export const digestOf = (body: string): string =>
  createHash('sha256').update(body).digest('hex').slice(0, 32);

const STORAGE_CODES = /^SQLITE_(READONLY|FULL|IOERR|CANTOPEN|PERM)/;
const DAMAGE_CODES = /^SQLITE_(CORRUPT|NOTADB)/;

export class LocalDatabase {
  private constructor(
    readonly db: Database.Database,
    /** The database file, for messages. */
    readonly file: string,
  ) {}

  /**
   * Opens (or creates) the database of `dataDir` and holds it exclusively until close or
   * until the process dies (SQLite's lock goes with the process, so it never goes stale).
   */
  static open(dataDir: string): LocalDatabase {
    const file = path.join(dataDir, DATABASE_FILE);
    let db: Database.Database;
    try {
      db = new Database(file, { timeout: 0 });
    } catch (error) {
      throw refusal(file, dataDir, error);
    }
    try {
      // Exclusive before WAL: the WAL index then lives in this process's memory, and the
      // first write below takes a lock no other process can share while this one lives.
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = WAL');
      // FULL: a commit is on disk before the reply, so a job answered 202 survives a power
      // cut, not only a crash of the process (NORMAL would keep only the latter promise).
      db.pragma('synchronous = FULL');
      db.exec('BEGIN EXCLUSIVE; COMMIT;');
      const check = (db.pragma('integrity_check(3)') as { integrity_check: string }[])
        .map((row) => row.integrity_check)
        .join('; ');
      if (check !== 'ok') {
        const found = check
          .replace(/\*\*\* in database main \*\*\*/g, '')
          .replace(/\s+/g, ' ')
          .trim();
        throw new DatabaseRefused(
          `the database ${file} is damaged (${found.slice(0, 200)}); restore it from a backup, or move it aside to start empty`,
        );
      }
      const database = new LocalDatabase(db, file);
      database.migrate();
      importJournals(database, dataDir);
      database.verifyRecords();
      return database;
    } catch (error) {
      db.close();
      throw refusal(file, dataDir, error);
    }
  }

  /** Runs `work` in one transaction; storage failures become StorageUnavailable, nothing half-done stays. */
  write<T>(work: () => T): T {
    try {
      return this.db.transaction(work).immediate();
    } catch (error) {
      throw this.translate(error);
    }
  }

  read<T>(work: () => T): T {
    try {
      return work();
    } catch (error) {
      throw this.translate(error);
    }
  }

  /** A stored record, checked against its digest; a damaged one is an error naming the file and id. */
  decode<T>(id: string, body: string, digest: string): T {
    if (digestOf(body) !== digest) throw this.damaged(id);
    return this.parse<T>(id, body);
  }

  /** A stored JSON body; one that does not parse is an error naming the file and id, never skipped. */
  parse<T>(id: string, body: string): T {
    try {
      return JSON.parse(body) as T;
    } catch (error) {
      throw this.damaged(id, error);
    }
  }

  private damaged(id: string, cause?: unknown): Error {
    return new DatabaseRefused(
      `the record ${id} in ${this.file} is damaged; restore the database from a backup, or move it aside`,
      { cause },
    );
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  private translate(error: unknown): unknown {
    const code = (error as { code?: unknown }).code;
    if (typeof code !== 'string') return error;
    if (STORAGE_CODES.test(code)) {
      return new StorageUnavailable(
        'the data directory cannot be written (read-only or full); the change was not made',
        { cause: error },
      );
    }
    if (DAMAGE_CODES.test(code)) {
      return new Error(`the database ${this.file} is damaged: ${(error as Error).message}`, { cause: error });
    }
    return error;
  }

  private migrate(): void {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    if (current > MIGRATIONS.length) {
      throw new DatabaseRefused(
        `the database ${this.file} was written by a newer Ferry (schema ${current}); upgrade Ferry to use it`,
      );
    }
    this.db.transaction(() => {
      for (const [index, sql] of MIGRATIONS.entries()) {
        if (index < current) continue;
        this.db.exec(sql);
      }
      this.db.pragma(`user_version = ${MIGRATIONS.length}`);
    })();
  }

  /**
   * Reads every record once: one that is damaged refuses the start instead of vanishing later.
   * The queue length, which only mirrors the records, is set to what they say if it differs.
   */
  private verifyRecords(): void {
    const rows = this.db
      .prepare('SELECT id, owner, state, created_at, version, body, digest FROM executions')
      .iterate() as Iterable<ExecutionRow>;
    let queued = 0;
    for (const row of rows) {
      if (row.state === 'QUEUED') queued += 1;
      const record = this.decode<{
        id: string;
        owner: string;
        state: string;
        createdAt: string;
        version: number;
      }>(row.id, row.body, row.digest);
      if (
        record.id !== row.id ||
        record.owner !== row.owner ||
        record.state !== row.state ||
        record.createdAt !== row.created_at ||
        record.version !== row.version
      ) {
        throw new DatabaseRefused(
          `the record ${row.id} in ${this.file} is damaged (its columns disagree with its body); restore the database from a backup, or move it aside`,
        );
      }
    }
    const kept = this.db.prepare('SELECT jobs FROM queue_length WHERE id = 1').get() as { jobs: number };
    if (kept.jobs !== queued) this.db.prepare('UPDATE queue_length SET jobs = ? WHERE id = 1').run(queued);
  }
}

/** What an execution's row holds, in the column order of `INSERT INTO executions`. */
export interface StoredExecution {
  readonly id: string;
  readonly owner: string;
  readonly state: string;
  readonly createdAt: string;
  readonly version: number;
}

/** The values of an `INSERT INTO executions (id, owner, state, created_at, version, body, digest)`. */
export function executionRowValues(
  execution: StoredExecution,
): [string, string, string, string, number, string, string] {
  const body = JSON.stringify(execution);
  return [
    execution.id,
    execution.owner,
    execution.state,
    execution.createdAt,
    execution.version,
    body,
    digestOf(body),
  ];
}

export interface ExecutionRow {
  readonly id: string;
  readonly owner: string;
  readonly state: string;
  readonly created_at: string;
  readonly version: number;
  readonly body: string;
  readonly digest: string;
}

function refusal(file: string, dataDir: string, error: unknown): Error {
  if (error instanceof DatabaseRefused) return error;
  const code = (error as { code?: unknown }).code;
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
    return new DatabaseRefused(
      `another Ferry server is using the data directory ${dataDir}; stop it, or set FERRY_DATA_DIR to another directory`,
    );
  }
  if (typeof code === 'string' && DAMAGE_CODES.test(code)) {
    return new DatabaseRefused(
      `the database ${file} is damaged (${(error as Error).message}); restore it from a backup, or move it aside to start empty`,
    );
  }
  if (typeof code === 'string' && STORAGE_CODES.test(code)) {
    return new DatabaseRefused(
      `cannot write the database ${file} (${(error as Error).message}); make FERRY_DATA_DIR writable or point it elsewhere`,
    );
  }
  return error instanceof Error ? error : new Error(String(error));
}

/**
 * Data directories written by earlier versions kept executions and idempotency keys in
 * JSON-lines journals (`{"k": key, "v": value}` per line, the last line for a key winning,
 * no `v` meaning deleted). They are imported once, in one transaction, then renamed to
 * `*.migrated`; a damaged line refuses the start, naming the file and the line.
 */
function importJournals(database: LocalDatabase, dataDir: string): void {
  const executionsFile = path.join(dataDir, 'executions.jsonl');
  const idempotencyFile = path.join(dataDir, 'idempotency.jsonl');
  const executions = readJournal(executionsFile);
  const keys = readJournal(idempotencyFile);
  if (executions === undefined && keys === undefined) return;
  const { db } = database;
  // OR IGNORE: if a crash came between this commit and the renames below, the next start
  // imports again and must not put the journal's older versions over newer records.
  const insertExecution = db.prepare(
    'INSERT OR IGNORE INTO executions (id, owner, state, created_at, version, body, digest) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );
  const insertKey = db.prepare(
    'INSERT OR IGNORE INTO idempotency (key, state, expires_at, body) VALUES (?, ?, ?, ?)',
  );
  db.transaction(() => {
    for (const [id, value] of executions ?? []) {
      const execution = value as {
        id?: unknown;
        owner?: unknown;
        state?: unknown;
        createdAt?: unknown;
        version?: unknown;
      };
      if (
        typeof execution.id !== 'string' ||
        typeof execution.owner !== 'string' ||
        typeof execution.state !== 'string' ||
        typeof execution.createdAt !== 'string' ||
        typeof execution.version !== 'number'
      ) {
        throw new DatabaseRefused(
          `cannot import ${executionsFile}: the record ${id} is not an execution; repair or remove that line, then start again`,
        );
      }
      insertExecution.run(...executionRowValues(execution as StoredExecution));
    }
    for (const [key, value] of keys ?? []) {
      const record = value as { state?: unknown; expiresAt?: unknown };
      // Claims still in progress belonged to the server that wrote the journal, which is gone.
      if (record.state !== 'COMPLETED' || typeof record.expiresAt !== 'string') continue;
      insertKey.run(key, record.state, Date.parse(record.expiresAt), JSON.stringify(value));
    }
  })();
  for (const file of [executionsFile, idempotencyFile]) {
    if (fs.existsSync(file)) fs.renameSync(file, `${file}.migrated`);
  }
}

function readJournal(file: string): Map<string, unknown> | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const entries = new Map<string, unknown>();
  const lines = text.split('\n');
  for (const [index, line] of lines.entries()) {
    if (line === '') continue;
    let entry: { k?: unknown; v?: unknown } | null;
    try {
      entry = JSON.parse(line) as { k?: unknown; v?: unknown } | null;
    } catch {
      entry = null;
    }
    if (entry === null || typeof entry !== 'object' || typeof entry.k !== 'string') {
      // The last line without its newline is an append cut short by a crash: that write was
      // never acknowledged (the journal answered only once the whole line was written).
      if (index === lines.length - 1) break;
      throw new DatabaseRefused(
        `cannot import ${file}: line ${index + 1} is damaged; repair or remove that line, then start again`,
      );
    }
    if (entry.v === undefined) entries.delete(entry.k);
    else entries.set(entry.k, entry.v);
  }
  return entries;
}
