// CapacityLedger in memory, for the local runtime: one process holds all dispatchers, so a
// map is the whole truth. Rebuilt from the store's active executions at start.
import type { CapacityBudget, CapacityDemand, CapacityLedger } from '../../ports.ts';

export class MemoryCapacityLedger implements CapacityLedger {
  private readonly reservations = new Map<string, CapacityDemand>();

  async reserve(executionId: string, demand: CapacityDemand, budget: CapacityBudget): Promise<boolean> {
    if (this.reservations.has(executionId)) return true;
    let cpu = demand.cpu;
    let memoryMiB = demand.memoryMiB;
    for (const held of this.reservations.values()) {
      cpu += held.cpu;
      memoryMiB += held.memoryMiB;
    }
    const fits =
      this.reservations.size + 1 <= budget.maxConcurrency &&
      cpu <= budget.maxCpu + 1e-9 &&
      memoryMiB <= budget.maxMemoryMiB + 1e-9;
    if (fits) this.reservations.set(executionId, demand);
    return fits;
  }

  async release(executionId: string): Promise<void> {
    this.reservations.delete(executionId);
  }

  async holders(): Promise<readonly string[]> {
    return [...this.reservations.keys()];
  }

  async totals(): Promise<{ cpu: number; memoryMiB: number; tasks: number }> {
    let cpu = 0;
    let memoryMiB = 0;
    for (const held of this.reservations.values()) {
      cpu += held.cpu;
      memoryMiB += held.memoryMiB;
    }
    return { cpu, memoryMiB, tasks: this.reservations.size };
  }
}
