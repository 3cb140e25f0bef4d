// Ferry's API as a task reaches it on AWS: the api handler of a core behind the emulated
// HTTP API, on a loopback port, with the SigV4 signature verified and execute-api:Invoke
// decided on the grant a deployment gives the task role (the upload-links route only).
import { createApiHandler } from '../../functions/api.ts';
import { EmulatedHttpApi } from '../../shared/adapters/emulated/http-api.ts';
import { checkAuthorization } from '../../shared/adapters/emulated/iam-check.ts';
import { verifySignature } from '../../shared/adapters/emulated/sigv4-verify.ts';
import type { Core } from '../../shared/core.ts';
import { silentLogger } from '../../shared/logger.ts';
import { REGION } from './aws.ts';
import { lambdaContext } from './events.ts';

const ACCOUNT = '123456789012';
export const API_ID = 'a1b2c3d4e5';
/** The task role's credentials, as a task's containers get them. */
export const TASK_KEY = { accessKeyId: 'ASIATASKROLE0001', secretAccessKey: 'task/role/secret' };
export const TASK_ROLE = `arn:aws:sts::${ACCOUNT}:assumed-role/ferry-task/0f1e2d3c4b5a`;
/** What the deployment grants the task role (infra/ferry-function.ts, useUploadLinks). */
const TASK_POLICY = {
  Version: '2012-10-17',
  Statement: [
    {
      Effect: 'Allow',
      Action: 'execute-api:Invoke',
      Resource: `arn:aws:execute-api:${REGION}:${ACCOUNT}:${API_ID}/$default/POST/v1/executions/*/uploads`,
    },
  ],
};

/** Serves `core`'s api handler; `counter.calls` counts the requests that reached it. */
export async function serveApi(core: Core, counter = { calls: 0 }): Promise<EmulatedHttpApi> {
  const api = createApiHandler(core);
  const front = new EmulatedHttpApi({
    apiId: API_ID,
    region: REGION,
    log: silentLogger,
    authorize: async ({ method, url, headers, body, routeArn }) => {
      const signed = await verifySignature({ method, url, headers, body }, (id) =>
        id === TASK_KEY.accessKeyId ? TASK_KEY : undefined,
      );
      if (!signed.ok) return { ok: false, message: signed.message };
      const verdict = await checkAuthorization(
        { principalArn: TASK_ROLE, accountId: ACCOUNT, policies: [{ name: 'task', document: TASK_POLICY }] },
        { action: 'execute-api:Invoke', resource: routeArn.replace(':*:', `:${ACCOUNT}:`), context: {} },
      );
      if (!verdict.allowed) return { ok: false, message: verdict.explanation };
      return {
        ok: true,
        caller: { arn: TASK_ROLE, accessKey: TASK_KEY.accessKeyId, accountId: ACCOUNT, userId: 'AROATASK' },
      };
    },
    invoke: async (event) => {
      counter.calls++;
      return { ok: true, value: await api(event as Parameters<typeof api>[0], lambdaContext) };
    },
  });
  await front.listen();
  return front;
}
