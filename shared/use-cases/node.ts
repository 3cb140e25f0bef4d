// What this executor offers: capacity, what is in use, per-job limits, the backend.

import type { Core } from '../core.ts';
import { FARGATE_LIMITS } from '../domain/fargate.ts';
import { JOB_LIMITS } from '../domain/job-spec.ts';
import { currentUsage } from './usage.ts';

/** How far back the node's history goes in its description. */
export const HISTORY_WINDOW_MS = 3600_000;

export async function describeNode(core: Core) {
  const usage = await currentUsage(core);
  const history = (await core.history?.since(new Date(core.clock.now().getTime() - HISTORY_WINDOW_MS))) ?? [];
  const { capacity, policy, profile } = core.settings;
  const networks: ('none' | 'egress')[] = policy.allowEgress ? ['none', 'egress'] : ['none'];
  const sum = (key: 'cpu' | 'memoryMiB') => usage.active.reduce((total, d) => total + d[key], 0);
  return {
    version: core.settings.version,
    backend: profile.platform,
    isolated: profile.platform !== 'process',
    capacity: {
      maxConcurrency: capacity.maxConcurrency,
      cpu: capacity.maxCpu,
      memoryMiB: capacity.maxMemoryMiB,
      starvationSeconds: capacity.starvationSeconds,
    },
    usage: {
      runningJobs: usage.active.length,
      queuedJobs: usage.queuedJobs ?? usage.waiting.length,
      cpu: Math.round(sum('cpu') * 1000) / 1000,
      memoryMiB: sum('memoryMiB'),
    },
    history: [...history],
    perJobLimits: {
      cpu: profile.platform === 'fargate' ? FARGATE_LIMITS.maxCpu : profile.maxCpu,
      memoryMiB: profile.platform === 'fargate' ? FARGATE_LIMITS.maxMemoryMiB : profile.maxMemoryMiB,
      gpu: profile.supportsGpu,
      timeoutSeconds: { min: policy.minTimeoutSeconds, max: policy.maxTimeoutSeconds },
      outputBytesPerStream: policy.maxOutputBytes,
      network: networks,
      images: { allow: policy.imageAllow, deny: policy.imageDeny, registries: policy.registryAllow },
      commandArgs: JOB_LIMITS.commandArgs as number,
      envEntries: JOB_LIMITS.envEntries as number,
    },
  };
}
