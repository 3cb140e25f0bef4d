// Fargate's task sizes and prices. A request is rounded up to the cheapest valid
// CPU/memory pair that covers it; what cannot fit is declined with the limits named.
import { formatMiB } from './units.ts';

export interface FargateSize {
  /** CPU units: 1024 = 1 vCPU. */
  readonly cpuUnits: number;
  readonly memoryMiB: number;
}

const range = (from: number, to: number, step: number): number[] => {
  const values: number[] = [];
  for (let value = from; value <= to; value += step) values.push(value);
  return values;
};

/** Every valid task-level CPU/memory pair for Linux tasks on Fargate. */
export const FARGATE_SIZES: readonly FargateSize[] = [
  ...[512, 1024, 2048].map((memoryMiB) => ({ cpuUnits: 256, memoryMiB })),
  ...range(1024, 4096, 1024).map((memoryMiB) => ({ cpuUnits: 512, memoryMiB })),
  ...range(2048, 8192, 1024).map((memoryMiB) => ({ cpuUnits: 1024, memoryMiB })),
  ...range(4096, 16384, 1024).map((memoryMiB) => ({ cpuUnits: 2048, memoryMiB })),
  ...range(8192, 30720, 1024).map((memoryMiB) => ({ cpuUnits: 4096, memoryMiB })),
  ...range(16384, 61440, 4096).map((memoryMiB) => ({ cpuUnits: 8192, memoryMiB })),
  ...range(32768, 122880, 8192).map((memoryMiB) => ({ cpuUnits: 16384, memoryMiB })),
];

export const FARGATE_LIMITS = Object.freeze({
  maxCpu: 16,
  maxMemoryMiB: 122880,
  includedDiskGiB: 20,
  minDiskOverrideGiB: 21,
  maxDiskGiB: 200,
});

/** On-demand Linux/x86_64 prices in us-east-1, USD. */
export const FARGATE_PRICES = Object.freeze({
  perVcpuHour: 0.04048,
  perGiBHour: 0.004445,
  perExtraStorageGiBHour: 0.000111,
});

export function fargateCostPerHour(cpu: number, memoryMiB: number, diskGiB: number): number {
  const extraDisk = Math.max(0, diskGiB - FARGATE_LIMITS.includedDiskGiB);
  const cost =
    cpu * FARGATE_PRICES.perVcpuHour +
    (memoryMiB / 1024) * FARGATE_PRICES.perGiBHour +
    extraDisk * FARGATE_PRICES.perExtraStorageGiBHour;
  return Math.round(cost * 1e6) / 1e6;
}

export type FargateFit =
  | { readonly fits: true; readonly size: FargateSize; readonly diskGiB: number }
  | { readonly fits: false; readonly reason: string };

/**
 * The cheapest Fargate size that gives at least the requested CPU and memory.
 * Unspecified CPU starts from the smallest size; unspecified memory takes the size's minimum.
 */
export function fitFargate(request: { cpu?: number; memoryMiB?: number; diskGiB?: number }): FargateFit {
  const problems: string[] = [];
  if (request.cpu !== undefined && request.cpu > FARGATE_LIMITS.maxCpu) {
    problems.push(`cpu ${request.cpu} vCPU asked, Fargate offers at most ${FARGATE_LIMITS.maxCpu} vCPU`);
  }
  if (request.memoryMiB !== undefined && request.memoryMiB > FARGATE_LIMITS.maxMemoryMiB) {
    problems.push(
      `memory ${formatMiB(request.memoryMiB)} asked, Fargate offers at most ${formatMiB(FARGATE_LIMITS.maxMemoryMiB)}`,
    );
  }
  if (request.diskGiB !== undefined && request.diskGiB > FARGATE_LIMITS.maxDiskGiB) {
    problems.push(
      `disk ${request.diskGiB} GiB asked, Fargate ephemeral storage is at most ${FARGATE_LIMITS.maxDiskGiB} GiB`,
    );
  }
  if (problems.length > 0) return { fits: false, reason: problems.join('; ') };

  const cpuUnits = Math.ceil((request.cpu ?? 0) * 1024);
  const memoryMiB = Math.ceil(request.memoryMiB ?? 0);
  const candidates = FARGATE_SIZES.filter((size) => size.cpuUnits >= cpuUnits && size.memoryMiB >= memoryMiB);
  const cheapest = candidates.reduce<FargateSize | undefined>((best, size) => {
    if (best === undefined) return size;
    const cost = fargateCostPerHour(size.cpuUnits / 1024, size.memoryMiB, 0);
    const bestCost = fargateCostPerHour(best.cpuUnits / 1024, best.memoryMiB, 0);
    return cost < bestCost ? size : best;
  }, undefined);
  if (cheapest === undefined) {
    return {
      fits: false,
      reason: `no Fargate size has ${request.cpu ?? 0.25} vCPU with ${formatMiB(memoryMiB)}: at ${request.cpu} vCPU memory can be at most ${formatMiB(maxMemoryFor(cpuUnits))}`,
    };
  }
  const diskGiB =
    request.diskGiB === undefined || request.diskGiB <= FARGATE_LIMITS.includedDiskGiB
      ? FARGATE_LIMITS.includedDiskGiB
      : Math.max(FARGATE_LIMITS.minDiskOverrideGiB, Math.ceil(request.diskGiB));
  return { fits: true, size: cheapest, diskGiB };
}

function maxMemoryFor(cpuUnits: number): number {
  return FARGATE_SIZES.filter((size) => size.cpuUnits >= cpuUnits).reduce(
    (max, s) => Math.max(max, s.memoryMiB),
    0,
  );
}
