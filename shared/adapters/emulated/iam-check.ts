// Decides one authorization as IAM would, with the IAM policy simulator: the principal's
// identity policies (from the synthesized template) and, where the resource has one, its
// resource policy (a bucket's or a queue's), conditions included. A call the simulator cannot
// evaluate (an action or resource it does not know) counts as denied, with the reason.
import { getDenialReasons, runSimulation, type Simulation } from '@cloud-copilot/iam-simulate';
import type { Authorization } from './aws-request.ts';
import type { PolicyDocument } from './template.ts';

export interface PrincipalPolicies {
  /** The role (or user) ARN IAM sees as the caller. */
  readonly principalArn: string;
  readonly accountId: string;
  readonly policies: readonly { readonly name: string; readonly document: PolicyDocument }[];
}

export interface Verdict {
  readonly allowed: boolean;
  readonly explanation: string;
}

export async function checkAuthorization(
  principal: PrincipalPolicies,
  authorization: Authorization,
  resourcePolicy?: PolicyDocument,
): Promise<Verdict> {
  const simulation: Simulation = {
    request: {
      principal: principal.principalArn,
      action: authorization.action,
      resource: { resource: authorization.resource, accountId: principal.accountId },
      contextVariables: {
        'aws:PrincipalArn': principal.principalArn,
        'aws:PrincipalAccount': principal.accountId,
        ...authorization.context,
      },
    },
    identityPolicies: principal.policies.map((p) => ({ name: p.name, policy: p.document })),
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    ...(resourcePolicy === undefined ? {} : { resourcePolicy }),
  };
  const what = `${principal.principalArn} ${authorization.action} on ${authorization.resource}`;
  const result = await runSimulation(simulation, {});
  if (result.resultType === 'error') {
    return {
      allowed: false,
      explanation: `${what}: the simulator cannot evaluate it: ${result.errors.message}`,
    };
  }
  if (result.overallResult === 'Allowed') return { allowed: true, explanation: `${what}: allowed` };
  const reasons =
    result.resultType === 'single' && result.result.analysis !== undefined
      ? getDenialReasons(result.result.analysis)
          .map((reason) => JSON.stringify(reason))
          .join('; ')
      : '';
  const how = result.overallResult === 'ExplicitlyDenied' ? 'explicitly denied' : 'not allowed by any policy';
  return { allowed: false, explanation: `${what}: ${how}${reasons === '' ? '' : ` (${reasons})`}` };
}
