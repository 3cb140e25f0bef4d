// Which resources of a CloudFormation template cost money while nothing runs: those billed
// by the hour for merely existing, and those with a fixed monthly fee. Pay-per-use resources
// (Lambda, SQS, on-demand DynamoDB, S3, API Gateway, EventBridge, Fargate tasks) are not listed.

export interface IdleCharge {
  readonly logicalId: string;
  readonly type: string;
  readonly why: string;
}

interface Resource {
  readonly Type: string;
  readonly Properties?: Record<string, unknown>;
}

type Rule = (properties: Record<string, unknown>) => string | undefined;

const always =
  (why: string): Rule =>
  () =>
    why;
const positive = (value: unknown) => value !== undefined && Number(value) > 0;

/** Billed per hour (or per second) for as long as the resource exists, used or not. */
const HOURLY: Readonly<Record<string, Rule>> = {
  'AWS::EC2::NatGateway': always('NAT gateway: per hour, plus per GB'),
  'AWS::EC2::EIP': always('public IPv4 address: per hour'),
  'AWS::EC2::Instance': always('EC2 instance: per second while running'),
  'AWS::EC2::Host': always('dedicated host: per hour'),
  'AWS::EC2::Volume': always('EBS volume: per GB-month provisioned'),
  'AWS::EC2::VPCEndpoint': (p) =>
    p.VpcEndpointType === 'Interface' || p.VpcEndpointType === 'GatewayLoadBalancer'
      ? `${String(p.VpcEndpointType)} VPC endpoint: per AZ per hour`
      : undefined,
  'AWS::EC2::TransitGateway': always('transit gateway: per attachment-hour'),
  'AWS::EC2::TransitGatewayAttachment': always('transit gateway attachment: per hour'),
  'AWS::EC2::TransitGatewayVpcAttachment': always('transit gateway attachment: per hour'),
  'AWS::EC2::VPNConnection': always('site-to-site VPN: per connection-hour'),
  'AWS::EC2::ClientVpnTargetNetworkAssociation': always('client VPN: per association-hour'),
  'AWS::EC2::SpotFleet': always('spot fleet: instances per second'),
  'AWS::EC2::EC2Fleet': always('EC2 fleet: instances per second'),
  'AWS::AutoScaling::AutoScalingGroup': (p) =>
    positive(p.MinSize) || positive(p.DesiredCapacity)
      ? 'Auto Scaling group with instances kept running'
      : undefined,
  'AWS::ElasticLoadBalancing::LoadBalancer': always('classic load balancer: per hour'),
  'AWS::ElasticLoadBalancingV2::LoadBalancer': always('load balancer: per hour plus LCU-hours'),
  'AWS::NetworkFirewall::Firewall': always('network firewall: per endpoint-hour'),
  'AWS::GlobalAccelerator::Accelerator': always('global accelerator: per hour'),
  'AWS::Route53Resolver::ResolverEndpoint': always('resolver endpoint: per ENI-hour'),
  'AWS::RDS::DBInstance': always('RDS instance: per hour'),
  'AWS::RDS::DBCluster': always('Aurora/RDS cluster: instance or capacity hours, storage'),
  'AWS::RDS::DBProxy': always('RDS proxy: per vCPU-hour'),
  'AWS::Neptune::DBInstance': always('Neptune instance: per hour'),
  'AWS::DocDB::DBInstance': always('DocumentDB instance: per hour'),
  'AWS::Redshift::Cluster': always('Redshift cluster: per node-hour'),
  'AWS::RedshiftServerless::Workgroup': always('Redshift Serverless: base capacity'),
  'AWS::ElastiCache::CacheCluster': always('ElastiCache node: per hour'),
  'AWS::ElastiCache::ReplicationGroup': always('ElastiCache nodes: per hour'),
  'AWS::ElastiCache::ServerlessCache': always('ElastiCache Serverless: minimum data stored per hour'),
  'AWS::MemoryDB::Cluster': always('MemoryDB node: per hour'),
  'AWS::DAX::Cluster': always('DAX node: per hour'),
  'AWS::OpenSearchService::Domain': always('OpenSearch instance: per hour'),
  'AWS::Elasticsearch::Domain': always('Elasticsearch instance: per hour'),
  'AWS::OpenSearchServerless::Collection': always('OpenSearch Serverless: minimum OCU-hours'),
  'AWS::MSK::Cluster': always('MSK broker: per hour'),
  'AWS::AmazonMQ::Broker': always('Amazon MQ broker: per hour'),
  'AWS::Kinesis::Stream': always('Kinesis stream: per shard-hour or stream-hour (on-demand too)'),
  'AWS::KinesisAnalyticsV2::Application': always('Managed Flink: per KPU-hour'),
  'AWS::DynamoDB::Table': (p) =>
    p.BillingMode === 'PAY_PER_REQUEST' ? undefined : 'provisioned DynamoDB capacity: per capacity-unit-hour',
  'AWS::DynamoDB::GlobalTable': (p) =>
    p.BillingMode === 'PROVISIONED' ? 'provisioned DynamoDB capacity: per capacity-unit-hour' : undefined,
  'AWS::ECS::Service': (p) => (p.DesiredCount === 0 ? undefined : 'ECS service: its tasks run all the time'),
  'AWS::EKS::Cluster': always('EKS control plane: per hour'),
  'AWS::EKS::Nodegroup': always('EKS nodes: per hour'),
  'AWS::Lambda::Version': (p) =>
    p.ProvisionedConcurrencyConfig === undefined ? undefined : 'provisioned concurrency: per GB-second',
  'AWS::Lambda::Alias': (p) =>
    p.ProvisionedConcurrencyConfig === undefined ? undefined : 'provisioned concurrency: per GB-second',
  'AWS::ApiGateway::Stage': (p) => (p.CacheClusterEnabled === true ? 'API cache: per hour' : undefined),
  'AWS::SageMaker::Endpoint': always('SageMaker endpoint: instance-hours'),
  'AWS::SageMaker::NotebookInstance': always('SageMaker notebook: instance-hours'),
  'AWS::AppRunner::Service': always('App Runner: provisioned memory per hour'),
  'AWS::EMR::Cluster': always('EMR: instance-hours'),
  'AWS::Batch::ComputeEnvironment': (p) => {
    const resources = p.ComputeResources as Record<string, unknown> | undefined;
    return positive(resources?.MinvCpus) ? 'Batch compute environment with minimum vCPUs' : undefined;
  },
  'AWS::FSx::FileSystem': always('FSx: per GB-month and throughput'),
  'AWS::DirectoryService::MicrosoftAD': always('Managed AD: per hour'),
  'AWS::DirectoryService::SimpleAD': always('Simple AD: per hour'),
  'AWS::WorkSpaces::Workspace': always('WorkSpaces: monthly or hourly'),
  'AWS::Glue::DevEndpoint': always('Glue dev endpoint: per DPU-hour'),
};

/** A fixed fee per month (prorated), whatever the traffic. */
const MONTHLY: Readonly<Record<string, Rule>> = {
  'AWS::CloudWatch::Alarm': always('CloudWatch alarm: $0.10 per alarm metric-month (10 free per account)'),
  'AWS::CloudWatch::CompositeAlarm': always('composite alarm: $0.50 per month'),
  'AWS::CloudWatch::Dashboard': always('dashboard: $3 per month (3 free)'),
  'AWS::KMS::Key': always('customer managed KMS key: $1 per month'),
  'AWS::SecretsManager::Secret': always('secret: $0.40 per month'),
  'AWS::Route53::HostedZone': always('hosted zone: $0.50 per month'),
  'AWS::WAFv2::WebACL': always('web ACL: $5 per month plus rules'),
  'AWS::ACMPCA::CertificateAuthority': always('private CA: $400 per month'),
  'AWS::SSM::Parameter': (p) => (p.Tier === 'Advanced' ? 'advanced parameter: $0.05 per month' : undefined),
  'AWS::Shield::Protection': always('Shield Advanced subscription'),
};

function classify(template: unknown, rules: Readonly<Record<string, Rule>>): IdleCharge[] {
  const resources = ((template as { Resources?: Record<string, Resource> }).Resources ?? {}) as Record<
    string,
    Resource
  >;
  const charges: IdleCharge[] = [];
  for (const [logicalId, resource] of Object.entries(resources)) {
    const rule = rules[resource.Type];
    const why = rule?.(resource.Properties ?? {});
    if (why !== undefined) charges.push({ logicalId, type: resource.Type, why });
  }
  return charges;
}

/** Resources billed by the hour whether or not anything runs. */
export const hourlyWhileIdle = (template: unknown): IdleCharge[] => classify(template, HOURLY);

/** Resources with a fixed monthly fee. */
export const monthlyWhileIdle = (template: unknown): IdleCharge[] => classify(template, MONTHLY);
