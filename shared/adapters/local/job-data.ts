// A local job's inputs and outputs on this machine, in a directory of its own under the data
// directory. Two layouts:
// - `mounts` (Docker): each input is staged at inputs/N and bind-mounted read-only at its
//   path; each directory the outputs are written in, and each volume, is outputs/N,
//   bind-mounted writable, so every step of the job sees the same files there.
// - `root` (plain processes): the job's own directory is its root: an input at /data/in.csv
//   is staged at ROOT/data/in.csv, and outputs are collected from below ROOT the same way.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { dataMounts, outputDir, outputLocation, parentOf, plainPath } from '../../domain/data-plan.ts';
import type { Execution, OutputResult } from '../../domain/execution.ts';
import type { JobOutput } from '../../domain/job-spec.ts';
import { GiB } from '../../domain/units.ts';
import type { InputFetcher, ResultSink } from '../../ports.ts';
import { type DeliveryRoots, deliverOutput } from '../../staging/deliver.ts';
import { collectOutputs, type OutputPlace } from '../../staging/outputs.ts';

export type DataLayout = 'mounts' | 'root';

export class LocalJobData {
  constructor(
    /** Holds one directory per execution. */
    private readonly root: string,
    private readonly layout: DataLayout,
    private readonly fetcher: InputFetcher,
    /** Where outputs with a url may be delivered; none without it. */
    private readonly delivery: DeliveryRoots = { roots: [], excluded: [] },
  ) {}

  /** The execution's own directory (its root, in the `root` layout). */
  dirOf(executionId: string): string {
    return path.join(this.root, executionId);
  }

  /** Whether the job has any data to stage or collect. */
  static needed(execution: Execution): boolean {
    const { spec } = execution;
    return spec.inputs.length > 0 || spec.outputs.length > 0 || (spec.volumes ?? []).length > 0;
  }

  /**
   * Makes the job's directory afresh, fetches every input into it and makes the directories
   * its outputs are written in. Throws FetchFailed (naming the source) if an input cannot be had.
   */
  async stage(execution: Execution, signal?: AbortSignal): Promise<void> {
    const dir = this.dirOf(execution.id);
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
    const { spec } = execution;
    let left = (execution.bid.constraints?.diskGiB ?? 20) * GiB;
    for (const [index, input] of spec.inputs.entries()) {
      const target = this.inputPath(execution.id, index, input.path);
      await fsp.mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
      const got = await this.fetcher.fetch(input, target, {
        maxBytes: left,
        ...(signal === undefined ? {} : { signal }),
      });
      left -= got.bytes;
    }
    for (const mount of dataMounts(spec)) {
      if (mount.kind !== 'outputs') continue;
      const target = this.outputsPath(execution.id, mount.index, mount.containerPath);
      await fsp.mkdir(target, { recursive: true });
      // Whichever user the image runs as may write its outputs there.
      await fsp.chmod(target, 0o777);
    }
  }

  /** Docker bind mounts: inputs read-only, output directories writable, outermost first. */
  binds(execution: Execution): string[] {
    return dataMounts(execution.spec).map((mount) =>
      mount.kind === 'input'
        ? `${this.inputPath(execution.id, mount.index, mount.containerPath)}:${mount.containerPath}:ro`
        : `${this.outputsPath(execution.id, mount.index, mount.containerPath)}:${mount.containerPath}`,
    );
  }

  /** Stores the job's outputs once its command has exited; see collectOutputs for the limits. */
  async collect(execution: Execution, sink: ResultSink, deliver = true): Promise<OutputResult[]> {
    const { spec } = execution;
    const results = await collectOutputs(
      execution.id,
      spec.outputs,
      (output) => this.locate(execution, output),
      sink,
      spec.outputLimits,
    );
    // Then each output with a url goes there too, before the result says the job is done.
    if (!deliver) return results;
    return Promise.all(
      results.map(async (result, index) => {
        const output = spec.outputs[index];
        if (output?.url === undefined) return result;
        const place = await this.locate(execution, output);
        if (typeof place !== 'string') return { ...result, deliveryError: place.refused };
        return deliverOutput(output, result, place, this.delivery);
      }),
    );
  }

  async remove(executionId: string): Promise<void> {
    await fsp.rm(this.dirOf(executionId), { recursive: true, force: true });
  }

  /** Removes the directories of executions not in `keep`: left by a crash between two steps. */
  async removeAllBut(keep: ReadonlySet<string>): Promise<void> {
    const entries = await fsp.readdir(this.root).catch(() => [] as string[]);
    for (const executionId of entries) if (!keep.has(executionId)) await this.remove(executionId);
  }

  private inputPath(executionId: string, index: number, containerPath: string): string {
    return this.layout === 'mounts'
      ? path.join(this.dirOf(executionId), 'inputs', String(index))
      : path.join(this.dirOf(executionId), plainPath(containerPath));
  }

  private outputsPath(executionId: string, index: number, containerPath: string): string {
    return this.layout === 'mounts'
      ? path.join(this.dirOf(executionId), 'outputs', String(index))
      : path.join(this.dirOf(executionId), containerPath);
  }

  /**
   * Where an output is. In the `root` layout the job could have swapped a directory on the way
   * for a symbolic link: an output whose directory does not resolve to where it should is refused.
   */
  private async locate(execution: Execution, output: JobOutput): Promise<OutputPlace> {
    const { spec } = execution;
    const where = outputLocation(spec, output);
    const base = this.outputsPath(execution.id, where.mount, outputDir(output));
    const place = where.relative === '' ? base : path.join(base, where.relative);
    if (this.layout === 'mounts') return place;
    const real = await fsp.realpath(path.dirname(place)).catch(() => undefined);
    const root = await fsp.realpath(this.dirOf(execution.id));
    if (real !== undefined && real !== path.join(root, parentOf(output.path))) {
      return { refused: `a directory on its way is a symbolic link: not followed` };
    }
    return place;
  }
}
