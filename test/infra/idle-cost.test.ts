// Free when idle: what the synthesized template would bill while no job runs, by default and
// with the isolated network layout (which buys enforcement of network "none" with endpoints).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hourlyWhileIdle, monthlyWhileIdle } from './idle-costs.ts';
import { type Synthesized, synthFerry } from './synth.ts';

let open: Synthesized;
let isolated: Synthesized;
beforeAll(() => {
  open = synthFerry();
  isolated = synthFerry({ network: { layout: 'isolated-subnets' } });
});
afterAll(() => {
  open?.cleanup();
  isolated?.cleanup();
});

describe('the idle-cost check', () => {
  it('finds what bills by the hour and passes over what bills by use', () => {
    const template = {
      Resources: {
        Nat: { Type: 'AWS::EC2::NatGateway', Properties: {} },
        Provisioned: { Type: 'AWS::DynamoDB::Table', Properties: { BillingMode: 'PROVISIONED' } },
        DefaultBilling: { Type: 'AWS::DynamoDB::Table', Properties: {} },
        OnDemand: { Type: 'AWS::DynamoDB::Table', Properties: { BillingMode: 'PAY_PER_REQUEST' } },
        Interface: { Type: 'AWS::EC2::VPCEndpoint', Properties: { VpcEndpointType: 'Interface' } },
        Gateway: { Type: 'AWS::EC2::VPCEndpoint', Properties: { VpcEndpointType: 'Gateway' } },
        Balancer: { Type: 'AWS::ElasticLoadBalancingV2::LoadBalancer', Properties: {} },
        Stream: {
          Type: 'AWS::Kinesis::Stream',
          Properties: { StreamModeDetails: { StreamMode: 'ON_DEMAND' } },
        },
        Function: { Type: 'AWS::Lambda::Function', Properties: {} },
        Queue: { Type: 'AWS::SQS::Queue', Properties: {} },
        Key: { Type: 'AWS::KMS::Key', Properties: {} },
      },
    };
    expect(hourlyWhileIdle(template).map((c) => c.logicalId)).toEqual([
      'Nat',
      'Provisioned',
      'DefaultBilling',
      'Interface',
      'Balancer',
      'Stream',
    ]);
    expect(monthlyWhileIdle(template).map((c) => c.logicalId)).toEqual(['Key']);
  });
});

describe('the default deployment', () => {
  it('has nothing billed by the hour while idle', () => {
    expect(hourlyWhileIdle(open.template.toJSON())).toEqual([]);
  });

  it('has two fixed monthly fees: the dead-letter alarms (within the free tier of 10 alarms)', () => {
    const monthly = monthlyWhileIdle(open.template.toJSON());
    expect(monthly.map((c) => c.logicalId).sort()).toEqual(
      [open.id(open.ferry.deadLetterAlarm), open.id(open.ferry.taskEventDeadLetterAlarm)].sort(),
    );
    for (const cost of monthly) expect(cost.type).toBe('AWS::CloudWatch::Alarm');
  });
});

describe('the isolated network layout', () => {
  it('bills its interface endpoints by the hour, and nothing else', () => {
    const hourly = hourlyWhileIdle(isolated.template.toJSON());
    expect(hourly.map((c) => c.type)).toEqual([
      'AWS::EC2::VPCEndpoint',
      'AWS::EC2::VPCEndpoint',
      'AWS::EC2::VPCEndpoint',
    ]);
    const services = Object.values(isolated.template.findResources('AWS::EC2::VPCEndpoint')).map((e) => [
      e.Properties.VpcEndpointType,
      JSON.stringify(e.Properties.ServiceName),
    ]);
    expect(services.map(([type]) => type).sort()).toEqual(['Gateway', 'Interface', 'Interface', 'Interface']);
    for (const service of ['.ecr.api', '.ecr.dkr', '.logs', '.s3']) {
      expect(services.some(([, name]) => name?.includes(service))).toBe(true);
    }
  });
});
