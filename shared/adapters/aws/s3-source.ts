// S3Source on the AWS SDK: inputs read from any bucket the credentials reach. A client made
// with no options takes the usual credential chain, region and endpoint settings
// (AWS_ENDPOINT_URL_S3 for an emulator).
import type { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import type { S3Source } from '../../ports.ts';
import { isMissing } from './s3-object-store.ts';

export class SdkS3Source implements S3Source {
  private readonly s3: S3Client;

  constructor(client?: S3Client) {
    this.s3 =
      client ??
      new S3Client({ region: process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1' });
  }

  async head(bucket: string, key: string): Promise<number | undefined> {
    try {
      const reply = await this.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      return reply.ContentLength ?? 0;
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  async *list(bucket: string, prefix: string): AsyncIterable<{ key: string; bytes: number }> {
    let token: string | undefined;
    do {
      const page = await this.s3.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const object of page.Contents ?? []) {
        if (object.Key !== undefined) yield { key: object.Key, bytes: object.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async open(bucket: string, key: string, signal?: AbortSignal): Promise<Readable> {
    const reply = await this.s3.send(
      new GetObjectCommand({ Bucket: bucket, Key: key }),
      signal === undefined ? {} : { abortSignal: signal },
    );
    if (reply.Body === undefined) throw new Error(`s3://${bucket}/${key} has no body`);
    return reply.Body as Readable;
  }
}
