// The real clock and id generator, shared by every runtime (tests inject their own).
import { createHash, randomBytes } from 'node:crypto';
import type { Clock, IdGenerator } from '../ports.ts';

export const systemClock: Clock = { now: () => new Date() };

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

/** One Crockford base32 character (lower case) per byte. */
function base32(bytes: Uint8Array): string {
  let text = '';
  for (const byte of bytes) text += ALPHABET[byte % 32];
  return text;
}

/**
 * Ids like `ex_01jh5q8k3m…`: 10 characters of millisecond time then 16 random ones
 * (Crockford base32, lower case), so ids sort by creation and never collide in practice.
 */
export function executionIds(now: () => number = Date.now): IdGenerator {
  return {
    next: () => {
      let time = now();
      let timePart = '';
      for (let i = 0; i < 10; i++) {
        timePart = (ALPHABET[time % 32] ?? '0') + timePart;
        time = Math.floor(time / 32);
      }
      return `ex_${timePart}${base32(randomBytes(16))}`;
    },
    // A retried request whose first try may have been stored already must land on the same
    // record, so its id comes from the request's key rather than from the clock.
    fromKey: (key) => `ex_${base32(createHash('sha256').update(key).digest().subarray(0, 26))}`,
  };
}
