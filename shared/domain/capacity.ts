// Capacity: may a queued job launch now? Jobs that do not fit stay queued and smaller
// ones may pass them (backfill), but a job that has waited past the starvation bound
// reserves what it needs, so a stream of small jobs can never hold it back forever.
// Among jobs that fit, a higher priority goes first; age past the bound beats priority.

export interface CapacityLimits {
  readonly maxConcurrency: number;
  readonly maxCpu: number;
  readonly maxMemoryMiB: number;
  readonly starvationSeconds: number;
}

export interface Demand {
  readonly executionId: string;
  readonly cpu: number;
  readonly memoryMiB: number;
  /** When it joined the queue (for waiting jobs) — the basis of fairness. */
  readonly queuedAt: string;
  /** When it must end at the latest (for active jobs) — the bound of wait estimates. */
  readonly deadlineAt?: string;
  /** When it started running (for active jobs) — the basis of the expected wait. */
  readonly startedAt?: string;
  /** Higher goes first among waiting jobs that fit; 0 when not given. */
  readonly priority?: number;
}

export interface Usage {
  /** Jobs holding capacity: launching or running (none listed when `held` sums them). */
  readonly active: readonly Demand[];
  /** What the active jobs hold together, when they are not listed: the ledger's totals. */
  readonly held?: { readonly jobs: number; readonly cpu: number; readonly memoryMiB: number };
  /**
   * Jobs queued, in any order: all of them, or only the head of the queue (the highest
   * priorities), so a decision costs the same however long the queue is.
   */
  readonly waiting: readonly Demand[];
  /** The job queued longest, when `waiting` may not hold it. */
  readonly oldestWaiting?: Demand;
  /** How many jobs are queued, when `waiting` may not hold them all. */
  readonly queuedJobs?: number;
}

/** What holds a job back: too little free capacity, a job of higher priority, or a reservation. */
export type WaitCause = 'capacity' | 'priority' | 'reservation';

export type LaunchDecision =
  | { readonly launch: true }
  | {
      readonly launch: false;
      readonly cause: WaitCause;
      readonly reason: string;
      readonly reservedFor?: string;
    };

interface Room {
  slots: number;
  cpu: number;
  memoryMiB: number;
}

const EPSILON = 1e-9;

function roomLeft(limits: CapacityLimits, active: readonly Demand[], held?: Usage['held']): Room {
  return {
    slots: limits.maxConcurrency - active.length - (held?.jobs ?? 0),
    cpu: limits.maxCpu - active.reduce((sum, d) => sum + d.cpu, 0) - (held?.cpu ?? 0),
    memoryMiB: limits.maxMemoryMiB - active.reduce((sum, d) => sum + d.memoryMiB, 0) - (held?.memoryMiB ?? 0),
  };
}

const fits = (demand: Pick<Demand, 'cpu' | 'memoryMiB'>, room: Room): boolean =>
  room.slots >= 1 && demand.cpu <= room.cpu + EPSILON && demand.memoryMiB <= room.memoryMiB + EPSILON;

const minus = (room: Room, demand: Pick<Demand, 'cpu' | 'memoryMiB'>): Room => ({
  slots: room.slots - 1,
  cpu: room.cpu - demand.cpu,
  memoryMiB: room.memoryMiB - demand.memoryMiB,
});

const byAge = (a: Demand, b: Demand): number =>
  a.queuedAt === b.queuedAt ? a.executionId.localeCompare(b.executionId) : a.queuedAt < b.queuedAt ? -1 : 1;

/** The oldest job that has waited past the starvation bound: it holds the reservation. */
export function reservationHolder(usage: Usage, limits: CapacityLimits, now: Date): Demand | undefined {
  const bound = now.getTime() - limits.starvationSeconds * 1000;
  const oldest = usage.oldestWaiting ?? [...usage.waiting].sort(byAge)[0];
  return oldest !== undefined && Date.parse(oldest.queuedAt) <= bound ? oldest : undefined;
}

export function decideLaunch(
  candidate: Demand,
  usage: Usage,
  limits: CapacityLimits,
  now: Date,
): LaunchDecision {
  const active = usage.active.filter((d) => d.executionId !== candidate.executionId);
  const room = roomLeft(limits, active, usage.held);
  const holder = reservationHolder(usage, limits, now);
  const reserved = holder !== undefined && holder.executionId !== candidate.executionId ? holder : undefined;
  const available = reserved === undefined ? room : minus(room, reserved);
  if (fits(candidate, available)) {
    const first = usage.waiting.find(
      (d) =>
        d.executionId !== candidate.executionId &&
        d.executionId !== reserved?.executionId &&
        (d.priority ?? 0) > (candidate.priority ?? 0) &&
        fits(d, available),
    );
    if (first === undefined || holder?.executionId === candidate.executionId) return { launch: true };
    return {
      launch: false,
      cause: 'priority',
      reason: `${first.executionId} (priority ${first.priority}) fits the free capacity and goes first`,
    };
  }

  const want = `${candidate.cpu} vCPU, ${candidate.memoryMiB} MiB`;
  const free = `${round(room.cpu)} vCPU, ${Math.max(0, Math.floor(room.memoryMiB))} MiB and ${Math.max(0, room.slots)} of ${limits.maxConcurrency} slots free`;
  if (reserved !== undefined && fits(candidate, room)) {
    return {
      launch: false,
      cause: 'reservation',
      reason: `needs ${want}; ${free}, but capacity is reserved for ${reserved.executionId}, queued since ${reserved.queuedAt}`,
      reservedFor: reserved.executionId,
    };
  }
  return { launch: false, cause: 'capacity', reason: `needs ${want}; ${free}` };
}

/**
 * Seconds until the candidate could start if every active job ran to its deadline:
 * an upper bound, 0 when it fits now.
 */
/** A job that has run this short is expected to need at least this much more. */
const MIN_EXPECTED_REMAINING_MS = 5000;

/**
 * When an active job is expected to end: it runs about as long again as it has so far (for a
 * run whose length is unknown, as likely shorter as longer), at least a few seconds more, and
 * never past its deadline.
 */
export function expectedEnd(demand: Demand, now: Date): string | undefined {
  if (demand.deadlineAt === undefined) return undefined;
  const deadline = Date.parse(demand.deadlineAt);
  const started = demand.startedAt === undefined ? now.getTime() : Date.parse(demand.startedAt);
  const remaining = Math.max(MIN_EXPECTED_REMAINING_MS, now.getTime() - started);
  return new Date(Math.min(deadline, now.getTime() + remaining)).toISOString();
}

/**
 * Seconds before `candidate` fits: `expected` from how long the running jobs have run (see
 * expectedEnd), `atMost` if every one of them uses its whole timeout.
 */
export function estimateWait(
  candidate: Pick<Demand, 'cpu' | 'memoryMiB'>,
  usage: Usage,
  limits: CapacityLimits,
  now: Date,
): { expected: number; atMost: number } {
  const expectedActive = usage.active.map((d) => {
    const end = expectedEnd(d, now);
    return end === undefined ? d : { ...d, deadlineAt: end };
  });
  return {
    expected: estimateWaitSeconds(candidate, { ...usage, active: expectedActive }, limits, now),
    atMost: estimateWaitSeconds(candidate, usage, limits, now),
  };
}

export function estimateWaitSeconds(
  candidate: Pick<Demand, 'cpu' | 'memoryMiB'>,
  usage: Usage,
  limits: CapacityLimits,
  now: Date,
): number {
  let room = roomLeft(limits, usage.active, usage.held);
  // Jobs already waiting go first (roughly; backfill may reorder, and only the head of a
  // long queue is counted).
  for (const waiting of usage.waiting) room = minus(room, waiting);
  if (fits(candidate, room)) return 0;
  const ending = [...usage.active]
    .filter((d) => d.deadlineAt !== undefined)
    .sort((a, b) => Date.parse(a.deadlineAt ?? '') - Date.parse(b.deadlineAt ?? ''));
  for (const done of ending) {
    room = { slots: room.slots + 1, cpu: room.cpu + done.cpu, memoryMiB: room.memoryMiB + done.memoryMiB };
    if (fits(candidate, room)) {
      return Math.max(0, Math.ceil((Date.parse(done.deadlineAt ?? '') - now.getTime()) / 1000));
    }
  }
  // Queued jobs hold no deadline yet; count each as one more round of the longest deadline.
  const longest = ending.at(-1)?.deadlineAt;
  return longest === undefined ? 0 : Math.max(0, Math.ceil((Date.parse(longest) - now.getTime()) / 1000));
}

const round = (n: number): number => Math.round(n * 1000) / 1000;
