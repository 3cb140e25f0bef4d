// The CDK app behind `npx cdk deploy`: one stack holding one FerryExecutor, checked by
// cdk-nag's AwsSolutions pack on every synth. Options come as context (-c key=value).
import { App, CfnOutput, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { FerryExecutor, type FerryNetwork } from './ferry-executor.ts';

const app = new App();
const context = (key: string): string | undefined => {
  const value: unknown = app.node.tryGetContext(key);
  return value === undefined || value === null || value === '' ? undefined : String(value);
};

const layout = context('ferry:network') ?? 'public-subnets';
if (layout !== 'public-subnets' && layout !== 'isolated-subnets') {
  throw new Error(`-c ferry:network=${layout}: use public-subnets or isolated-subnets`);
}
const network: FerryNetwork = { layout };
const capacityProvider = context('ferry:capacityProvider');
if (capacityProvider !== undefined && capacityProvider !== 'FARGATE' && capacityProvider !== 'FARGATE_SPOT') {
  throw new Error(`-c ferry:capacityProvider=${capacityProvider}: use FARGATE or FARGATE_SPOT`);
}

/** A whole-number context value within bounds, or undefined when it is not given. */
const wholeNumber = (key: string, min: number, max: number): number | undefined => {
  const text = context(key);
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`-c ${key}=${text}: use a whole number from ${min} to ${max}`);
  }
  return value;
};
const capacity = {
  ...(capacityProvider === undefined
    ? {}
    : { capacityProvider: capacityProvider as 'FARGATE' | 'FARGATE_SPOT' }),
  ...optional('maxConcurrentJobs', wholeNumber('ferry:maxConcurrentJobs', 1, 100_000)),
  ...optional('maxVcpus', wholeNumber('ferry:maxVcpus', 1, 1_000_000)),
  ...optional('maxMemoryMiB', wholeNumber('ferry:maxMemoryMiB', 512, 1_000_000_000)),
};
const dispatcherConcurrency = wholeNumber('ferry:dispatcherConcurrency', 2, 1000);

function optional<K extends string>(key: K, value: number | undefined): { [P in K]?: number } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: number };
}

const removal = context('ferry:removalPolicy') ?? 'retain';
if (removal !== 'retain' && removal !== 'destroy') {
  throw new Error(`-c ferry:removalPolicy=${removal}: use retain or destroy`);
}

// Environment-agnostic on purpose: synth needs no AWS account, credentials or lookups;
// `cdk deploy` picks the account and region from the credentials it is given.
const stack = new Stack(app, context('ferry:stackName') ?? 'Ferry', {
  description: 'Ferry: a serverless job executor on Lambda, SQS, DynamoDB, S3 and ECS Fargate',
});
const ferry = new FerryExecutor(stack, 'Executor', {
  network,
  removalPolicy: removal === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
  ...(Object.keys(capacity).length === 0 ? {} : { capacity }),
  ...(dispatcherConcurrency === undefined ? {} : { dispatcherConcurrency }),
});

new CfnOutput(stack, 'ApiUrl', { value: ferry.url, description: 'FERRY_URL for the CLI (SigV4-signed)' });
new CfnOutput(stack, 'ResultsBucket', { value: ferry.resultsBucket.bucketName });
new CfnOutput(stack, 'DeadLetterQueue', { value: ferry.deadLetterQueue.queueUrl });

Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
