// Upload links through the api handler, as a task's publisher asks for them: signed for the
// holder of an execution's upload secret, for that execution's result keys only, while its run
// is active or just ended; refused otherwise with a problem document, and then nothing signed.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createApiHandler } from '../../functions/api.ts';
import type { Core } from '../../shared/core.ts';
import type { SignedLink, UploadLinkRequest, UploadLinks } from '../../shared/domain/upload-links.ts';
import { BackendError } from '../../shared/errors.ts';
import type { UploadSigner } from '../../shared/ports.ts';
import { submitJob } from '../../shared/use-cases/bids.ts';
import { dispatch } from '../../shared/use-cases/dispatch.ts';
import { reviewResult } from '../../shared/use-cases/results.ts';
import { amend, moveTo, mutate } from '../../shared/use-cases/transitions.ts';
import { buildTestCore } from '../support/core.ts';
import { apiEvent, lambdaContext } from '../support/events.ts';

const OWNER = 'arn:aws:iam::123456789012:user/alice';
/** Every task signs as the task role: the caller is never the execution's owner. */
const TASK_ROLE = 'arn:aws:sts::123456789012:assumed-role/ferry-task/0123456789abcdef';
const job = {
  image: 'alpine:3',
  command: ['true'],
  timeoutSeconds: 60,
  outputs: [{ path: '/out/report.csv', name: 'report.csv' }],
};

/** Signs nothing real: records what it was asked, so a test can tell that nothing was signed. */
class RecordingSigner implements UploadSigner {
  readonly signed: UploadLinkRequest[] = [];

  async sign(request: UploadLinkRequest, expiresSeconds: number): Promise<SignedLink> {
    this.signed.push(request);
    return {
      method: request.action === 'delete' || request.action === 'abortMultipart' ? 'DELETE' : 'PUT',
      url: `https://results.example/${request.key}?action=${request.action}&expires=${expiresSeconds}`,
      headers: {},
    };
  }
}

interface Reply {
  readonly status: number;
  readonly headers: Record<string, unknown>;
  readonly body: Record<string, unknown>;
}

/** A Ferry whose tasks store results through links, with one execution launched. */
async function deployment(options: { signer?: boolean } = {}) {
  const test = await buildTestCore();
  const signer = new RecordingSigner();
  const core: Core = {
    ...test.core,
    ...(options.signer === false ? {} : { uploads: signer }),
    // Declared outputs need a backend that collects them.
    settings: { ...test.core.settings, profile: { ...test.core.settings.profile, supportsOutputs: true } },
  };
  const api = createApiHandler(core);
  const launch = async () => {
    const execution = await submitJob(core, OWNER, job);
    await dispatch(core, { executionId: execution.id });
    const secret = test.backend.tickets.get(execution.id)?.at(-1)?.uploadSecret ?? '';
    return { id: execution.id, secret };
  };
  const ask = async (id: string, links: unknown, secret?: string): Promise<Reply> => {
    const reply = await api(
      apiEvent('POST', `/v1/executions/${id}/uploads`, {
        body: { links },
        owner: TASK_ROLE,
        headers: secret === undefined ? {} : { 'ferry-upload-secret': secret },
      }),
      lambdaContext,
    );
    return {
      status: reply.statusCode ?? 0,
      headers: reply.headers ?? {},
      body: JSON.parse(reply.body ?? '{}') as Record<string, unknown>,
    };
  };
  return { ...test, core, signer, launch, ask };
}

const put = (key: string, contentType?: string) => ({
  action: 'put',
  key,
  ...(contentType === undefined ? {} : { contentType }),
});

describe('upload links for a task’s publisher', () => {
  it('signs every key its publisher writes, for the secret its launch minted', async () => {
    const { core, signer, launch, ask, now } = await deployment();
    const { id, secret } = await launch();
    const keys = (name: string) => `executions/${id}/${name}`;
    const asked = [
      put(keys('stdout')),
      put(keys('stderr')),
      put(keys('result.json'), 'application/json'),
      put(keys('live/stdout')),
      { action: 'delete', key: keys('live/stdout') },
      { action: 'delete', key: keys('live/stderr') },
      { action: 'createMultipart', key: keys('stdout') },
      { action: 'uploadPart', key: keys('stdout'), uploadId: 'u-1', partNumber: 2 },
      { action: 'completeMultipart', key: keys('stdout'), uploadId: 'u-1' },
      { action: 'abortMultipart', key: keys('stdout'), uploadId: 'u-1' },
      put(keys('outputs/report.csv'), 'text/csv'),
    ];

    const reply = await ask(id, asked, secret);

    expect(reply.status).toBe(200);
    const answer = reply.body as unknown as UploadLinks;
    expect(answer.executionId).toBe(id);
    expect(answer.links.map((l) => [l.action, l.key])).toEqual(asked.map((a) => [a.action, a.key]));
    expect(answer.links[0]).toMatchObject({
      method: 'PUT',
      contentType: 'application/octet-stream',
      url: `https://results.example/${keys('stdout')}?action=put&expires=300`,
    });
    expect(answer.expiresAt).toBe(new Date(now.value.getTime() + 300_000).toISOString());
    expect(signer.signed).toHaveLength(asked.length);
    // The record keeps the secret's digest and never the secret.
    const stored = await core.store.get(id);
    expect(stored?.launches).toEqual([
      {
        at: now.value.toISOString(),
        uploadSecretDigest: createHash('sha256').update(secret).digest('hex'),
      },
    ]);
    expect(JSON.stringify(stored)).not.toContain(secret);
  });

  it('refuses a key of another execution, and signs nothing', async () => {
    const { signer, launch, ask } = await deployment();
    const mine = await launch();
    const theirs = await launch();

    const reply = await ask(
      mine.id,
      [put(`executions/${mine.id}/stdout`), put(`executions/${theirs.id}/result.json`)],
      mine.secret,
    );

    expect(reply.status).toBe(403);
    expect(reply.headers['content-type']).toBe('application/problem+json');
    expect(reply.body).toMatchObject({
      status: 403,
      errors: [
        { field: 'links.1.key', message: expect.stringContaining(`not a key of execution ${mine.id}`) },
      ],
    });
    expect(signer.signed).toEqual([]);
  });

  it.each([
    ['a path outside executions/{id}/', () => 'published/report.csv', 'put'],
    ['a key beside the result', (id: string) => `executions/${id}/notes`, 'put'],
    ['a way out of the prefix', (id: string) => `executions/${id}/../other/result.json`, 'put'],
    ['an output the job did not declare', (id: string) => `executions/${id}/outputs/other.csv`, 'put'],
    ['deleting the manifest', (id: string) => `executions/${id}/result.json`, 'delete'],
    ['deleting a stream', (id: string) => `executions/${id}/stdout`, 'delete'],
  ])('refuses %s with 403, and signs nothing', async (_name, keyOf, action) => {
    const { signer, launch, ask } = await deployment();
    const { id, secret } = await launch();

    const reply = await ask(id, [{ action, key: keyOf(id) }], secret);

    expect(reply.status).toBe(403);
    expect(reply.body.errors).toEqual([{ field: 'links.0.key', message: expect.any(String) }]);
    expect(signer.signed).toEqual([]);
  });

  it('refuses a wrong secret, another execution’s secret and an unknown execution alike, with 403', async () => {
    const { signer, launch, ask } = await deployment();
    const mine = await launch();
    const theirs = await launch();
    const links = [put(`executions/${mine.id}/stdout`)];

    const wrong = await ask(mine.id, links, 'A'.repeat(43));
    const borrowed = await ask(mine.id, links, theirs.secret);
    const unknown = await ask('ex_0000000000aaaaaaaaaaaaaaaa', links, mine.secret);

    for (const reply of [wrong, borrowed, unknown]) {
      expect(reply.status).toBe(403);
      expect(reply.body.detail).toMatch(/^the upload secret is not one of execution ex_\w+'s$/);
    }
    expect(signer.signed).toEqual([]);
  });

  it('asks for the secret when none is sent, with 401', async () => {
    const { signer, launch, ask } = await deployment();
    const { id } = await launch();

    const reply = await ask(id, [put(`executions/${id}/stdout`)]);

    expect(reply.status).toBe(401);
    expect(reply.headers['www-authenticate']).toBe('ferry-upload-secret realm="ferry"');
    expect(signer.signed).toEqual([]);
  });

  it('hands out links while the run is active and just after it ends, never later', async () => {
    const { core, launch, ask, now } = await deployment();
    const { id, secret } = await launch();
    const links = [put(`executions/${id}/result.json`, 'application/json')];
    const expectStatus = async (status: number) => expect((await ask(id, links, secret)).status).toBe(status);
    const set = (change: Parameters<typeof mutate>[2]) => mutate(core.store, id, change);

    await expectStatus(200); // LAUNCHING
    await set((e) => moveTo(e, 'RUNNING', now.value, { startedAt: now.value.toISOString() }));
    await expectStatus(200);
    await set((e) => moveTo(e, 'COMPLETED', now.value, { endedAt: now.value.toISOString(), exitCode: 0 }));
    now.value = new Date(now.value.getTime() + 120_000);
    await expectStatus(200);
    now.value = new Date(now.value.getTime() + 1_000);

    const late = await ask(id, links, secret);

    expect(late.status).toBe(409);
    expect(late.body).toMatchObject({ state: 'COMPLETED' });
    expect(late.body.detail).toMatch(/upload links are handed out until 120 s after a run ends/);
  });

  it('refuses once the result was reviewed, even just after the run', async () => {
    const { core, launch, ask, now } = await deployment();
    const { id, secret } = await launch();
    await mutate(core.store, id, (e) =>
      amend(moveTo(e, 'COMPLETED', now.value, { endedAt: now.value.toISOString(), exitCode: 0 }), now.value, {
        result: {
          review: 'PENDING',
          exitCode: 0,
          manifestKey: `executions/${id}/result.json`,
          stdout: { totalBytes: 0, storedBytes: 0, truncated: false },
          stderr: { totalBytes: 0, storedBytes: 0, truncated: false },
        },
      }),
    );
    await reviewResult(core, OWNER, id, 'REJECTED');

    const reply = await ask(id, [put(`executions/${id}/stdout`)], secret);

    expect(reply.status).toBe(409);
    expect(reply.body.detail).toMatch(/its result was reviewed \(REJECTED\)/);
  });

  it('accepts the secret of every launch attempt: an earlier attempt’s task may be the one running', async () => {
    const { core, backend, ask } = await deployment();
    const execution = await submitJob(core, OWNER, job);
    backend.failures.push(new BackendError('Rate exceeded', { retryable: true }));

    expect(await dispatch(core, { executionId: execution.id })).toMatchObject({ outcome: 'deferred' });
    expect(await dispatch(core, { executionId: execution.id })).toMatchObject({ outcome: 'launched' });

    const secrets = (backend.tickets.get(execution.id) ?? []).map((t) => t.uploadSecret);
    expect(new Set(secrets).size).toBe(2);
    expect((await core.store.get(execution.id))?.launches).toHaveLength(2);
    for (const secret of secrets) {
      expect((await ask(execution.id, [put(`executions/${execution.id}/stdout`)], secret)).status).toBe(200);
    }
  });

  it('answers a malformed request 400, naming the field', async () => {
    const { signer, launch, ask } = await deployment();
    const { id, secret } = await launch();

    const reply = await ask(id, [{ action: 'copy', key: `executions/${id}/stdout` }], secret);

    expect(reply.status).toBe(400);
    expect(reply.body.errors).toEqual([expect.objectContaining({ field: 'links.0.action' })]);
    expect(signer.signed).toEqual([]);
  });

  it('answers 404 where the backend stores every result itself, as the local server does', async () => {
    const { launch, ask } = await deployment({ signer: false });
    const { id, secret } = await launch();

    const reply = await ask(id, [put(`executions/${id}/stdout`)], secret);

    expect(reply.status).toBe(404);
    expect(reply.body.detail).toBe(
      'this Ferry hands out no upload links: its backend stores every result itself',
    );
  });
});
