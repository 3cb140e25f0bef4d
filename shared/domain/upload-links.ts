// Upload secrets: each launch attempt of a task gets a random secret that only its publisher
// container is given, so that the publisher can prove which execution it stores the result of
// while every task runs as the same role. Ferry keeps only the secret's digest.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Execution } from './execution.ts';

const SECRET_BYTES = 32;
/** Unpadded base64url of 32 random bytes: always 43 characters. */
export const UPLOAD_SECRET_LENGTH = 43;
export const UPLOAD_SECRET_PATTERN = /^[A-Za-z0-9_-]{43}$/;
/** As long as any secret Ferry mints: a bid measures the overrides with it before one exists. */
export const LONGEST_UPLOAD_SECRET = 'x'.repeat(UPLOAD_SECRET_LENGTH);

export function mintUploadSecret(): string {
  return randomBytes(SECRET_BYTES).toString('base64url');
}

/** What Ferry stores instead of the secret. */
export const uploadSecretDigest = (secret: string): string =>
  createHash('sha256').update(secret, 'utf8').digest('hex');

/**
 * Whether `secret` is the secret of one of the execution's launch attempts. Digests are
 * compared in constant time, and all of them, so the time taken says nothing about which matched.
 */
export function holdsUploadSecret(execution: Execution, secret: string): boolean {
  const presented = createHash('sha256').update(secret, 'utf8').digest();
  let found = false;
  for (const launch of execution.launches ?? []) {
    const stored = Buffer.from(launch.uploadSecretDigest, 'hex');
    if (stored.length === presented.length && timingSafeEqual(stored, presented)) found = true;
  }
  return found;
}
