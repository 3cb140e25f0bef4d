// Parsing and printing of sizes. A job may say `memory: 2048`, `"2GiB"` or `"1.5 GB"`;
// Ferry keeps MiB for memory and GiB for disk internally, the units Fargate speaks.

const MULTIPLIERS: Record<string, number> = {
  b: 1,
  k: 1000,
  kb: 1000,
  ki: 1024,
  kib: 1024,
  m: 1000 ** 2,
  mb: 1000 ** 2,
  mi: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1000 ** 3,
  gb: 1000 ** 3,
  gi: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1000 ** 4,
  tb: 1000 ** 4,
  ti: 1024 ** 4,
  tib: 1024 ** 4,
};

/** A size as text: a number and an optional unit (`512MiB`, `1.5 GB`, `2g`); ASCII only. */
export const SIZE_PATTERN = /^[ \t]*([0-9]+(?:\.[0-9]+)?)[ \t]*([bB]|[kKmMgGtT][iI]?[bB]?)?[ \t]*$/;

/**
 * Converts a size to bytes. Bare numbers are read in `defaultUnit` (a multiplier).
 * Returns undefined for text that is not a size, so the schema can report it.
 */
export function parseSize(value: number | string, defaultUnit: number): number | undefined {
  if (typeof value === 'number') {
    return Number.isFinite(value) ? value * defaultUnit : undefined;
  }
  const match = SIZE_PATTERN.exec(value);
  if (!match) return undefined;
  const [, amount = '', unit = ''] = match;
  const multiplier = unit === '' ? defaultUnit : MULTIPLIERS[unit.toLowerCase()];
  if (multiplier === undefined) return undefined;
  return Number(amount) * multiplier;
}

export const MiB = 1024 ** 2;
export const GiB = 1024 ** 3;

/** 1536 → "1.5 GiB"; used in reasons and CLI output so people read sizes, not byte counts. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const text = Number.isInteger(value)
    ? String(value)
    : value.toFixed(value < 10 ? 2 : 1).replace(/\.?0+$/, '');
  return `${text} ${units[unit]}`;
}

export const formatMiB = (mib: number): string => formatBytes(mib * MiB);
