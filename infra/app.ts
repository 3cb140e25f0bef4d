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
  ...(capacityProvider === undefined ? {} : { capacity: { capacityProvider } }),
});

new CfnOutput(stack, 'ApiUrl', { value: ferry.url, description: 'FERRY_URL for the CLI (SigV4-signed)' });
new CfnOutput(stack, 'ResultsBucket', { value: ferry.resultsBucket.bucketName });
new CfnOutput(stack, 'DeadLetterQueue', { value: ferry.deadLetterQueue.queueUrl });

Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
