// An in-process queue with SQS's semantics: delivery delay, a visibility timeout after
// each receive, redelivery when a message is not deleted in time, and a dead-letter list
// after too many receives. Messages live in memory; the local runtime re-sends what the
// store says is queued when it starts, so a restart loses no job.
import { randomUUID } from 'node:crypto';
import type { DispatchMessage, JobQueue } from '../../ports.ts';

export interface ReceivedMessage {
  readonly messageId: string;
  readonly receiptHandle: string;
  readonly body: string;
  readonly receiveCount: number;
  readonly sentAt: number;
}

interface StoredMessage {
  readonly messageId: string;
  readonly body: string;
  readonly sentAt: number;
  visibleAt: number;
  receiveCount: number;
  receiptHandle?: string;
}

export interface LocalQueueOptions {
  readonly visibilitySeconds: number;
  readonly maxReceives: number;
  readonly now?: () => number;
}

export class LocalQueue implements JobQueue {
  private readonly messages = new Map<string, StoredMessage>();
  readonly deadLetters: ReceivedMessage[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly now: () => number;

  constructor(private readonly options: LocalQueueOptions) {
    this.now = options.now ?? Date.now;
  }

  async send(message: DispatchMessage, options: { delaySeconds?: number } = {}): Promise<void> {
    const at = this.now();
    const messageId = randomUUID();
    this.messages.set(messageId, {
      messageId,
      body: JSON.stringify(message),
      sentAt: at,
      visibleAt: at + (options.delaySeconds ?? 0) * 1000,
      receiveCount: 0,
    });
    this.wake();
  }

  /** Up to `max` visible messages, each hidden for the visibility timeout; waits up to `waitMs` for one. */
  async receive(max: number, waitMs: number): Promise<ReceivedMessage[]> {
    const deadline = this.now() + waitMs;
    for (;;) {
      const batch = this.take(max);
      if (batch.length > 0) return batch;
      const left = deadline - this.now();
      if (left <= 0) return [];
      await this.sleepUntilSomething(Math.min(left, this.msUntilNextVisible()));
    }
  }

  async delete(receiptHandle: string): Promise<void> {
    for (const [id, message] of this.messages) {
      if (message.receiptHandle === receiptHandle) this.messages.delete(id);
    }
  }

  async changeVisibility(receiptHandle: string, seconds: number): Promise<void> {
    for (const message of this.messages.values()) {
      if (message.receiptHandle === receiptHandle) message.visibleAt = this.now() + seconds * 1000;
    }
    this.wake();
  }

  /**
   * Makes up to `max` messages still waiting out their delivery delay visible now, those due
   * soonest first; received (in-flight) messages stay hidden. Local only: the runtime calls
   * it when capacity frees, so a deferred job need not wait out its whole delay.
   */
  releaseDelayed(max: number): void {
    const now = this.now();
    const delayed = [...this.messages.values()]
      .filter((m) => m.receiptHandle === undefined && m.visibleAt > now)
      .sort((a, b) => a.visibleAt - b.visibleAt)
      .slice(0, max);
    for (const message of delayed) message.visibleAt = now;
    if (delayed.length > 0) this.wake();
  }

  /** Messages not yet deleted, visible or not (ApproximateNumberOfMessages + NotVisible). */
  get depth(): number {
    return this.messages.size;
  }

  private take(max: number): ReceivedMessage[] {
    const now = this.now();
    const batch: ReceivedMessage[] = [];
    const visible = [...this.messages.values()]
      .filter((m) => m.visibleAt <= now)
      .sort((a, b) => a.sentAt - b.sentAt);
    for (const message of visible) {
      if (batch.length >= max) break;
      message.receiveCount++;
      const receiptHandle = randomUUID();
      const received = { ...message, receiptHandle };
      if (message.receiveCount > this.options.maxReceives) {
        this.messages.delete(message.messageId);
        this.deadLetters.push(received);
        continue;
      }
      message.receiptHandle = receiptHandle;
      message.visibleAt = now + this.options.visibilitySeconds * 1000;
      batch.push(received);
    }
    return batch;
  }

  private msUntilNextVisible(): number {
    const now = this.now();
    let next = Number.POSITIVE_INFINITY;
    for (const message of this.messages.values()) next = Math.min(next, message.visibleAt - now);
    return Math.max(1, next);
  }

  private sleepUntilSomething(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}
