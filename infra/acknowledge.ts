// Acknowledging the wildcard findings of cdk-nag's AwsSolutions-IAM5 where a statement is
// written, with the reason it needs them: a wildcard nobody justified stays a finding.
import { Stack, Validations } from 'aws-cdk-lib';
import type { PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { IConstruct } from 'constructs';

/** cdk-nag's plugin name: acknowledgments are namespaced by the plugin that reports the rule. */
const PACK = 'AwsSolutions';

/** Acknowledges, on `scope` and what it holds, each wildcard action and resource of `statement`. */
export function acknowledgeWildcards(scope: IConstruct, statement: PolicyStatement, reason: string): void {
  const json = Stack.of(scope).resolve(statement.toStatementJson()) as {
    Action?: unknown;
    Resource?: unknown;
  };
  const findings = [
    ...asList(json.Action)
      .map(flatten)
      .filter((action) => action.includes('*'))
      .map((action) => `Action::${action}`),
    ...asList(json.Resource)
      .map(flatten)
      .filter((resource) => resource.includes('*'))
      .map((resource) => `Resource::${resource}`),
  ];
  for (const finding of findings) {
    Validations.of(scope).acknowledge({ id: `${PACK}::AwsSolutions-IAM5[${finding}]`, reason });
  }
}

/** Acknowledges whole rules (not IAM5 findings) on `scope`, each with its reason. */
export function acknowledgeRules(scope: IConstruct, rules: Readonly<Record<string, string>>): void {
  for (const [id, reason] of Object.entries(rules))
    Validations.of(scope).acknowledge({ id: `${PACK}::${id}`, reason });
}

const asList = (value: unknown): unknown[] =>
  value === undefined ? [] : Array.isArray(value) ? value : [value];

/** A resolved CloudFormation value as cdk-nag names it in a finding: `<Logical.Arn>`, `<AWS::Region>`. */
function flatten(value: unknown): string {
  if (typeof value === 'string') return value.replace(/\$\{/g, '<').replace(/\}/g, '>');
  if (value !== null && typeof value === 'object') {
    const node = value as Record<string, unknown>;
    const join = node['Fn::Join'];
    if (Array.isArray(join)) {
      const [delimiter, items] = join as [string, unknown[]];
      return items.map(flatten).join(delimiter);
    }
    if (node['Fn::Sub'] !== undefined) return flatten(node['Fn::Sub']);
    const getAtt = node['Fn::GetAtt'];
    if (Array.isArray(getAtt)) return `<${flatten(getAtt[0])}.${flatten(getAtt[1])}>`;
    if (node['Fn::ImportValue'] !== undefined) return flatten(node['Fn::ImportValue']);
    if (node.Ref !== undefined) return `<${flatten(node.Ref)}>`;
  }
  return JSON.stringify(value);
}
