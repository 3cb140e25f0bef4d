// What the process backend keeps on disk about the jobs it runs: one small file per running
// job (its process group and when its first process started), so that a server started after
// a crash can find the groups its predecessor left behind and stop them. The start time, read
// from /proc, tells a job's processes apart from unrelated ones that reuse its numbers later.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

export interface ProcessRecord {
  readonly executionId: string;
  readonly taskId: string;
  /** The job's first process, and the id of its process group. */
  readonly pid: number;
  /** When that process started, in clock ticks since boot (/proc/<pid>/stat field 22); null where there is no /proc. */
  readonly startTime: number | null;
}

interface ProcStat {
  readonly state: string;
  readonly pgrp: number;
  readonly startTime: number;
}

/** A process's state, group and start time, or undefined if it is gone (or there is no /proc). */
export function procStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // The command name, in parentheses, may itself hold spaces and parentheses.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '', pgrp: Number(fields[2]), startTime: Number(fields[19]) };
}

/**
 * The live processes of a recorded job's group: in the group, and started no earlier than its
 * first process (a later, unrelated group cannot reuse the number while any of these live).
 * Zombies are dead and count as gone.
 */
export function groupMembers(record: Pick<ProcessRecord, 'pid' | 'startTime'>): number[] {
  if (record.startTime === null) return [];
  const members: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const stat = procStat(pid);
    if (stat === undefined || stat.state === 'Z') continue;
    if (stat.pgrp === record.pid && stat.startTime >= record.startTime) members.push(pid);
  }
  return members;
}

export class ProcessRecords {
  constructor(private readonly dir: string) {}

  /** Records a job's process; synchronous, so it is on disk before the job is reported RUNNING. */
  write(executionId: string, taskId: string, pid: number): void {
    const record: ProcessRecord = { executionId, taskId, pid, startTime: procStat(pid)?.startTime ?? null };
    fs.mkdirSync(this.dir, { recursive: true });
    const file = this.fileOf(executionId);
    fs.writeFileSync(`${file}.tmp`, JSON.stringify(record));
    fs.renameSync(`${file}.tmp`, file);
  }

  remove(executionId: string): void {
    fs.rmSync(this.fileOf(executionId), { force: true });
  }

  /** Every job recorded, and the files that could not be read (left by a crash mid-write). */
  async readAll(): Promise<{ records: ProcessRecord[]; unreadable: string[] }> {
    let names: string[];
    try {
      names = await fsp.readdir(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], unreadable: [] };
      throw error;
    }
    const records: ProcessRecord[] = [];
    const unreadable: string[] = [];
    for (const name of names) {
      const file = path.join(this.dir, name);
      if (!name.endsWith('.json')) {
        unreadable.push(file);
        continue;
      }
      try {
        records.push(JSON.parse(await fsp.readFile(file, 'utf8')) as ProcessRecord);
      } catch {
        unreadable.push(file);
      }
    }
    return { records, unreadable };
  }

  private fileOf(executionId: string): string {
    return path.join(this.dir, `${executionId}.json`);
  }
}
