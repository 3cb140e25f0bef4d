// One emulated Lambda execution environment: imports a function's bundle once (its cold
// start), then runs one invocation at a time as the parent process asks, the way the Lambda
// runtime does. The parent may move this environment's clock forward, so code that reads the
// time (deadlines, "30 s after") can be tested without waiting.
import { pathToFileURL } from 'node:url';

const RealDate = Date;
let offsetMs = 0;
class EmulatedDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(RealDate.now() + offsetMs);
    else super(...args);
  }
  static now() {
    return RealDate.now() + offsetMs;
  }
}
globalThis.Date = EmulatedDate;

const [entry, exportName] = process.argv.slice(2);
const send = (message) => new Promise((resolve) => process.send(message, resolve));

function errorOf(error) {
  return {
    errorType: error?.name ?? 'Error',
    errorMessage: error?.message ?? String(error),
    stackTrace: String(error?.stack ?? '')
      .split('\n')
      .slice(1, 8),
  };
}

let handler;
try {
  const module = await import(pathToFileURL(entry).href);
  handler = module[exportName];
  if (typeof handler !== 'function') throw new Error(`${entry} exports no function named ${exportName}`);
} catch (error) {
  await send({ type: 'init-error', error: errorOf(error) });
  process.exit(1);
}
await send({ type: 'ready' });

process.on('message', async (message) => {
  if (message?.type !== 'invoke') return;
  offsetMs = message.clockOffsetMs ?? 0;
  const deadline = RealDate.now() + message.timeoutMs;
  const context = {
    ...message.context,
    callbackWaitsForEmptyEventLoop: false,
    getRemainingTimeInMillis: () => Math.max(0, deadline - RealDate.now()),
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
  try {
    const value = await handler(message.event, context);
    await send({ type: 'result', id: message.id, value: value === undefined ? null : value });
  } catch (error) {
    await send({ type: 'error', id: message.id, error: errorOf(error) });
  }
});
