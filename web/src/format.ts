// How the dashboard writes times, durations and sizes: short, and the same everywhere.

export function ago(at: string | undefined, now = Date.now()): string {
  if (at === undefined) return '';
  return `${duration(now - Date.parse(at))} ago`;
}

export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '';
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${seconds % 60}s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h ${minutes % 60}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

/** How long a run took, or has taken so far. */
export function runTime(
  startedAt: string | undefined,
  endedAt: string | undefined,
  now = Date.now(),
): string {
  if (startedAt === undefined) return '';
  return duration((endedAt === undefined ? now : Date.parse(endedAt)) - Date.parse(startedAt));
}

export function bytes(count: number): string {
  if (count < 1024) return `${count} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = count / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export const usd = (value: number): string =>
  value < 0.01 ? `$${value.toFixed(4)}` : `$${value.toFixed(value < 1 ? 3 : 2)}`;

/** A command as a person would type it: words with spaces or quotes quoted. */
export function commandLine(argv: readonly string[]): string {
  return argv
    .map((word) => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`))
    .join(' ');
}
