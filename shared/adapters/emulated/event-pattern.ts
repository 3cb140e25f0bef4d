// EventBridge's event-pattern matching, for the emulated deployment's rules: every field the
// pattern names must match; a list matches when any of its items does; items are exact values
// or the content filters Ferry's rules and users' rules commonly use (prefix, suffix,
// anything-but, exists, numeric). A pattern is matched as written in the synthesized template.

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export function matchesPattern(pattern: Json, event: Json): boolean {
  if (pattern === null || typeof pattern !== 'object' || Array.isArray(pattern)) {
    throw new Error('an event pattern is an object of fields');
  }
  return Object.entries(pattern).every(([field, expected]) => {
    const value =
      event !== null && typeof event === 'object' && !Array.isArray(event) ? event[field] : undefined;
    if (Array.isArray(expected)) return matchesAny(expected, value);
    return value !== undefined && matchesPattern(expected, value);
  });
}

/** A field matches when any of the pattern's items matches it (or any item of it, for a list). */
function matchesAny(items: Json[], value: Json | undefined): boolean {
  const values = Array.isArray(value) ? value : [value];
  return items.some((item) => {
    if (item !== null && typeof item === 'object' && !Array.isArray(item) && 'exists' in item) {
      return item.exists === (value !== undefined);
    }
    return values.some((v) => v !== undefined && matchesItem(item, v));
  });
}

function matchesItem(item: Json, value: Json): boolean {
  if (item === null || typeof item !== 'object') return item === value;
  if (Array.isArray(item)) return false;
  const [filter, argument] = Object.entries(item)[0] ?? [];
  switch (filter) {
    case 'prefix':
      return typeof value === 'string' && typeof argument === 'string' && value.startsWith(argument);
    case 'suffix':
      return typeof value === 'string' && typeof argument === 'string' && value.endsWith(argument);
    case 'anything-but': {
      const excluded = Array.isArray(argument) ? argument : [argument ?? null];
      return !excluded.some((x) => matchesItem(x, value));
    }
    case 'numeric':
      return typeof value === 'number' && Array.isArray(argument) && numeric(argument, value);
    default:
      throw new Error(`event pattern filter ${String(filter)} is not supported by the emulator`);
  }
}

function numeric(conditions: Json[], value: number): boolean {
  for (let i = 0; i + 1 < conditions.length; i += 2) {
    const bound = Number(conditions[i + 1]);
    const ok =
      conditions[i] === '<'
        ? value < bound
        : conditions[i] === '<='
          ? value <= bound
          : conditions[i] === '>'
            ? value > bound
            : conditions[i] === '>='
              ? value >= bound
              : conditions[i] === '='
                ? value === bound
                : false;
    if (!ok) return false;
  }
  return true;
}

/** Milliseconds between runs of a `rate(…)` schedule expression. */
export function rateMs(expression: string): number {
  const match = /^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$/.exec(expression);
  if (match === null) throw new Error(`schedule ${expression}: only rate(…) is supported by the emulator`);
  const unit = match[2]?.startsWith('minute')
    ? 60_000
    : match[2]?.startsWith('hour')
      ? 3_600_000
      : 86_400_000;
  return Number(match[1]) * unit;
}
