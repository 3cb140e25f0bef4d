// Reads what `cdk synth` wrote — the CloudFormation template and the bundled function code —
// into the parts an emulated deployment needs: the functions (code, handler, environment,
// timeout, role), the queues, table, bucket, cluster, rules, the event source mapping, the
// HTTP API's route, and every role's policies. CloudFormation's intrinsic functions are
// resolved against the physical names the emulator gave each resource.
import fs from 'node:fs';
import path from 'node:path';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

interface Resource {
  readonly Type: string;
  readonly Properties?: Record<string, Json>;
  readonly DependsOn?: string | string[];
}

export interface Template {
  readonly Resources: Record<string, Resource>;
}

/** What a resource is called once it exists: its `Ref` and its `Fn::GetAtt` attributes. */
export interface Physical {
  readonly ref: string;
  readonly attributes?: Readonly<Record<string, string>>;
}

export interface Pseudo {
  readonly accountId: string;
  readonly region: string;
  readonly stackName: string;
}

export class TemplateError extends Error {}

/** Resolves intrinsic functions against `physical`; a reference to anything unknown throws. */
export class Resolver {
  constructor(
    private readonly physical: ReadonlyMap<string, Physical>,
    private readonly pseudo: Pseudo,
  ) {}

  resolve(value: Json): Json {
    if (Array.isArray(value)) return value.map((item) => this.resolve(item));
    if (value === null || typeof value !== 'object') return value;
    const keys = Object.keys(value);
    if (keys.length === 1) {
      const [name] = keys as [string];
      const argument = value[name] as Json;
      switch (name) {
        case 'Ref':
          return this.ref(String(argument));
        case 'Fn::GetAtt': {
          const [id, attribute] = Array.isArray(argument)
            ? (argument as string[])
            : String(argument).split(/\.(.*)/s);
          return this.attribute(String(id), String(attribute));
        }
        case 'Fn::Join': {
          const [separator, items] = argument as [string, Json];
          const list = this.resolve(items);
          if (!Array.isArray(list)) throw new TemplateError('Fn::Join over something not a list');
          return list.map(String).join(separator);
        }
        case 'Fn::Sub':
          return this.sub(argument);
        case 'Fn::Select': {
          const [index, items] = argument as [number | string, Json];
          const list = this.resolve(items);
          if (!Array.isArray(list)) throw new TemplateError('Fn::Select over something not a list');
          return list[Number(index)] ?? null;
        }
        case 'Fn::Split': {
          const [separator, text] = argument as [string, Json];
          return String(this.resolve(text)).split(separator);
        }
        default:
          if (name.startsWith('Fn::')) throw new TemplateError(`${name} is not supported by the emulator`);
      }
    }
    return Object.fromEntries(keys.map((key) => [key, this.resolve(value[key] as Json)]));
  }

  resolveString(value: Json | undefined, what: string): string {
    const resolved = value === undefined ? undefined : this.resolve(value);
    if (typeof resolved !== 'string' && typeof resolved !== 'number') {
      throw new TemplateError(`${what} does not resolve to a string`);
    }
    return String(resolved);
  }

  private ref(id: string): string {
    switch (id) {
      case 'AWS::AccountId':
        return this.pseudo.accountId;
      case 'AWS::Region':
        return this.pseudo.region;
      case 'AWS::Partition':
        return 'aws';
      case 'AWS::URLSuffix':
        return 'amazonaws.com';
      case 'AWS::StackName':
        return this.pseudo.stackName;
    }
    const found = this.physical.get(id);
    if (found === undefined) throw new TemplateError(`Ref ${id}: the emulator did not create it`);
    return found.ref;
  }

  private attribute(id: string, attribute: string): string {
    const value = this.physical.get(id)?.attributes?.[attribute];
    if (value === undefined)
      throw new TemplateError(`Fn::GetAtt ${id}.${attribute}: unknown to the emulator`);
    return value;
  }

  private sub(argument: Json): string {
    const [text, variables] = Array.isArray(argument)
      ? (argument as [string, Record<string, Json>])
      : [String(argument), {}];
    return text.replace(/\$\{([^}!][^}]*)\}/g, (_, name: string) => {
      if (name in variables) return String(this.resolve(variables[name] as Json));
      const [id, attribute] = name.split(/\.(.*)/s) as [string, string | undefined];
      return attribute === undefined ? this.ref(id) : this.attribute(id, attribute);
    });
  }
}

export interface PolicyDocument {
  readonly Version?: string;
  readonly Statement: readonly Record<string, unknown>[];
}

export interface FunctionModel {
  readonly logicalId: string;
  /** The export of the bundle the handler names (`index.api` → `api`). */
  readonly handlerExport: string;
  /** The directory holding the bundle (`index.mjs`). */
  readonly codeDir: string;
  readonly environment: Readonly<Record<string, Json>>;
  readonly timeoutSeconds: number;
  readonly memoryMiB: number;
  readonly roleLogicalId: string;
}

/** The parts of a synthesized Ferry stack an emulated deployment runs. */
export interface DeploymentModel {
  readonly template: Template;
  readonly functions: readonly FunctionModel[];
  readonly resourcesOfType: (type: string) => [string, Resource][];
}

/** A cloud assembly directory (`cdk.out`): its one stack's template and its assets. */
export function readAssembly(dir: string): DeploymentModel {
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as {
    artifacts: Record<string, { type: string; properties?: { templateFile?: string } }>;
  };
  const stacks = Object.values(manifest.artifacts).filter((a) => a.type === 'aws:cloudformation:stack');
  if (stacks.length !== 1 || stacks[0]?.properties?.templateFile === undefined) {
    throw new TemplateError(`${dir}: expected one stack in the cloud assembly, found ${stacks.length}`);
  }
  const template = JSON.parse(
    fs.readFileSync(path.join(dir, stacks[0].properties.templateFile), 'utf8'),
  ) as Template;
  const resourcesOfType = (type: string) =>
    Object.entries(template.Resources).filter(([, resource]) => resource.Type === type);

  const functions = resourcesOfType('AWS::Lambda::Function')
    .filter(([, r]) => String(r.Properties?.Handler ?? '').startsWith('index.'))
    .map(([logicalId, r]): FunctionModel => {
      const p = r.Properties ?? {};
      const code = p.Code as { S3Key?: string } | undefined;
      const hash = code?.S3Key?.replace(/\.zip$/, '');
      const codeDir = path.join(dir, `asset.${hash}`);
      if (hash === undefined || !fs.existsSync(path.join(codeDir, 'index.mjs'))) {
        throw new TemplateError(
          `${logicalId}: its bundle asset.${hash}/index.mjs is missing; synthesize with bundling on`,
        );
      }
      const role = p.Role as { 'Fn::GetAtt'?: [string, string] } | undefined;
      const roleLogicalId = role?.['Fn::GetAtt']?.[0];
      if (roleLogicalId === undefined) throw new TemplateError(`${logicalId}: its role is not in the stack`);
      return {
        logicalId,
        handlerExport: String(p.Handler).slice('index.'.length),
        codeDir,
        environment: ((p.Environment as { Variables?: Record<string, Json> } | undefined)?.Variables ??
          {}) as Record<string, Json>,
        timeoutSeconds: Number(p.Timeout ?? 3),
        memoryMiB: Number(p.MemorySize ?? 128),
        roleLogicalId,
      };
    });
  return { template, functions, resourcesOfType };
}

/** The identity policies of a role: its own `Policies` and every AWS::IAM::Policy attached to it. */
export function rolePolicies(
  model: DeploymentModel,
  roleLogicalId: string,
  resolver: Resolver,
): { name: string; document: PolicyDocument }[] {
  const role = model.template.Resources[roleLogicalId];
  if (role?.Type !== 'AWS::IAM::Role') throw new TemplateError(`${roleLogicalId} is not a role`);
  const managed = (role.Properties?.ManagedPolicyArns as Json[] | undefined) ?? [];
  if (managed.length > 0) {
    throw new TemplateError(`${roleLogicalId} has managed policies, which the emulator cannot read`);
  }
  const inline = ((role.Properties?.Policies as { PolicyName: string; PolicyDocument: Json }[]) ?? []).map(
    (p) => ({
      name: p.PolicyName,
      document: resolver.resolve(p.PolicyDocument) as unknown as PolicyDocument,
    }),
  );
  const attached = model
    .resourcesOfType('AWS::IAM::Policy')
    .filter(([, policy]) =>
      ((policy.Properties?.Roles as { Ref?: string }[] | undefined) ?? []).some(
        (r) => r.Ref === roleLogicalId,
      ),
    )
    .map(([id, policy]) => ({
      name: id,
      document: resolver.resolve(policy.Properties?.PolicyDocument ?? null) as unknown as PolicyDocument,
    }));
  return [...inline, ...attached];
}

/**
 * The name and ARN each resource would have once deployed as `prefix`: what `Ref` and
 * `Fn::GetAtt … Arn` resolve to. Resources the emulator creates with names of their own
 * (subnets, security groups) are given those by the caller, in `given`.
 */
export function physicalNames(
  template: Template,
  pseudo: Pseudo,
  prefix: string,
  given: ReadonlyMap<string, Physical> = new Map(),
): Map<string, Physical> {
  const { accountId: account, region } = pseudo;
  const out = new Map<string, Physical>(given);
  for (const [id, resource] of Object.entries(template.Resources)) {
    if (out.has(id)) continue;
    const name = `${prefix}-${id}`.slice(0, 63);
    const lower = name.toLowerCase();
    switch (resource.Type) {
      case 'AWS::DynamoDB::Table':
        out.set(id, {
          ref: name,
          attributes: { Arn: `arn:aws:dynamodb:${region}:${account}:table/${name}` },
        });
        break;
      case 'AWS::S3::Bucket':
        out.set(id, {
          ref: lower,
          attributes: { Arn: `arn:aws:s3:::${lower}`, DomainName: `${lower}.s3.amazonaws.com` },
        });
        break;
      case 'AWS::SQS::Queue':
        out.set(id, {
          ref: `https://sqs.${region}.amazonaws.com/${account}/${name}`,
          attributes: { Arn: `arn:aws:sqs:${region}:${account}:${name}`, QueueName: name },
        });
        break;
      case 'AWS::ECS::Cluster':
        out.set(id, { ref: name, attributes: { Arn: `arn:aws:ecs:${region}:${account}:cluster/${name}` } });
        break;
      case 'AWS::IAM::Role':
        out.set(id, {
          ref: name,
          attributes: { Arn: `arn:aws:iam::${account}:role/${name}`, RoleId: `AROA${id}` },
        });
        break;
      case 'AWS::Lambda::Function':
        out.set(id, {
          ref: name,
          attributes: { Arn: `arn:aws:lambda:${region}:${account}:function:${name}` },
        });
        break;
      case 'AWS::Logs::LogGroup':
        out.set(id, {
          ref: name,
          attributes: { Arn: `arn:aws:logs:${region}:${account}:log-group:${name}:*` },
        });
        break;
      case 'AWS::Events::Rule':
        out.set(id, { ref: name, attributes: { Arn: `arn:aws:events:${region}:${account}:rule/${name}` } });
        break;
      case 'AWS::ApiGatewayV2::Api': {
        const apiId = lower.replace(/[^a-z0-9]/g, '').slice(-10);
        out.set(id, {
          ref: apiId,
          attributes: { ApiId: apiId, ApiEndpoint: `https://${apiId}.execute-api.${region}.amazonaws.com` },
        });
        break;
      }
      default:
        out.set(id, { ref: name, attributes: { Arn: `arn:aws:${prefix}:${region}:${account}:${id}` } });
    }
  }
  return out;
}
