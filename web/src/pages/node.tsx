// The node: what it can run (capacity, per-job limits), what it runs now (usage, the queue), and
// a chart of running and queued jobs over the last hour from the sweeper's samples.
import { useEffect, useState } from 'preact/hooks';
import type { describeNode } from '../../../shared/use-cases/node.ts';
import { type ApiError, getJson } from '../api.ts';
import { bytes, duration } from '../format.ts';

/** What GET /v1/node answers. */
type Node = Awaited<ReturnType<typeof describeNode>>;
type Sample = Node['history'][number];

const REFRESH_MS = 5000;
const HOUR_MS = 3600_000;

/** Running and queued jobs against time, the last hour, as two step lines. */
function Chart({ samples, now }: { samples: readonly Sample[]; now: number }) {
  const width = 600;
  const height = 160;
  const pad = { left: 32, right: 8, top: 8, bottom: 20 };
  const top = Math.max(1, ...samples.map((s) => Math.max(s.runningJobs, s.queuedJobs)));
  const x = (at: number) => pad.left + ((at - (now - HOUR_MS)) / HOUR_MS) * (width - pad.left - pad.right);
  const y = (value: number) => pad.top + (1 - value / top) * (height - pad.top - pad.bottom);
  const line = (value: (s: Sample) => number) =>
    samples
      .map((s, i) => {
        const at = x(Date.parse(s.at));
        const next = samples[i + 1];
        // The last sample holds until now.
        const end = x(next === undefined ? now : Date.parse(next.at));
        return `${i === 0 ? 'M' : 'L'}${at.toFixed(1)},${y(value(s)).toFixed(1)} H${end.toFixed(1)}`;
      })
      .join(' ');
  const last = samples.at(-1);
  return (
    <figure class="chart">
      <svg
        viewBox={`0 0 ${width} ${height}`}
        role="img"
        aria-label={`Jobs over the last hour: ${samples.length} samples; now ${last?.runningJobs ?? 0} running, ${last?.queuedJobs ?? 0} queued`}
      >
        <line x1={pad.left} x2={width - pad.right} y1={y(0)} y2={y(0)} class="axis" />
        <line x1={pad.left} x2={width - pad.right} y1={y(top)} y2={y(top)} class="grid" />
        <text x={pad.left - 4} y={y(top) + 4} class="tick" text-anchor="end">
          {top}
        </text>
        <text x={pad.left - 4} y={y(0) + 4} class="tick" text-anchor="end">
          0
        </text>
        <text x={pad.left} y={height - 4} class="tick">
          −60 min
        </text>
        <text x={width - pad.right} y={height - 4} class="tick" text-anchor="end">
          now
        </text>
        {samples.length > 0 && <path d={line((s) => s.queuedJobs)} class="series queued" />}
        {samples.length > 0 && <path d={line((s) => s.runningJobs)} class="series running" />}
      </svg>
      <figcaption>
        <span class="key running">running</span> <span class="key queued">queued</span>
        {samples.length === 0 && ' — no samples yet: the sweeper records one a minute'}
      </figcaption>
    </figure>
  );
}

export function NodePage() {
  const [node, setNode] = useState<Node | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        const next = await getJson<Node>('/v1/node');
        if (stopped) return;
        setNode(next);
        setNow(Date.now());
        setError(undefined);
      } catch (failure) {
        if (!stopped) setError((failure as ApiError).message);
      }
      if (!stopped) timer = setTimeout(load, REFRESH_MS);
    };
    void load();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, []);
  if (node === undefined) {
    return error === undefined ? (
      <p aria-busy="true">Loading…</p>
    ) : (
      <p class="error" role="alert">
        {error}
      </p>
    );
  }
  const { capacity, usage, perJobLimits: limits } = node;
  return (
    <section aria-labelledby="node-title">
      <h1 id="node-title">
        Node{' '}
        <span class="hint">
          Ferry {node.version}, {node.backend} backend
        </span>
      </h1>
      <div class="columns">
        <section aria-labelledby="usage-title">
          <h2 id="usage-title">Now</h2>
          <dl class="facts" data-facts="usage">
            <dt>Running</dt>
            <dd data-value="running">
              {usage.runningJobs} of {capacity.maxConcurrency}
            </dd>
            <dt>Queued</dt>
            <dd data-value="queued">{usage.queuedJobs}</dd>
            <dt>vCPU in use</dt>
            <dd>
              {usage.cpu} of {capacity.cpu}
            </dd>
            <dt>Memory in use</dt>
            <dd>
              {usage.memoryMiB} of {capacity.memoryMiB} MiB
            </dd>
          </dl>
        </section>
        <section aria-labelledby="limits-title">
          <h2 id="limits-title">One job may have</h2>
          <dl class="facts">
            <dt>vCPU</dt>
            <dd>{limits.cpu}</dd>
            <dt>Memory</dt>
            <dd>{limits.memoryMiB} MiB</dd>
            <dt>Timeout</dt>
            <dd>
              {duration(limits.timeoutSeconds.min * 1000)} to {duration(limits.timeoutSeconds.max * 1000)}
            </dd>
            <dt>Output</dt>
            <dd>{bytes(limits.outputBytesPerStream)} per stream</dd>
            <dt>Network</dt>
            <dd>{limits.network.join(', ')}</dd>
            <dt>Images</dt>
            <dd>
              {limits.images.allow.join(', ')}
              {limits.images.deny.length > 0 ? `, not ${limits.images.deny.join(', ')}` : ''}
            </dd>
            <dt>GPU</dt>
            <dd>{limits.gpu ? 'yes' : 'no'}</dd>
          </dl>
        </section>
      </div>
      <h2>The last hour</h2>
      <Chart samples={node.history} now={now} />
    </section>
  );
}
