// The schedules of the stack's rules, which the emulated deployment runs on a clock of its own
// (tests may run a sweep at once instead of waiting for it).

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
