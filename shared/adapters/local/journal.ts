// A map that survives restart: every change is appended to a JSON-lines journal before
// the call returns, and the journal is compacted into a snapshot when it grows.
import fsp from 'node:fs/promises';
import path from 'node:path';

interface Entry<T> {
  readonly k: string;
  readonly v?: T;
}

export class JournalMap<T> {
  private readonly entries = new Map<string, T>();
  private linesWritten = 0;
  private writing: Promise<void> = Promise.resolve();
  private handle: fsp.FileHandle | undefined;

  private constructor(private readonly file: string) {}

  static async open<T>(file: string): Promise<JournalMap<T>> {
    const map = new JournalMap<T>(file);
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await map.load();
    await map.compact();
    return map;
  }

  private async load(): Promise<void> {
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    for (const line of text.split('\n')) {
      if (line === '') continue;
      let entry: Entry<T>;
      try {
        entry = JSON.parse(line) as Entry<T>;
      } catch {
        // A line cut short by a crash mid-append: everything before it is intact.
        continue;
      }
      if (entry.v === undefined) this.entries.delete(entry.k);
      else this.entries.set(entry.k, entry.v);
    }
  }

  get(key: string): T | undefined {
    return this.entries.get(key);
  }

  values(): IterableIterator<T> {
    return this.entries.values();
  }

  get size(): number {
    return this.entries.size;
  }

  /** Sets in memory at once (so readers see it), and resolves once the journal has it. */
  set(key: string, value: T): Promise<void> {
    this.entries.set(key, value);
    return this.append({ k: key, v: value });
  }

  delete(key: string): Promise<void> {
    this.entries.delete(key);
    return this.append({ k: key });
  }

  private append(entry: Entry<T>): Promise<void> {
    const line = `${JSON.stringify(entry)}\n`;
    const next = this.writing.then(async () => {
      // Resolved only after the write call returns: the line is in the kernel and survives a
      // killed process.
      this.handle ??= await fsp.open(this.file, 'a');
      await this.handle.write(line);
      this.linesWritten++;
      if (this.linesWritten > 2000 && this.linesWritten > this.entries.size * 4) await this.compact();
    });
    // One failed write must not fail every write after it.
    this.writing = next.catch(() => undefined);
    return next;
  }

  /** Rewrites the journal as one line a key, atomically (temp file, then rename). */
  private async compact(): Promise<void> {
    await this.closeHandle();
    const temp = `${this.file}.${process.pid}.tmp`;
    const lines = [...this.entries].map(([k, v]) => `${JSON.stringify({ k, v })}\n`).join('');
    await fsp.writeFile(temp, lines);
    await fsp.rename(temp, this.file);
    this.linesWritten = this.entries.size;
  }

  private async closeHandle(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }

  async close(): Promise<void> {
    await this.writing;
    await this.closeHandle();
  }
}
