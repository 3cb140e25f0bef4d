// Submitting a job in two steps, as the API does it: ask for a bid, see what Ferry offers (the
// size, the price, the expected wait, or why it declines), then accept or reject that bid.
import type { ComponentChildren } from 'preact';
import { useState } from 'preact/hooks';
import type { Bid } from '../../../shared/domain/execution.ts';
import { ApiError, postJson } from '../api.ts';
import { BidFacts } from './execution.tsx';

interface BidReply {
  readonly executionId: string;
  readonly bid: Bid;
}

/** A size field as the API takes it: a number when it is one, else text with units ("2GiB"). */
function sizeOf(text: string): number | string | undefined {
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  return /^\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : trimmed;
}

/** The spec the form describes; only what was filled in, so Ferry's defaults apply to the rest. */
function specOf(form: FormData): Record<string, unknown> {
  const text = (name: string) => String(form.get(name) ?? '').trim();
  const lines = (name: string) =>
    String(form.get(name) ?? '')
      .split('\n')
      .map((line) => line.replace(/\r$/, ''))
      .filter((line) => line.trim() !== '');
  const resources = Object.fromEntries(
    [
      ['cpu', text('cpu') === '' ? undefined : Number(text('cpu'))],
      ['memory', sizeOf(text('memory'))],
      ['disk', sizeOf(text('disk'))],
    ].filter(([, value]) => value !== undefined),
  );
  const outputLimits = Object.fromEntries(
    [
      ['stdoutBytes', sizeOf(text('stdoutBytes'))],
      ['stderrBytes', sizeOf(text('stderrBytes'))],
    ].filter(([, value]) => value !== undefined),
  );
  const labels = Object.fromEntries(
    lines('labels').map((line) => {
      const at = line.indexOf('=');
      return at === -1 ? [line.trim(), ''] : [line.slice(0, at).trim(), line.slice(at + 1).trim()];
    }),
  );
  return {
    image: text('image'),
    command: lines('command'),
    ...(text('name') === '' ? {} : { name: text('name') }),
    ...(Object.keys(resources).length > 0 ? { resources } : {}),
    ...(text('timeoutSeconds') === '' ? {} : { timeoutSeconds: Number(text('timeoutSeconds')) }),
    ...(Object.keys(outputLimits).length > 0 ? { outputLimits } : {}),
    ...(Object.keys(labels).length > 0 ? { labels } : {}),
  };
}

function Field({
  name,
  label,
  hint,
  problems,
  children,
}: {
  name: string;
  label: string;
  hint?: string;
  problems: readonly { field: string; message: string }[];
  children: ComponentChildren;
}) {
  const mine = problems.filter(
    (p) => p.field === name || p.field.startsWith(`${name}.`) || p.field.endsWith(`.${name}`),
  );
  return (
    <div class={mine.length > 0 ? 'field invalid' : 'field'}>
      <label for={`submit-${name}`}>{label}</label>
      {hint !== undefined && <span class="hint">{hint}</span>}
      {children}
      {mine.map((p) => (
        <span class="error" id={`submit-${name}-error`}>
          {p.field}: {p.message}
        </span>
      ))}
    </div>
  );
}

export function SubmitPage() {
  const [reply, setReply] = useState<BidReply | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  const [problems, setProblems] = useState<readonly { field: string; message: string }[]>([]);
  const [busy, setBusy] = useState(false);

  const ask = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setReply(undefined);
    try {
      const answer = await postJson<BidReply>(
        '/v1/bids',
        specOf(new FormData(event.target as HTMLFormElement)),
      );
      setReply(answer);
      setError(undefined);
      setProblems([]);
    } catch (failure) {
      setError((failure as Error).message);
      setProblems(failure instanceof ApiError ? failure.problems : []);
    } finally {
      setBusy(false);
    }
  };

  const answer = async (verb: 'accept' | 'reject') => {
    if (reply === undefined) return;
    setBusy(true);
    try {
      await postJson(`/v1/bids/${encodeURIComponent(reply.executionId)}/${verb}`);
      location.hash = verb === 'accept' ? `#/executions/${encodeURIComponent(reply.executionId)}` : '#/';
    } catch (failure) {
      setError((failure as Error).message);
    } finally {
      setBusy(false);
    }
  };

  const input = (name: string, props: Record<string, unknown> = {}) => (
    <input
      id={`submit-${name}`}
      name={name}
      aria-invalid={problems.some((p) => p.field === name) ? 'true' : undefined}
      {...props}
    />
  );

  return (
    <section aria-labelledby="submit-title">
      <h1 id="submit-title">Submit a job</h1>
      <form class="submit" onSubmit={ask} aria-label="Job">
        <Field name="image" label="Image" problems={problems}>
          {input('image', { required: true, placeholder: 'alpine:3.20', autocomplete: 'off' })}
        </Field>
        <Field name="command" label="Command" hint="one argument per line" problems={problems}>
          <textarea id="submit-command" name="command" rows={4} required placeholder={'sh\n-c\necho hello'} />
        </Field>
        <Field name="name" label="Name" hint="optional" problems={problems}>
          {input('name')}
        </Field>
        <fieldset>
          <legend>Resources</legend>
          <Field name="cpu" label="vCPU" problems={problems}>
            {input('cpu', { inputMode: 'decimal', placeholder: '1' })}
          </Field>
          <Field name="memory" label="Memory" hint="MiB, or with units" problems={problems}>
            {input('memory', { placeholder: '1024' })}
          </Field>
          <Field name="disk" label="Disk" hint="GiB, or with units" problems={problems}>
            {input('disk', { placeholder: '20' })}
          </Field>
          <Field name="timeoutSeconds" label="Timeout" hint="seconds" problems={problems}>
            {input('timeoutSeconds', { inputMode: 'numeric', placeholder: '3600' })}
          </Field>
        </fieldset>
        <fieldset>
          <legend>Output limits</legend>
          <Field name="stdoutBytes" label="stdout" hint="bytes, or with units" problems={problems}>
            {input('stdoutBytes', { placeholder: '10MiB' })}
          </Field>
          <Field name="stderrBytes" label="stderr" hint="bytes, or with units" problems={problems}>
            {input('stderrBytes', { placeholder: '10MiB' })}
          </Field>
        </fieldset>
        <Field name="labels" label="Labels" hint="key=value, one per line" problems={problems}>
          <textarea id="submit-labels" name="labels" rows={2} />
        </Field>
        <div class="buttons">
          <button type="submit" disabled={busy}>
            {busy && reply === undefined ? 'Asking…' : 'Ask for a bid'}
          </button>
        </div>
      </form>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {reply !== undefined && (
        <section class="offer" aria-labelledby="offer-title" aria-live="polite">
          <h2 id="offer-title">{reply.bid.accepted ? 'Ferry offers' : 'Ferry declines'}</h2>
          <BidFacts bid={reply.bid} offer={reply.bid.accepted} />
          {reply.bid.accepted ? (
            <div class="buttons">
              <button type="button" disabled={busy} onClick={() => answer('accept')}>
                Accept and run
              </button>
              <button type="button" class="danger" disabled={busy} onClick={() => answer('reject')}>
                Reject the bid
              </button>
            </div>
          ) : (
            <p class="hint">Change what was asked, and ask again.</p>
          )}
        </section>
      )}
    </section>
  );
}
