// The dashboard's static pages (built from web/ into dist/web), as `ferry serve` and `ferry
// dashboard` answer them: read once, served with a Content-Security-Policy that lets the pages
// load and call nothing but Ferry's own origin, and no data of any caller's in them (the pages
// ask the API for that, with the caller's credentials).
import fs from 'node:fs';
import type http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Only this origin: no inline script or style, no other site, no framing. */
export const DASHBOARD_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

export const DASHBOARD_DIR = fileURLToPath(new URL('../../dist/web/', import.meta.url));

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};

export interface StaticReply {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
}

const HEADERS = {
  'content-security-policy': DASHBOARD_POLICY,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
};

export class DashboardAssets {
  private constructor(
    private readonly files: ReadonlyMap<string, { type: string; body: Buffer }>,
    /** Why there are no pages, when there are none. */
    private readonly missing?: string,
  ) {}

  /** Reads the built pages; a missing build is served as a page that says how to build it. */
  static load(dir: string = DASHBOARD_DIR): DashboardAssets {
    const files = new Map<string, { type: string; body: Buffer }>();
    const walk = (at: string, prefix: string) => {
      for (const entry of fs.readdirSync(at, { withFileTypes: true })) {
        const full = path.join(at, entry.name);
        if (entry.isDirectory()) walk(full, `${prefix}${entry.name}/`);
        else if (entry.isFile()) {
          const type = TYPES[path.extname(entry.name)];
          if (type !== undefined) files.set(`/${prefix}${entry.name}`, { type, body: fs.readFileSync(full) });
        }
      }
    };
    try {
      walk(dir, '');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    return files.has('/index.html')
      ? new DashboardAssets(files)
      : new DashboardAssets(files, `the dashboard is not built in ${dir}; run \`npm run build:web\``);
  }

  /** Whether a GET of this path is the dashboard's to answer. */
  static claims(pathname: string): boolean {
    return (
      pathname === '/' ||
      pathname === '/index.html' ||
      pathname === '/favicon.svg' ||
      pathname.startsWith('/assets/')
    );
  }

  /** Answers a GET or HEAD of one of the pages' paths; false, having done nothing, for any other request. */
  answer(request: http.IncomingMessage, response: http.ServerResponse, pathname: string): boolean {
    const head = request.method === 'HEAD';
    if (!(request.method === 'GET' || head) || !DashboardAssets.claims(pathname)) return false;
    const page = this.serve(pathname);
    response.writeHead(page.status, { ...page.headers, 'content-length': page.body.length });
    response.end(head ? undefined : page.body);
    return true;
  }

  serve(pathname: string): StaticReply {
    if (this.missing !== undefined && (pathname === '/' || pathname === '/index.html')) {
      return {
        status: 503,
        headers: { ...HEADERS, 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' },
        body: Buffer.from(`Ferry: ${this.missing}\n`),
      };
    }
    const file = this.files.get(pathname === '/' ? '/index.html' : pathname);
    if (file === undefined) {
      return {
        status: 404,
        headers: { ...HEADERS, 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' },
        body: Buffer.from('Not found\n'),
      };
    }
    return {
      status: 200,
      headers: {
        ...HEADERS,
        'content-type': file.type,
        // Built assets are named by their content; the page itself must be fetched again.
        'cache-control': pathname.startsWith('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache',
      },
      body: file.body,
    };
  }
}
