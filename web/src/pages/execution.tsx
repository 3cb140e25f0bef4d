// One execution: what was asked (the spec), what Ferry offered (the bid), what happened (the
// history as a timeline), its output live or stored, the result with its download links, and
// the caller's actions: cancel while it may run, accept or reject the result once it has one.
import { useEffect, useState } from 'preact/hooks';
import type { Bid, Execution, ResultManifest } from '../../../shared/domain/execution.ts';
import { isTerminal } from '../../../shared/domain/states.ts';
import { type ApiError, getJson, postJson } from '../api.ts';
import { bytes, commandLine, duration, runTime, usd } from '../format.ts';
import { LogView } from '../log-view.tsx';
import { stateClass } from './executions.tsx';

const REFRESH_MS = 1000;

interface ResultView {
  readonly manifest: ResultManifest;
  readonly review: string;
  readonly links: { stdout: string; stderr: string; outputs: Record<string, string>; expiresAt: string };
}

const CANCELLABLE = ['OFFERED', 'QUEUED', 'LAUNCHING', 'PENDING', 'RUNNING'];

function useExecution(id: string): { execution?: Execution; error?: string; reload: () => void } {
  const [execution, setExecution] = useState<Execution | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const load = async () => {
      try {
        const next = await getJson<Execution>(`/v1/executions/${encodeURIComponent(id)}`);
        if (stopped) return;
        setExecution(next);
        setError(undefined);
        if (isTerminal(next.state) && next.result?.review !== 'PENDING') return;
      } catch (failure) {
        if (stopped) return;
        setError((failure as ApiError).message);
        if ((failure as ApiError).status === 404) return;
      }
      timer = setTimeout(load, REFRESH_MS);
    };
    void load();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [id, tick]);
  return {
    ...(execution === undefined ? {} : { execution }),
    ...(error === undefined ? {} : { error }),
    reload: () => setTick((n) => n + 1),
  };
}

function Actions({ execution, onDone }: { execution: Execution; onDone: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | undefined>(undefined);
  const [justification, setJustification] = useState('');
  const act = async (path: string, body?: unknown) => {
    setBusy(true);
    try {
      await postJson(`/v1/executions/${encodeURIComponent(execution.id)}${path}`, body);
      setError(undefined);
      onDone();
    } catch (failure) {
      setError((failure as ApiError).message);
    } finally {
      setBusy(false);
    }
  };
  const why = justification.trim() === '' ? {} : { justification: justification.trim() };
  const reviewable = execution.result !== undefined && execution.result.review === 'PENDING';
  return (
    <div class="actions">
      {CANCELLABLE.includes(execution.state) && (
        <button type="button" class="danger" disabled={busy} onClick={() => act('/cancel')}>
          Cancel
        </button>
      )}
      {reviewable && (
        <form
          class="review"
          aria-label="Review the result"
          onSubmit={(event) => {
            event.preventDefault();
          }}
        >
          <label>
            Justification <span class="hint">(optional)</span>
            <input
              name="justification"
              value={justification}
              maxLength={1024}
              onInput={(event) => setJustification((event.target as HTMLInputElement).value)}
            />
          </label>
          <button type="button" disabled={busy} onClick={() => act('/result/accept', why)}>
            Accept result
          </button>
          <button type="button" class="danger" disabled={busy} onClick={() => act('/result/reject', why)}>
            Reject result
          </button>
        </form>
      )}
      {execution.result !== undefined && execution.result.review !== 'PENDING' && (
        <p class="review-state">
          Result <strong>{execution.result.review.toLowerCase()}</strong>
          {execution.result.justification === undefined ? '' : `: ${execution.result.justification}`}
        </p>
      )}
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}

/** What a bid says: accepted or declined and why, the size, the price and the expected wait. */
export function BidFacts({
  bid,
  offer = false,
}: {
  bid: Bid /** Not yet answered: say when it ends. */;
  offer?: boolean;
}) {
  const c = bid.constraints;
  return (
    <>
      <p
        class={bid.accepted ? 'bid accepted' : 'bid declined'}
        data-bid={bid.accepted ? 'accepted' : 'declined'}
      >
        {bid.accepted ? 'Accepted' : 'Declined'}: {bid.reason}
      </p>
      {c !== undefined && (
        <dl class="facts">
          <dt>Size</dt>
          <dd>
            {c.cpu} vCPU, {c.memoryMiB} MiB, {c.diskGiB} GiB disk on {c.platform}
            {c.fargate === undefined ? '' : ` (Fargate ${c.fargate.cpu}/${c.fargate.memory})`}
          </dd>
          {bid.estimate !== undefined && (
            <>
              <dt>Price</dt>
              <dd>
                {usd(bid.estimate.costPerHourUsd)}/hour, at most {usd(bid.estimate.maxCostUsd)}
              </dd>
              <dt>Expected wait</dt>
              <dd>
                {duration(bid.estimate.queueWaitSeconds * 1000) || 'none'} ({bid.estimate.queue.runningJobs}{' '}
                running, {bid.estimate.queue.queuedJobs} queued)
              </dd>
            </>
          )}
          {offer && bid.expiresAt !== undefined && (
            <>
              <dt>Offer ends</dt>
              <dd>
                <time dateTime={bid.expiresAt}>{new Date(bid.expiresAt).toLocaleTimeString()}</time>
              </dd>
            </>
          )}
          {c.notes.map((note) => (
            <>
              <dt>Note</dt>
              <dd>{note}</dd>
            </>
          ))}
        </dl>
      )}
    </>
  );
}

function BidSection({ execution }: { execution: Execution }) {
  return (
    <section aria-labelledby="bid-title">
      <h2 id="bid-title">Bid</h2>
      <BidFacts bid={execution.bid} />
    </section>
  );
}

function Timeline({ execution }: { execution: Execution }) {
  const first = Date.parse(execution.createdAt);
  return (
    <section aria-labelledby="history-title">
      <h2 id="history-title">History</h2>
      <ol class="timeline">
        {execution.history.map((entry) => (
          <li>
            <span class={stateClass(entry.state)}>{entry.review ?? entry.state}</span>{' '}
            <time dateTime={entry.at} title={entry.at}>
              +{duration(Date.parse(entry.at) - first) || '0s'}
            </time>
            {entry.reason !== undefined && <span class="reason"> {entry.reason}</span>}
            {entry.justification !== undefined && <span class="reason"> “{entry.justification}”</span>}
          </li>
        ))}
      </ol>
    </section>
  );
}

function Result({ id }: { id: string }) {
  const [view, setView] = useState<ResultView | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  useEffect(() => {
    getJson<ResultView>(`/v1/executions/${encodeURIComponent(id)}/result`)
      .then(setView)
      .catch((failure) => setError((failure as ApiError).message));
  }, [id]);
  if (error !== undefined) return <p class="note">The result cannot be shown: {error}</p>;
  if (view === undefined) return <p aria-busy="true">Loading the result…</p>;
  const { manifest, links } = view;
  return (
    <section aria-labelledby="result-title">
      <h2 id="result-title">Result</h2>
      <dl class="facts">
        <dt>Exit code</dt>
        <dd>{manifest.exitCode ?? manifest.signal ?? 'none'}</dd>
        <dt>stdout</dt>
        <dd>
          {bytes(manifest.stdout.totalBytes)}
          {manifest.stdout.truncated ? ` (${bytes(manifest.stdout.storedBytes)} kept)` : ''} ·{' '}
          <a href={links.stdout}>download</a>
        </dd>
        <dt>stderr</dt>
        <dd>
          {bytes(manifest.stderr.totalBytes)}
          {manifest.stderr.truncated ? ` (${bytes(manifest.stderr.storedBytes)} kept)` : ''} ·{' '}
          <a href={links.stderr}>download</a>
        </dd>
      </dl>
      {manifest.outputs.length > 0 && (
        <table class="outputs">
          <thead>
            <tr>
              <th scope="col">Output</th>
              <th scope="col">Size</th>
              <th scope="col">Files</th>
              <th scope="col">SHA-256</th>
            </tr>
          </thead>
          <tbody>
            {manifest.outputs.map((output) => (
              <tr>
                <td>
                  {links.outputs[output.name] === undefined ? (
                    output.name
                  ) : (
                    <a href={links.outputs[output.name]}>{output.name}</a>
                  )}
                  {output.truncated ? ' (cut)' : ''}
                </td>
                <td class="number">{bytes(output.bytes)}</td>
                <td class="number">{output.files}</td>
                <td class="mono digest">{output.sha256 ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function ExecutionPage({ id }: { id: string }) {
  const { execution, error, reload } = useExecution(id);
  if (execution === undefined) {
    return error === undefined ? (
      <p aria-busy="true">Loading…</p>
    ) : (
      <p class="error" role="alert">
        {error}
      </p>
    );
  }
  const running = !isTerminal(execution.state);
  const started = execution.startedAt !== undefined || !running;
  const steps = execution.spec.steps ?? [{ image: execution.spec.image, command: execution.spec.command }];
  return (
    <article aria-labelledby="execution-title">
      <p class="crumbs">
        <a href="#/">Executions</a>
      </p>
      <h1 id="execution-title">
        {execution.spec.name ?? execution.id}{' '}
        <span class={stateClass(execution.state)}>{execution.state}</span>
      </h1>
      {execution.reason !== undefined && <p class="reason">{execution.reason}</p>}
      <dl class="facts">
        <dt>Execution</dt>
        <dd class="mono">{execution.id}</dd>
        <dt>Run time</dt>
        <dd>{runTime(execution.startedAt, execution.endedAt) || 'not started'}</dd>
        {execution.exitCode !== undefined && execution.exitCode !== null && (
          <>
            <dt>Exit code</dt>
            <dd>{execution.exitCode}</dd>
          </>
        )}
      </dl>
      <Actions execution={execution} onDone={reload} />
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <div class="columns">
        <section aria-labelledby="spec-title">
          <h2 id="spec-title">Job</h2>
          <dl class="facts">
            {steps.map((step, index) => (
              <>
                <dt>{steps.length > 1 ? `Step ${index + 1}` : 'Image'}</dt>
                <dd class="mono">{step.image}</dd>
                <dt>Command</dt>
                <dd class="mono">{commandLine(step.command)}</dd>
              </>
            ))}
            <dt>Timeout</dt>
            <dd>{duration(execution.spec.timeoutSeconds * 1000)}</dd>
            {Object.keys(execution.spec.labels).length > 0 && (
              <>
                <dt>Labels</dt>
                <dd>
                  {Object.entries(execution.spec.labels).map(([k, v]) => (
                    <span class="label">
                      {k}={v}
                    </span>
                  ))}
                </dd>
              </>
            )}
          </dl>
          <details>
            <summary>Spec as JSON</summary>
            <pre class="json">{JSON.stringify(execution.spec, null, 2)}</pre>
          </details>
        </section>
        <BidSection execution={execution} />
        <Timeline execution={execution} />
      </div>
      {started && execution.bid.accepted && (
        <section aria-labelledby="output-title">
          <h2 id="output-title">Output</h2>
          {(['stdout', 'stderr'] as const).map((stream) => (
            <LogView
              key={`${stream}-${running}`}
              id={execution.id}
              stream={stream}
              running={running}
              {...(execution.result === undefined
                ? {}
                : { storedBytes: execution.result[stream].storedBytes })}
            />
          ))}
        </section>
      )}
      {execution.result !== undefined && execution.result.review !== 'REJECTED' && (
        <Result key={execution.result.review} id={execution.id} />
      )}
    </article>
  );
}
