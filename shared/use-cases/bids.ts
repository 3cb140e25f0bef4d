// Bids: ask Ferry what it would run a job on, accept or reject the offer, or do both at once.

import type { Core } from '../core.ts';
import { makeBid } from '../domain/bidding.ts';
import { estimateWait } from '../domain/capacity.ts';
import { sourceAllowed, sourceOf } from '../domain/data-plan.ts';
import type { Execution } from '../domain/execution.ts';
import { imagesOf, parseJobSpec } from '../domain/job-spec.ts';
import type { ReviewBody } from '../domain/review.ts';
import { BidDeclined, IdempotencyConflict, InvalidTransition, NotFound, StaleExecution } from '../errors.ts';
import { messageFor } from './dispatch.ts';
import { moveTo, mutate } from './transitions.ts';
import { currentUsage } from './usage.ts';

/**
 * The request an Idempotency-Key names: `key` identifies it for its owner, `fingerprint` its
 * content. Its execution id comes from the key, so a retry after a crash finds the record
 * the first try stored instead of making a second one.
 */
export interface KeyedRequest {
  readonly key: string;
  readonly fingerprint: string;
}

/** Validates the spec and bids on it: the execution OFFERED or DECLINED, not yet stored. */
async function bidOn(
  core: Core,
  owner: string,
  specInput: unknown,
  request?: KeyedRequest,
): Promise<Execution> {
  const spec = parseJobSpec(specInput, core.settings.policy.maxOutputBytes);
  const now = core.clock.now();
  const usage = await currentUsage(core);
  const { profile } = core.settings;
  const looked = profile.supportsInputs && spec.inputs.length > 0 && core.inputs !== undefined;
  const images = imagesOf(spec);
  const [present, inputSizes] = await Promise.all([
    Promise.all(images.map((image) => profile.imagePresent?.(image) ?? false)),
    // Only sources the policy allows are looked at: a bid never reaches out anywhere else.
    looked
      ? Promise.all(
          spec.inputs.map((input) => {
            const source = sourceOf(input);
            return 'problem' in source || !sourceAllowed(source, core.settings.policy.inputAllow)
              ? {}
              : (core.inputs?.probe(input) ?? {});
          }),
        )
      : undefined,
  ]);
  const bid = makeBid({
    spec,
    policy: core.settings.policy,
    profile,
    facts: {
      presentImages: new Set(images.filter((_, index) => present[index])),
      ...(inputSizes === undefined ? {} : { inputSizes }),
    },
    budget: core.settings.capacity,
    expiresAt: new Date(now.getTime() + core.settings.bidTtlSeconds * 1000).toISOString(),
    queueEstimate: (constraints) => {
      const wait = estimateWait(constraints, usage, core.settings.capacity, now);
      return {
        waitSeconds: wait.expected,
        waitAtMostSeconds: wait.atMost,
        runningJobs: usage.active.length,
        queuedJobs: usage.queuedJobs ?? usage.waiting.length,
      };
    },
  });
  const at = now.toISOString();
  const state = bid.accepted ? 'OFFERED' : 'DECLINED';
  const execution: Execution = {
    id: request === undefined ? core.ids.next() : core.ids.fromKey(request.key),
    owner,
    state,
    version: 1,
    spec,
    bid,
    createdAt: at,
    updatedAt: at,
    deferrals: 0,
    ...(request === undefined ? {} : { requestFingerprint: request.fingerprint }),
    history: [{ state, at, ...(bid.accepted ? {} : { reason: bid.reason }) }],
    ...(bid.accepted ? {} : { reason: bid.reason }),
  };
  return execution;
}

/**
 * Stores a new execution and returns it; for a keyed request stored before (a retry whose
 * first answer was lost), the stored execution instead, however far it got.
 */
async function createOnce(
  core: Core,
  execution: Execution,
  request?: KeyedRequest,
  create: (execution: Execution) => Promise<void> = (e) => core.store.create(e),
): Promise<Execution> {
  try {
    await create(execution);
    return execution;
  } catch (error) {
    if (!(error instanceof StaleExecution) || request === undefined) throw error;
    const stored = await core.store.get(execution.id);
    if (stored === undefined) throw error;
    if (stored.owner !== execution.owner || stored.requestFingerprint !== request.fingerprint) {
      throw new IdempotencyConflict('this Idempotency-Key was used with a different request; use a new key');
    }
    return stored;
  }
}

/** Validates the spec, bids on it and records the execution as OFFERED or DECLINED. */
export async function askForBid(
  core: Core,
  owner: string,
  specInput: unknown,
  request?: KeyedRequest,
): Promise<Execution> {
  return createOnce(core, await bidOn(core, owner, specInput, request), request);
}

const declined = (execution: Execution): BidDeclined =>
  new BidDeclined(`Ferry will not run this job: ${execution.bid.reason}`, {
    details: { executionId: execution.id, bid: execution.bid },
  });

/** Loads an execution the caller owns; another caller's execution does not exist for them. */
export async function getOwned(core: Core, owner: string, id: string): Promise<Execution> {
  const execution = await core.store.get(id);
  if (execution === undefined || execution.owner !== owner) {
    throw new NotFound(`execution ${id} does not exist`);
  }
  return execution;
}

export async function acceptBid(core: Core, owner: string, id: string): Promise<Execution> {
  await getOwned(core, owner, id);
  let accepted = false;
  const queued = await mutate(core.store, id, (current) => {
    accepted = false;
    // Accepting twice is harmless: a retry gets the execution as it is, however far it got.
    if (current.queuedAt !== undefined) return undefined;
    if (current.state === 'OFFERED' && current.bid.expiresAt !== undefined) {
      if (Date.parse(current.bid.expiresAt) < core.clock.now().getTime()) {
        return moveTo(current, 'EXPIRED', core.clock.now(), {}, 'the bid expired before it was accepted');
      }
    }
    if (current.state !== 'OFFERED') {
      throw new InvalidTransition(`execution ${id} is ${current.state}; only an OFFERED bid can be accepted`);
    }
    const now = core.clock.now();
    accepted = true;
    return moveTo(current, 'QUEUED', now, { queuedAt: now.toISOString(), dispatchToken: core.ids.next() });
  });
  if (queued.state === 'EXPIRED') {
    throw new InvalidTransition(
      `the bid on execution ${id} expired at ${queued.bid.expiresAt}; ask for a new bid`,
    );
  }
  // Accepted by an earlier call, which sent the message: one chain of messages per job.
  if (!accepted) return queued;
  // Sent after the write: a message for an execution that is not QUEUED is dropped by the
  // dispatcher, and a QUEUED execution whose message was lost is re-sent by the sweeper.
  await core.queue.send(messageFor(queued));
  return queued;
}

export async function rejectBid(
  core: Core,
  owner: string,
  id: string,
  review: ReviewBody = {},
): Promise<Execution> {
  await getOwned(core, owner, id);
  return mutate(core.store, id, (current) => {
    if (current.state === 'BID_REJECTED') return undefined;
    if (current.state !== 'OFFERED') {
      throw new InvalidTransition(`execution ${id} is ${current.state}; only an OFFERED bid can be rejected`);
    }
    return moveTo(
      current,
      'BID_REJECTED',
      core.clock.now(),
      {},
      'rejected by the caller',
      review.justification,
    );
  });
}

/**
 * Ask and accept in one call; a decline is an error carrying the bid. A keyed retry gets the
 * execution its first try stored, whatever a fresh bid would say now: the same decline
 * again, or the job as far as it got.
 */
export async function submitJob(
  core: Core,
  owner: string,
  specInput: unknown,
  request?: KeyedRequest,
): Promise<Execution> {
  const offered = await bidOn(core, owner, specInput, request);
  if (!offered.bid.accepted) return unlessDeclined(await createOnce(core, offered, request));
  // Offered and accepted in the same breath: stored once, already QUEUED, with its message.
  const now = core.clock.now();
  const queued: Execution = {
    ...moveTo(offered, 'QUEUED', now, { queuedAt: now.toISOString(), dispatchToken: core.ids.next() }),
    version: 1,
  };
  try {
    return unlessDeclined(
      await createOnce(core, queued, request, (e) => core.intake.enqueueNew(e, messageFor(e))),
    );
  } catch (error) {
    await abandon(core, queued);
    throw error;
  }
}

/** A stored DECLINED execution is answered with the decline; any other is the job. */
function unlessDeclined(stored: Execution): Execution {
  if (stored.state === 'DECLINED') throw declined(stored);
  return stored;
}

/**
 * The caller is answered with an error, so the job must not run later. Where the intake is
 * one transaction nothing was stored; where it is not, a record this call stored (its
 * dispatch token says so) may be QUEUED without a message: it is ended while the store takes
 * writes (if not, the sweeper re-sends it once the store recovers).
 */
async function abandon(core: Core, queued: Execution): Promise<void> {
  await mutate(core.store, queued.id, (current) =>
    current.state === 'QUEUED' && current.dispatchToken === queued.dispatchToken
      ? moveTo(current, 'FAILED', core.clock.now(), {}, 'the job could not be queued')
      : undefined,
  ).catch(() => undefined);
}
