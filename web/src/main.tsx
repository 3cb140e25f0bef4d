// Ferry's dashboard: a hash-routed single page on Ferry's own API. The bearer token is asked
// for once, when Ferry first wants one, and kept for the browser session.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { type ApiError, getJson, token, whenUnauthorized } from './api.ts';
import { ExecutionPage } from './pages/execution.tsx';
import { ExecutionsPage } from './pages/executions.tsx';
import { NodePage } from './pages/node.tsx';
import { ReferencePage } from './pages/reference.tsx';
import { SubmitPage } from './pages/submit.tsx';
import './style.css';

interface Route {
  readonly page: 'executions' | 'execution' | 'submit' | 'reference' | 'node';
  readonly id?: string;
  readonly query: URLSearchParams;
}

function parseRoute(hash: string): Route {
  const [path = '', search = ''] = hash.replace(/^#/, '').split('?');
  const query = new URLSearchParams(search);
  const execution = /^\/executions\/([^/]+)$/.exec(path);
  if (execution?.[1] !== undefined) return { page: 'execution', id: decodeURIComponent(execution[1]), query };
  if (path === '/submit') return { page: 'submit', query };
  if (path === '/reference') return { page: 'reference', query };
  if (path === '/node') return { page: 'node', query };
  return { page: 'executions', query };
}

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const changed = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  return route;
}

function TokenForm({ refused, onSignedIn }: { refused?: string; onSignedIn: () => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState(refused);
  const [checking, setChecking] = useState(false);
  const submit = async (event: Event) => {
    event.preventDefault();
    token.set(value.trim());
    setChecking(true);
    try {
      await getJson('/v1/node');
      onSignedIn();
    } catch (failure) {
      token.clear();
      setError((failure as ApiError).message);
    } finally {
      setChecking(false);
    }
  };
  return (
    <main class="signin">
      <h1>Ferry</h1>
      <form onSubmit={submit} aria-describedby={error === undefined ? undefined : 'token-error'}>
        {/* For password managers: the token belongs to this server, not to a user name. */}
        <input type="text" name="username" autocomplete="username" value="ferry" hidden readOnly />
        <label for="token">Bearer token</label>
        <p class="hint">
          This server asks for the token it was started with: FERRY_TOKEN, or the one{' '}
          <code>ferry dashboard</code> printed.
        </p>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="current-password"
          required
          value={value}
          onInput={(event) => setValue((event.target as HTMLInputElement).value)}
        />
        <button type="submit" disabled={checking}>
          {checking ? 'Checking…' : 'Sign in'}
        </button>
        {error !== undefined && (
          <p id="token-error" class="error" role="alert">
            {error}
          </p>
        )}
      </form>
    </main>
  );
}

function App() {
  const route = useRoute();
  const [signIn, setSignIn] = useState<{ refused?: string } | undefined>(undefined);
  // Bumped after signing in, so the page reloads what it could not read.
  const [session, setSession] = useState(0);
  useEffect(() => {
    whenUnauthorized((error) =>
      setSignIn({
        ...(token.get() === undefined ? {} : { refused: `the token was refused: ${error.message}` }),
      }),
    );
    // Whether this server wants a token, asked at once: a page that reads nothing (the form)
    // must not wait for its first call to find out.
    getJson('/v1/node').catch(() => undefined);
  }, []);
  if (signIn !== undefined) {
    return (
      <TokenForm
        {...signIn}
        onSignedIn={() => {
          setSignIn(undefined);
          setSession((n) => n + 1);
        }}
      />
    );
  }
  return (
    <>
      <header class="top">
        <a class="brand" href="#/">
          Ferry
        </a>
        <nav aria-label="Main">
          <a href="#/" aria-current={route.page === 'executions' ? 'page' : undefined}>
            Executions
          </a>
          <a href="#/submit" aria-current={route.page === 'submit' ? 'page' : undefined}>
            Submit
          </a>
          <a href="#/node" aria-current={route.page === 'node' ? 'page' : undefined}>
            Node
          </a>
          <a href="#/reference" aria-current={route.page === 'reference' ? 'page' : undefined}>
            API
          </a>
        </nav>
        {token.get() !== undefined && (
          <button
            type="button"
            class="link"
            onClick={() => {
              token.clear();
              setSignIn({});
            }}
          >
            Sign out
          </button>
        )}
      </header>
      <main key={session}>
        {route.page === 'execution' && route.id !== undefined ? (
          <ExecutionPage id={route.id} />
        ) : route.page === 'submit' ? (
          <SubmitPage />
        ) : route.page === 'node' ? (
          <NodePage />
        ) : route.page === 'reference' ? (
          <ReferencePage query={route.query} />
        ) : (
          <ExecutionsPage query={route.query} />
        )}
      </main>
    </>
  );
}

/**
 * `ferry dashboard` prints the pages' address with its launch token, `#token=…`: taken into the
 * session and out of the address at once, so that the tab's history and a copied address no
 * longer hold it.
 */
function takeTokenFromAddress(): void {
  // The token is base64url: nothing in it to decode.
  const given = /^#token=([A-Za-z0-9_-]+)$/.exec(location.hash)?.[1];
  if (given === undefined) return;
  token.set(given);
  history.replaceState(null, '', `${location.pathname}${location.search}#/`);
}

takeTokenFromAddress();
const root = document.getElementById('app');
if (root !== null) render(<App />, root);
