// The executions: newest first, filtered by state, label and image (kept in the address, so a
// filtered view can be shared), a page at a time, refreshed every few seconds while shown.
import { useEffect, useState } from 'preact/hooks';
import { EXECUTION_STATES } from '../../../shared/domain/states.ts';
import { type ApiError, type ExecutionPage, getJson, type StateCounts } from '../api.ts';
import { ago, commandLine, runTime } from '../format.ts';

const PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 200;
const REFRESH_MS = 2000;
/**
 * The counts are read again when the rows shown change, and otherwise this often: on DynamoDB
 * a count reads every execution it counts, which a list left open must not do every 2 s.
 */
const COUNTS_AT_LEAST_EVERY_MS = 30_000;

interface Filters {
  readonly state: string;
  readonly label: string;
  readonly image: string;
  readonly limit: number;
}

function listPath(filters: Filters, cursor: string | undefined): string {
  const query = new URLSearchParams({ limit: String(filters.limit) });
  if (filters.state !== '') query.set('state', filters.state);
  for (const label of filters.label.split(/\s*,\s*/).filter((l) => l !== '')) query.append('label', label);
  if (filters.image !== '') query.set('image', filters.image);
  if (cursor !== undefined) query.set('cursor', cursor);
  return `/v1/executions?${query}`;
}

export const stateClass = (state: string): string => `state state-${state.toLowerCase().replace(/_/g, '-')}`;

export function ExecutionsPage({ query }: { query: URLSearchParams }) {
  const asked = Number(query.get('limit') ?? PAGE_SIZE);
  const filters: Filters = {
    state: query.get('state') ?? '',
    label: query.get('label') ?? '',
    image: query.get('image') ?? '',
    limit: Number.isInteger(asked) && asked > 0 ? Math.min(asked, MAX_PAGE_SIZE) : PAGE_SIZE,
  };
  const filtered = filters.state !== '' || filters.label !== '' || filters.image !== '';
  const key = JSON.stringify(filters);
  // The cursors of the pages before this one: the first page has none.
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const [page, setPage] = useState<ExecutionPage | undefined>(undefined);
  const [counts, setCounts] = useState<StateCounts | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [now, setNow] = useState(Date.now());
  const cursor = cursors.at(-1);

  useEffect(() => setCursors([undefined]), [key]);
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    // Another page or other filters: what was shown is not it.
    setPage(undefined);
    let countedFor: string | undefined;
    let countedAt = 0;
    const load = async () => {
      try {
        const next = await getJson<ExecutionPage>(listPath(filters, cursor));
        const shown = next.items.map((execution) => `${execution.id}:${execution.state}`).join(',');
        const recount = shown !== countedFor || Date.now() - countedAt >= COUNTS_AT_LEAST_EVERY_MS;
        const totals = recount ? await getJson<StateCounts>('/v1/executions/counts') : undefined;
        if (stopped) return;
        setPage(next);
        if (totals !== undefined) {
          setCounts(totals);
          countedFor = shown;
          countedAt = Date.now();
        }
        setError(undefined);
        setNow(Date.now());
      } catch (failure) {
        if (!stopped) setError((failure as ApiError).message);
      }
      if (!stopped) timer = setTimeout(load, document.hidden ? REFRESH_MS * 5 : REFRESH_MS);
    };
    void load();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [key, cursor]);

  const apply = (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.target as HTMLFormElement);
    const next = new URLSearchParams();
    if (filters.limit !== PAGE_SIZE) next.set('limit', String(filters.limit));
    for (const name of ['state', 'label', 'image']) {
      const value = String(form.get(name) ?? '').trim();
      if (value !== '') next.set(name, value);
    }
    location.hash = `#/?${next}`;
  };

  return (
    <section aria-labelledby="executions-title">
      <h1 id="executions-title">Executions</h1>
      {counts !== undefined && (
        <ul class="counts" aria-label="Executions by state">
          {EXECUTION_STATES.filter((state) => (counts.counts[state] ?? 0) > 0).map((state) => (
            <li>
              <a
                href={`#/?state=${state}`}
                class={stateClass(state)}
                aria-current={filters.state === state ? 'true' : undefined}
                data-state={state}
              >
                {state} <strong>{(counts.counts[state] ?? 0).toLocaleString('en')}</strong>
                {counts.atLeast.includes(state) ? '+' : ''}
              </a>
            </li>
          ))}
        </ul>
      )}
      <form class="filters" onSubmit={apply} key={key} aria-label="Filter executions">
        <div class="field">
          <label for="filter-state">State</label>
          <select id="filter-state" name="state" defaultValue={filters.state}>
            <option value="">any</option>
            {EXECUTION_STATES.map((state) => (
              <option value={state}>{state}</option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="filter-label">Label</label>
          <input id="filter-label" name="label" placeholder="key=value" defaultValue={filters.label} />
        </div>
        <div class="field">
          <label for="filter-image">Image</label>
          <input id="filter-image" name="image" placeholder="alpine:3.20" defaultValue={filters.image} />
        </div>
        <button type="submit">Filter</button>
        {filtered && (
          <a href="#/" class="clear">
            Clear
          </a>
        )}
      </form>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {page === undefined ? (
        error === undefined && <p aria-busy="true">Loading…</p>
      ) : page.items.length === 0 ? (
        <p class="empty">
          No executions{key === JSON.stringify({ state: '', label: '', image: '' }) ? ' yet' : ' match'}.
        </p>
      ) : (
        <table class="executions">
          <thead>
            <tr>
              <th scope="col">Execution</th>
              <th scope="col">State</th>
              <th scope="col">Exit</th>
              <th scope="col">Age</th>
              <th scope="col">Duration</th>
              <th scope="col">Image</th>
              <th scope="col">Command</th>
              <th scope="col">Labels</th>
            </tr>
          </thead>
          <tbody>
            {page.items.map((execution) => (
              <tr key={execution.id} data-id={execution.id}>
                <td>
                  <a href={`#/executions/${encodeURIComponent(execution.id)}`}>
                    {execution.spec.name ?? execution.id}
                  </a>
                </td>
                <td>
                  <span class={stateClass(execution.state)}>{execution.state}</span>
                </td>
                <td class="number">{execution.result?.exitCode ?? execution.exitCode ?? ''}</td>
                <td>{ago(execution.createdAt, now)}</td>
                <td>{runTime(execution.startedAt, execution.endedAt, now)}</td>
                <td class="mono">{execution.spec.image}</td>
                <td class="mono command" title={commandLine(execution.spec.command)}>
                  {commandLine(execution.spec.command)}
                </td>
                <td>
                  {Object.entries(execution.spec.labels).map(([k, v]) => (
                    <a class="label" href={`#/?label=${encodeURIComponent(`${k}=${v}`)}`}>
                      {k}={v}
                    </a>
                  ))}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <nav class="pager" aria-label="Pages">
        <button
          type="button"
          disabled={cursors.length === 1}
          onClick={() => setCursors(cursors.slice(0, -1))}
        >
          Newer
        </button>
        <span>Page {cursors.length}</span>
        <button
          type="button"
          disabled={page?.nextCursor === undefined}
          onClick={() => setCursors([...cursors, page?.nextCursor])}
        >
          Older
        </button>
      </nav>
    </section>
  );
}
