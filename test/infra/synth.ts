// Synthesizes a FerryExecutor the way `npx cdk synth` does (cdk.json's feature flags), into
// a temporary cloud assembly, and reads what the tests look at: the template, the policies
// attached to a role, the assets.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { App, type CfnElement, Stack, Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type { CloudAssembly } from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { FerryExecutor, type FerryExecutorProps } from '../../infra/ferry-executor.ts';

const cdkJson = JSON.parse(fs.readFileSync(path.resolve('cdk.json'), 'utf8')) as {
  context: Record<string, unknown>;
};

export interface Synthesized {
  readonly stack: Stack;
  readonly ferry: FerryExecutor;
  readonly template: Template;
  readonly assembly: CloudAssembly;
  readonly outdir: string;
  /** The template's logical id of a construct (or of its CloudFormation resource). */
  readonly id: (construct: IConstruct) => string;
  readonly cleanup: () => void;
}

export interface SynthOptions {
  /** Run esbuild for the functions, as `cdk synth` does. Off: CDK stands in a placeholder asset. */
  readonly bundle?: boolean;
  /** Check with cdk-nag's AwsSolutions pack; synth throws on an unacknowledged finding. */
  readonly nag?: boolean;
  /** Adds more to the stack before synthesis (a negative control, for instance). */
  readonly extra?: (stack: Stack) => void;
}

export function synthFerry(props: FerryExecutorProps = {}, options: SynthOptions = {}): Synthesized {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-cdk-'));
  const app = new App({
    outdir,
    context: { ...cdkJson.context, ...(options.bundle ? {} : { 'aws:cdk:bundling-stacks': [] }) },
  });
  const stack = new Stack(app, 'Ferry');
  const ferry = new FerryExecutor(stack, 'Executor', props);
  options.extra?.(stack);
  if (options.nag) Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  const cleanup = () => fs.rmSync(outdir, { recursive: true, force: true });
  let assembly: CloudAssembly;
  try {
    assembly = app.synth();
  } catch (error) {
    cleanup();
    throw error;
  }
  return {
    stack,
    ferry,
    template: Template.fromStack(stack),
    assembly,
    outdir,
    id: (construct) => stack.getLogicalId((construct.node.defaultChild ?? construct) as CfnElement),
    cleanup,
  };
}

export interface Statement {
  readonly Effect: string;
  readonly Action: string | string[];
  readonly Resource: unknown;
  readonly Condition?: Record<string, Record<string, unknown>>;
}

export const actionsOf = (statement: Statement): string[] =>
  Array.isArray(statement.Action) ? statement.Action : [statement.Action];

export const resourcesOf = (statement: Statement): unknown[] =>
  Array.isArray(statement.Resource) ? statement.Resource : [statement.Resource];

/** Every statement of the inline policies attached to the role with this logical id. */
export function statementsOf(template: Template, roleId: string): Statement[] {
  const policies = template.findResources('AWS::IAM::Policy') as Record<
    string,
    { Properties: { Roles: { Ref: string }[]; PolicyDocument: { Statement: Statement[] } } }
  >;
  return Object.values(policies)
    .filter((policy) => policy.Properties.Roles.some((role) => role.Ref === roleId))
    .flatMap((policy) => policy.Properties.PolicyDocument.Statement);
}

/** The statements of a role that allow `action`. */
export const allowing = (statements: Statement[], action: string): Statement[] =>
  statements.filter((s) => s.Effect === 'Allow' && actionsOf(s).includes(action));

/** The acknowledgments recorded on the tree under `root`: rule id and reason. */
export function acknowledgmentsUnder(root: IConstruct): { path: string; id: string; reason: string }[] {
  return root.node.findAll().flatMap((construct) =>
    construct.node.metadata
      .filter((entry) => entry.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
      .flatMap((entry) =>
        Object.entries(entry.data as Record<string, string>).map(([id, reason]) => ({
          path: construct.node.path,
          id,
          reason,
        })),
      ),
  );
}
