// The dispatcher handler: an SQS batch of dispatch messages. Each message is decided on its
// own; a message that fails is reported back so SQS delivers it again, and only it.
import middy from '@middy/core';
import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import type { Core } from '#shared/core.ts';
import type { DispatchMessage } from '#shared/ports.ts';
import { dispatch } from '#shared/use-cases/dispatch.ts';

function decode(body: string): DispatchMessage | undefined {
  try {
    const parsed = JSON.parse(body) as Partial<DispatchMessage>;
    if (typeof parsed.executionId !== 'string') return undefined;
    return {
      executionId: parsed.executionId,
      ...(typeof parsed.token === 'string' ? { token: parsed.token } : {}),
    };
  } catch {
    return undefined;
  }
}

export function createDispatcherHandler(core: Core) {
  return middy<SQSEvent, SQSBatchResponse>().handler(async (event) => {
    const batchItemFailures: SQSBatchResponse['batchItemFailures'] = [];
    for (const record of event.Records) {
      const message = decode(record.body);
      if (message === undefined) {
        // Retrying cannot fix it; drop it loudly rather than poison the queue.
        core.log.error('dropping a malformed dispatch message', {
          messageId: record.messageId,
          body: record.body,
        });
        continue;
      }
      try {
        const result = await dispatch(core, message);
        core.log.debug('dispatched', { executionId: message.executionId, ...result });
      } catch (error) {
        core.log.warn('dispatch failed; the message will be delivered again', {
          executionId: message.executionId,
          error,
        });
        batchItemFailures.push({ itemIdentifier: record.messageId });
      }
    }
    return { batchItemFailures };
  });
}
