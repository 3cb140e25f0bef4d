// The publisher container's settings: where its result goes is decided by what the task
// definition and RunTask gave it, strictly, and a bad setting is named without echoing it.
import { describe, expect, it } from 'vitest';
import { loadPublisherConfig, loadStageConfig } from '../../shared/config.ts';
import { mintUploadSecret } from '../../shared/domain/upload-links.ts';

const base = {
  FERRY_EXECUTION_ID: 'ex_01jh5q8k3m0123456789abcdef',
  FERRY_OUTPUT_LIMITS: JSON.stringify({
    stdoutBytes: 1024,
    stderrBytes: 1024,
    inlineBytes: 64,
    keep: 'tail',
  }),
  AWS_REGION: 'eu-west-1',
};

describe('the publisher’s configuration', () => {
  it('stores through upload links when given the API and the upload secret', () => {
    const secret = mintUploadSecret();

    const config = loadPublisherConfig({
      ...base,
      FERRY_API_URL: 'https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com',
      FERRY_UPLOAD_SECRET: secret,
      PATH: '/usr/bin',
    });

    expect(config.target).toEqual({
      kind: 'links',
      apiUrl: 'https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com',
      uploadSecret: secret,
    });
    expect(config.region).toBe('eu-west-1');
    expect(Object.isFrozen(config.target)).toBe(true);
  });

  it('writes to the bucket when there is no API, the secret notwithstanding', () => {
    const config = loadPublisherConfig({
      ...base,
      FERRY_BUCKET: 'ferry-results',
      FERRY_UPLOAD_SECRET: mintUploadSecret(),
    });

    expect(config.target).toEqual({ kind: 'bucket', bucket: 'ferry-results', forcePathStyle: false });
  });

  it('refuses the API without the secret, and neither the API nor a bucket', () => {
    expect(() =>
      loadPublisherConfig({
        ...base,
        FERRY_API_URL: 'https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com',
      }),
    ).toThrow('FERRY_API_URL is set but FERRY_UPLOAD_SECRET is not');
    expect(() => loadPublisherConfig(base)).toThrow(
      'set FERRY_API_URL (with FERRY_UPLOAD_SECRET) or FERRY_BUCKET',
    );
  });

  it('reads a job’s steps, and hears of none for a plain job', () => {
    const bucket = { ...base, FERRY_BUCKET: 'ferry-results' };
    expect(loadPublisherConfig(bucket).steps).toBeUndefined();
    expect(
      loadPublisherConfig({ ...bucket, FERRY_STEPS: '[{"ignoreError":false},{"ignoreError":true}]' }).steps,
    ).toEqual([{ ignoreError: false }, { ignoreError: true }]);
    expect(() => loadPublisherConfig({ ...bucket, FERRY_STEPS: '[]' })).toThrow(/FERRY_STEPS/);
    expect(() => loadPublisherConfig({ ...bucket, FERRY_STEPS: '[{"ignore":true}]' })).toThrow(/FERRY_STEPS/);
  });

  it('names a malformed secret without repeating it', () => {
    const malformed = `${mintUploadSecret()}!`;

    const error = (() => {
      try {
        loadPublisherConfig({
          ...base,
          FERRY_API_URL: 'https://api.example',
          FERRY_UPLOAD_SECRET: malformed,
        });
      } catch (thrown) {
        return thrown as Error;
      }
      return undefined;
    })();

    expect(error?.message).toMatch(/FERRY_UPLOAD_SECRET: not an upload secret/);
    expect(error?.message).not.toContain(malformed);
  });
});

describe('the stage container’s configuration', () => {
  const order = {
    diskBytes: 20 * 1024 ** 3,
    volumes: [{ writable: false, mountPoints: [] }],
    inputs: [{ url: 's3://data/in.csv', path: '/data/in.csv', type: 'FILE', volume: 0, relative: 'in.csv' }],
  };

  it('takes its orders from FERRY_STAGE, with the defaults for its paths', () => {
    const config = loadStageConfig({
      FERRY_EXECUTION_ID: base.FERRY_EXECUTION_ID,
      FERRY_STAGE: JSON.stringify(order),
      AWS_REGION: 'eu-west-1',
    });
    expect(config).toMatchObject({ order, ioDir: '/ferry/io', dataRoot: '/ferry-data', region: 'eu-west-1' });
  });

  it('names what is wrong in its orders', () => {
    const load = (stage: string) =>
      loadStageConfig({ FERRY_EXECUTION_ID: base.FERRY_EXECUTION_ID, FERRY_STAGE: stage });
    expect(() => load('{')).toThrow('invalid stage configuration: FERRY_STAGE: not JSON');
    expect(() => load(JSON.stringify({ ...order, inputs: [{ ...order.inputs[0], volume: -1 }] }))).toThrow(
      /^invalid stage configuration: FERRY_STAGE: inputs\.0\.volume: /,
    );
  });
});
