// cdk-nag's AwsSolutions pack over the whole executor: no finding left unacknowledged, and
// every acknowledgment says why. Synthesis itself fails on a finding, so each layout that
// synthesizes here has none.
import fs from 'node:fs';
import path from 'node:path';
import { BlockPublicAccess, Bucket } from 'aws-cdk-lib/aws-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acknowledgmentsUnder, type Synthesized, synthFerry } from './synth.ts';

let open: Synthesized;
let isolated: Synthesized;
beforeAll(() => {
  open = synthFerry({}, { nag: true });
  isolated = synthFerry({ network: { layout: 'isolated-subnets' } }, { nag: true });
});
afterAll(() => {
  open?.cleanup();
  isolated?.cleanup();
});

describe('AwsSolutions checks', () => {
  it('leave no unacknowledged finding, in either network layout', () => {
    // synthFerry would have thrown ValidationFailed on any finding; the report says the same.
    for (const synthesized of [open, isolated]) {
      const report = JSON.parse(
        fs.readFileSync(path.join(synthesized.outdir, 'validation-report.json'), 'utf8'),
      ) as {
        pluginReports: {
          pluginName: string;
          conclusion: string;
          violations: unknown[];
          suppressedViolations?: { ruleName: string; reason?: string }[];
        }[];
      };
      const nag = report.pluginReports.find((r) => r.pluginName === 'AwsSolutions');
      expect(nag?.conclusion).toBe('success');
      expect(nag?.violations).toEqual([]);
      expect(nag?.suppressedViolations?.length).toBeGreaterThan(0);
      for (const suppressed of nag?.suppressedViolations ?? []) {
        expect(suppressed.reason?.length ?? 0, suppressed.ruleName).toBeGreaterThan(60);
      }
    }
  });

  it('do fail synthesis on a finding (the check is live)', () => {
    expect(() =>
      synthFerry(
        {},
        {
          nag: true,
          extra: (stack) => {
            new Bucket(stack, 'Careless', { blockPublicAccess: BlockPublicAccess.BLOCK_ALL });
          },
        },
      ),
    ).toThrow(/AwsSolutions-S10/);
  });

  it('are acknowledged only with a reason, on Ferry’s own constructs', () => {
    for (const synthesized of [open, isolated]) {
      // (CDK acknowledges a few of its own CloudFormation-Validate rules; those are not ours.)
      const acknowledged = acknowledgmentsUnder(synthesized.stack).filter(({ id }) =>
        id.startsWith('AwsSolutions::'),
      );
      expect(acknowledged.length).toBeGreaterThan(0);
      for (const { path, id, reason } of acknowledged) {
        expect(path.startsWith('Ferry/Executor/'), path).toBe(true);
        expect(id).toMatch(/^AwsSolutions::AwsSolutions-(IAM5\[.+\]|L1|S1|ECS4|SQS3)$/);
        expect(reason.length, `${path} ${id}`).toBeGreaterThan(60);
      }
    }
  });

  it('acknowledge wildcards only where a name is minted at run time or the action has no resource', () => {
    const wildcards = acknowledgmentsUnder(open.stack)
      .filter(({ id }) => id.startsWith('AwsSolutions::AwsSolutions-IAM5'))
      .map(({ id }) => id.replace(/^AwsSolutions::AwsSolutions-IAM5\[Resource::/, '').replace(/\]$/, ''));
    const cluster = open.id(open.ferry.cluster);
    const bucket = open.id(open.ferry.resultsBucket);
    const api = open.id(open.ferry.api);
    expect([...new Set(wildcards)].sort()).toEqual(
      [
        '*',
        `<${bucket}.Arn>/executions/*`,
        // The keys the api signs upload links for.
        `<${bucket}.Arn>/executions/*/live/*`,
        `<${bucket}.Arn>/executions/*/outputs/*`,
        `<${bucket}.Arn>/executions/*/result.json`,
        `<${bucket}.Arn>/executions/*/stderr`,
        `<${bucket}.Arn>/executions/*/stdout`,
        // Inputs each job names, under the prefix the deployment reads them from.
        `<${bucket}.Arn>/inputs/*`,
        `arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:task-definition/ferry-*:*`,
        `arn:<AWS::Partition>:ecs:<AWS::Region>:<AWS::AccountId>:task/<${cluster}>/*`,
        // The one route tasks may call.
        `arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:<${api}>/$default/POST/v1/executions/*/uploads`,
      ].sort(),
    );
  });
});
