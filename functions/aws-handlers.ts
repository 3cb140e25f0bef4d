// Lambda entry points. The AWS dependencies are built once, at cold start, from validated
// config; each exported handler is what one function runs.
import { loadConfig } from '#shared/config.ts';
import { buildAwsCore } from '#shared/runtime/aws.ts';
import { createApiHandler } from './api.ts';
import { createDispatcherHandler } from './dispatcher.ts';
import { createSweeperHandler } from './sweeper.ts';
import { createTaskEventsHandler } from './task-events.ts';

const core = buildAwsCore(loadConfig(process.env));

export const api = createApiHandler(core);
export const dispatcher = createDispatcherHandler(core);
export const taskEvents = createTaskEventsHandler(core);
export const sweeper = createSweeperHandler(core);
