// An HTTP server on a free loopback port, for the emulated deployment's fronts: it answers a
// request its handler fails with the given fallback, and closes with its connections.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export class LoopbackServer {
  private server: http.Server | undefined;
  private baseUrl = '';

  constructor(
    private readonly handle: (request: http.IncomingMessage, response: http.ServerResponse) => Promise<void>,
    private readonly failed: (error: unknown, response: http.ServerResponse) => void,
  ) {}

  get url(): string {
    return this.baseUrl;
  }

  async listen(port = 0): Promise<string> {
    const server = http.createServer((request, response) => {
      void this.handle(request, response).catch((error: unknown) => this.failed(error, response));
    });
    server.keepAliveTimeout = 5000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.baseUrl;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}
