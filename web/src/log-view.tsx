// One stream of an execution's output. While the run goes on it follows (long polls from the
// last position, keeping only the newest part on the page); once it has ended it pages through
// what was stored, a window at a time, so output of any size never loads whole. ANSI colours
// become classes (and, for 24-bit colours, style properties, which the page's policy allows).
import Anser from 'anser';
import { useEffect, useRef, useState } from 'preact/hooks';
import { type ApiError, readLog } from './api.ts';
import { bytes } from './format.ts';

/** The most bytes one page of stored output shows. */
export const PAGE_BYTES = 256 * 1024;
/** While following, the newest this many bytes stay on the page. */
const FOLLOW_WINDOW_BYTES = 512 * 1024;

interface Window {
  /** Stream position of the first byte shown. */
  readonly from: number;
  /** Stream position just past the last byte shown. */
  readonly to: number;
  readonly text: string;
  /** Bytes between `from` and what came before that were not kept (head+tail storage). */
  readonly skipped: number;
  readonly complete: boolean;
}

const EMPTY: Window = { from: 0, to: 0, text: '', skipped: 0, complete: false };

/** The 16 standard colours as xterm draws them, for 256-colour indices 0 to 15. */
const BASIC = [
  '0,0,0',
  '205,0,0',
  '0,205,0',
  '205,205,0',
  '0,0,238',
  '205,0,205',
  '0,205,205',
  '229,229,229',
  '127,127,127',
  '255,0,0',
  '0,255,0',
  '255,255,0',
  '92,92,255',
  '255,0,255',
  '0,255,255',
  '255,255,255',
];

/** An xterm 256-colour index as "r,g,b": the 16 standard ones, a 6×6×6 cube, then 24 greys. */
export function paletteRgb(index: number): string {
  if (index < 16) return BASIC[index] ?? '0,0,0';
  if (index < 232) {
    const level = (n: number) => (n === 0 ? 0 : 55 + n * 40);
    const n = index - 16;
    return `${level(Math.floor(n / 36))},${level(Math.floor(n / 6) % 6)},${level(n % 6)}`;
  }
  const grey = 8 + (index - 232) * 10;
  return `${grey},${grey},${grey}`;
}

/**
 * A colour as anser names it with classes: a standard one is a class of this page's style
 * sheet; a 256-colour or 24-bit one becomes a style property.
 */
function colour(name: string | null, truecolor: string | null): { className?: string; rgb?: string } {
  if (name === null || name === '') return {};
  if (name === 'ansi-truecolor') return truecolor === null ? {} : { rgb: truecolor.replace(/\s/g, '') };
  const palette = /^ansi-palette-(\d+)$/.exec(name);
  if (palette?.[1] !== undefined) return { rgb: paletteRgb(Number(palette[1])) };
  return { className: name };
}

function Ansi({ text }: { text: string }) {
  const parts = Anser.ansiToJson(text, { json: true, remove_empty: true, use_classes: true });
  return (
    <>
      {parts.map((part) => {
        const fg = colour(part.fg, part.fg_truecolor);
        const bg = colour(part.bg, part.bg_truecolor);
        const classes = [
          fg.className === undefined ? '' : `${fg.className}-fg`,
          bg.className === undefined ? '' : `${bg.className}-bg`,
          ...part.decorations.map((d) => `ansi-${d}`),
        ].filter((c) => c !== '');
        const style: Record<string, string> = {};
        if (fg.rgb !== undefined) style.color = `rgb(${fg.rgb})`;
        if (bg.rgb !== undefined) style.backgroundColor = `rgb(${bg.rgb})`;
        if (classes.length === 0 && Object.keys(style).length === 0) return part.content;
        return (
          <span class={classes.join(' ')} style={style}>
            {part.content}
          </span>
        );
      })}
    </>
  );
}

/** Cuts text at a line start at most `keep` characters from its end (or at `keep` if no line starts there). */
function keepTail(text: string, keep: number): { text: string; dropped: number } {
  if (text.length <= keep) return { text, dropped: 0 };
  let cut = text.length - keep;
  const newline = text.indexOf('\n', cut);
  if (newline !== -1 && newline < text.length - 1) cut = newline + 1;
  return { text: text.slice(cut), dropped: cut };
}

export function LogView({
  id,
  stream,
  running,
  storedBytes,
}: {
  id: string;
  stream: 'stdout' | 'stderr';
  /** Follow live output; otherwise page through what was stored. */
  running: boolean;
  /** What was stored, once known: the paging's extent. */
  storedBytes?: number;
}) {
  const [shown, setShown] = useState<Window>(EMPTY);
  const [error, setError] = useState<string | undefined>(undefined);
  const [pageAt, setPageAt] = useState(0);
  const [loading, setLoading] = useState(false);
  const box = useRef<HTMLPreElement>(null);
  const pinned = useRef(true);

  // Following: from the start, then whatever comes next, until the stream is complete.
  useEffect(() => {
    if (!running) return;
    const abort = new AbortController();
    const decoder = new TextDecoder();
    let window: Window = EMPTY;
    const go = async () => {
      let offset = 0;
      while (!abort.signal.aborted) {
        try {
          const chunk = await readLog(id, stream, offset, { follow: true, signal: abort.signal });
          const added = decoder.decode(chunk.bytes, { stream: !chunk.complete });
          const joined = keepTail(window.text + added, FOLLOW_WINDOW_BYTES);
          window = {
            from: window.from + joined.dropped,
            to: chunk.nextOffset,
            text: joined.text,
            skipped: window.skipped + chunk.skippedBytes,
            complete: chunk.complete,
          };
          setShown(window);
          setError(undefined);
          offset = chunk.nextOffset;
          if (chunk.complete) return;
        } catch (failure) {
          if (abort.signal.aborted) return;
          setError((failure as ApiError).message);
          await new Promise((resolve) => setTimeout(resolve, 2000));
        }
      }
    };
    void go();
    return () => abort.abort();
  }, [id, stream, running]);

  // Paging: one window of the stored stream at a time.
  useEffect(() => {
    if (running) return;
    const abort = new AbortController();
    setLoading(true);
    readLog(id, stream, pageAt, { maxBytes: PAGE_BYTES, signal: abort.signal })
      .then((chunk) => {
        setShown({
          from: pageAt + chunk.skippedBytes,
          to: chunk.nextOffset,
          text: new TextDecoder().decode(chunk.bytes),
          skipped: chunk.skippedBytes,
          complete: chunk.complete,
        });
        setError(undefined);
      })
      .catch((failure) => {
        if (!abort.signal.aborted) setError((failure as ApiError).message);
      })
      .finally(() => setLoading(false));
    return () => abort.abort();
  }, [id, stream, running, pageAt]);

  // Keep the newest line in view while following, unless the reader scrolled up.
  useEffect(() => {
    const element = box.current;
    if (element !== null && running && pinned.current) element.scrollTop = element.scrollHeight;
  }, [shown, running]);

  const total = storedBytes ?? shown.to;
  const paged = !running && total > PAGE_BYTES;
  return (
    <section class="log" aria-label={stream}>
      <header>
        <h3>{stream}</h3>
        <span class="meta" aria-live="polite">
          {running
            ? shown.complete
              ? 'ended'
              : 'following…'
            : total === 0
              ? 'empty'
              : `bytes ${shown.from}–${shown.to} of ${bytes(total)}`}
        </span>
        {paged && (
          <nav class="pager" aria-label={`${stream} pages`}>
            <button type="button" disabled={pageAt === 0 || loading} onClick={() => setPageAt(0)}>
              First
            </button>
            <button
              type="button"
              disabled={pageAt === 0 || loading}
              onClick={() => setPageAt(Math.max(0, pageAt - PAGE_BYTES))}
            >
              Previous
            </button>
            <button type="button" disabled={shown.complete || loading} onClick={() => setPageAt(shown.to)}>
              Next
            </button>
            <button
              type="button"
              disabled={shown.complete || loading}
              onClick={() => setPageAt(Math.max(0, total - PAGE_BYTES))}
            >
              Last
            </button>
          </nav>
        )}
      </header>
      {error !== undefined && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {running && shown.from > 0 && (
        <p class="note">Earlier output is not shown here ({bytes(shown.from)}); it is kept in the result.</p>
      )}
      {shown.skipped > 0 && (
        <p class="note">{bytes(shown.skipped)} in the middle were not kept (the job's output limits).</p>
      )}
      <pre
        ref={box}
        class="output"
        // biome-ignore lint/a11y/noNoninteractiveTabindex: a scrollable region must be reachable by keyboard
        tabIndex={0}
        data-stream={stream}
        onScroll={(event) => {
          const element = event.currentTarget;
          pinned.current = element.scrollHeight - element.scrollTop - element.clientHeight < 24;
        }}
      >
        <Ansi text={shown.text} />
      </pre>
    </section>
  );
}
