// Upload links for a task's publisher: short-lived signed links to its own execution's result
// keys, for whoever shows the upload secret of one of that execution's launch attempts, while
// its run is active or has just ended. The caller's identity plays no part: on AWS every
// task signs as the same task role, so the secret is what tells one execution's task from
// another's.
import type { Core } from '../core.ts';
import type { Execution } from '../domain/execution.ts';
import { ACTIVE_STATES, RUN_ENDED_STATES } from '../domain/states.ts';
import {
  holdsUploadSecret,
  parseUploadLinksBody,
  type SignedUpload,
  UPLOAD_GRACE_AFTER_END_SECONDS,
  UPLOAD_SECRET_HEADER,
  type UploadLinks,
  uploadRefusal,
} from '../domain/upload-links.ts';
import { Forbidden, InvalidTransition, NotFound, Unauthorized } from '../errors.ts';

export async function signUploadLinks(
  core: Core,
  executionId: string,
  secret: string | undefined,
  /** Decodes the request body; called only once the route is known to serve links here. */
  readBody: () => unknown,
): Promise<UploadLinks> {
  const signer = core.uploads;
  if (signer === undefined) {
    throw new NotFound('this Ferry hands out no upload links: its backend stores every result itself');
  }
  if (secret === undefined || secret === '') {
    throw new Unauthorized(`the request carries no upload secret (header ${UPLOAD_SECRET_HEADER})`, {
      challenge: `${UPLOAD_SECRET_HEADER} realm="ferry"`,
    });
  }
  const request = parseUploadLinksBody(readBody());
  const execution = await core.store.get(executionId);
  // An unknown execution answers as a wrong secret does: the route tells nobody which ids exist.
  if (execution === undefined || !holdsUploadSecret(execution, secret)) {
    throw new Forbidden(`the upload secret is not one of execution ${executionId}'s`);
  }
  const now = core.clock.now();
  const closed = uploadsClosed(execution, now);
  if (closed !== undefined) throw new InvalidTransition(closed, { details: { state: execution.state } });

  const errors = request.links.flatMap((link, index) => {
    const refusal = uploadRefusal(execution, link);
    return refusal === undefined ? [] : [{ field: `links.${index}.key`, message: `${link.key}: ${refusal}` }];
  });
  if (errors.length > 0) {
    // Nothing is signed unless everything asked may be.
    throw new Forbidden(
      `execution ${executionId}'s upload secret does not cover ${errors.map((e) => e.message).join('; ')}`,
      { details: { errors } },
    );
  }
  const seconds = core.settings.uploadLinkSeconds;
  const links: SignedUpload[] = [];
  for (const link of request.links) links.push({ ...link, ...(await signer.sign(link, seconds)) });
  return { executionId, links, expiresAt: new Date(now.getTime() + seconds * 1000).toISOString() };
}

/** Why no link is handed out for the execution now, or undefined while they are. */
function uploadsClosed(execution: Execution, now: Date): string | undefined {
  if (ACTIVE_STATES.includes(execution.state)) return undefined;
  const why = `execution ${execution.id} is ${execution.state}`;
  if (!RUN_ENDED_STATES.includes(execution.state) || execution.endedAt === undefined) {
    return `${why}: upload links are handed out only while its run is active`;
  }
  if (execution.result !== undefined && execution.result.review !== 'PENDING') {
    return `${why} and its result was reviewed (${execution.result.review}): it can no longer change`;
  }
  const closesAt = Date.parse(execution.endedAt) + UPLOAD_GRACE_AFTER_END_SECONDS * 1000;
  return now.getTime() <= closesAt
    ? undefined
    : `${why} since ${execution.endedAt}: upload links are handed out until ${UPLOAD_GRACE_AFTER_END_SECONDS} s after a run ends`;
}
