// The caller's answer to a bid or a result: a decision may carry a justification, as in the
// bid protocol Ferry follows, kept in the execution's history.
import { z } from 'zod';
import { parseBody } from './job-spec.ts';

export const JUSTIFICATION_MAX_LENGTH = 1000;

/** The optional body of `reject` (bid) and `accept`/`reject` (result). */
export const ReviewBodySchema = z.strictObject({
  justification: z
    .string()
    .min(1, 'must not be empty')
    .max(JUSTIFICATION_MAX_LENGTH, `must be at most ${JUSTIFICATION_MAX_LENGTH} characters`)
    .optional()
    .describe('why the caller decided so; kept in the history'),
});

export type ReviewBody = z.output<typeof ReviewBodySchema>;

export function parseReviewBody(input: unknown): ReviewBody {
  return parseBody(ReviewBodySchema, input);
}
