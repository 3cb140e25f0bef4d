// The real clock and id generator, shared by every runtime (tests inject their own).
import { randomBytes } from 'node:crypto';
import type { Clock, IdGenerator } from '../ports.ts';

export const systemClock: Clock = { now: () => new Date() };

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

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
      const random = randomBytes(16);
      let randomPart = '';
      for (const byte of random) randomPart += ALPHABET[byte % 32];
      return `ex_${timePart}${randomPart}`;
    },
  };
}
