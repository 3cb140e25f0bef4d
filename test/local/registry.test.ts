// Image names are addresses: a job must not make the Docker Engine connect to a registry the
// executor does not allow, least of all one inside the host. Checked over HTTP against a real
// server and engine, with a listener on a loopback port that counts every connection.
import fsp from 'node:fs/promises';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { containersOf, docker, removeContainersOf } from '../support/docker.ts';
import { startServer, stdoutOf, submit, type TestServer, waitDone } from '../support/server.ts';

const dockerAvailable = inject('dockerAvailable');
const testImage = inject('testImage');
if (!dockerAvailable && process.env.CI === 'true') {
  throw new Error('CI=true but no Docker Engine is available: the registry suite must run');
}

interface Reply {
  readonly status: number;
  // biome-ignore lint/suspicious/noExplicitAny: replies are JSON of several shapes
  readonly body: any;
}

async function post(server: TestServer, path: string, body: unknown): Promise<Reply> {
  const response = await fetch(`${server.url}${path}`, {
    method: 'POST',
    ...(body === undefined
      ? {}
      : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  return { status: response.status, body: await response.json() };
}

/** A loopback port with a listener that counts the connections it gets. */
async function countingListener(): Promise<{
  port: number;
  connections: () => number;
  close(): Promise<void>;
}> {
  let connections = 0;
  const server = net.createServer((socket) => {
    connections += 1;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const listener = await countingListener();
  await listener.close();
  return listener.port;
}

const imageExists = (name: string) =>
  docker
    .getImage(name)
    .inspect()
    .then(
      () => true,
      () => false,
    );

describe.skipIf(!dockerAvailable)('registries a job may name', () => {
  let listener: Awaited<ReturnType<typeof countingListener>>;
  let closed: number;
  const servers: TestServer[] = [];
  const submitted: string[] = [];
  const tagged: string[] = [];

  const serve = async (env: Record<string, string>) => {
    const server = await startServer({ FERRY_BACKEND: 'docker', ...env });
    servers.push(server);
    return server;
  };

  beforeAll(async () => {
    listener = await countingListener();
    closed = await closedPort();
  });
  afterAll(async () => {
    for (const server of servers) {
      await server.close();
      await fsp.rm(server.dataDir, { recursive: true, force: true });
    }
    await removeContainersOf(submitted);
    for (const name of tagged)
      await docker
        .getImage(name)
        .remove({ noprune: true })
        .catch(() => undefined);
    await listener?.close();
  });

  const internalImages = () => [
    `127.0.0.1:${listener.port}/x:1`,
    `127.0.0.1:${closed}/x:1`,
    `localhost:${listener.port}/x:1`,
    `[::1]:${listener.port}/x:1`,
    '169.254.169.254/latest/x:1',
    '10.0.0.1:5000/x:1',
  ];

  for (const registryAllow of [undefined, '*']) {
    it(`declines images on loopback, link-local and private registries (FERRY_REGISTRY_ALLOW=${registryAllow ?? 'default'}), contacting nothing`, async () => {
      const server = await serve(registryAllow === undefined ? {} : { FERRY_REGISTRY_ALLOW: registryAllow });
      const reasons = new Map<string, string>();
      for (const image of internalImages()) {
        const bid = await post(server, '/v1/bids', { image, command: ['true'] });
        expect(bid.status, JSON.stringify(bid.body)).toBe(201);
        submitted.push(bid.body.executionId);
        expect(bid.body.bid.accepted, image).toBe(false);
        const registry = image.slice(0, image.indexOf('/'));
        expect(bid.body.bid.reason).toContain(`registry ${registry}`);
        expect(bid.body.bid.reason).toContain('FERRY_REGISTRY_ALLOW');
        reasons.set(image, bid.body.bid.reason);

        const job = await post(server, '/v1/jobs', { image, command: ['true'] });
        expect(job.status, JSON.stringify(job.body)).toBe(422);
        expect(job.body.detail).toContain(`registry ${registry}`);
        submitted.push(job.body.executionId);
      }
      // Whether anything listens there changes nothing in the answer.
      const open = reasons.get(`127.0.0.1:${listener.port}/x:1`)?.replaceAll(String(listener.port), 'PORT');
      const shut = reasons.get(`127.0.0.1:${closed}/x:1`)?.replaceAll(String(closed), 'PORT');
      expect(open).toBe(shut);

      expect(await containersOf(submitted)).toEqual([]);
      for (const image of internalImages()) expect(await imageExists(image), image).toBe(false);
      expect(listener.connections()).toBe(0);
    });
  }

  it('declines a registry outside the list, and runs images already on the host whatever their name', async () => {
    const server = await serve({ FERRY_REGISTRY_ALLOW: 'registry.example' });
    const elsewhere = await post(server, '/v1/bids', { image: 'quay.io/ferry/absent:1', command: ['true'] });
    expect(elsewhere.status).toBe(201);
    expect(elsewhere.body.bid.accepted).toBe(false);
    expect(elsewhere.body.bid.reason).toContain(
      'registry quay.io is not allowed; FERRY_REGISTRY_ALLOW is registry.example',
    );
    const hub = await post(server, '/v1/bids', { image: 'ferry-absent/none:1', command: ['true'] });
    expect(hub.body.bid.accepted).toBe(false);
    expect(hub.body.bid.reason).toContain('registry docker.io is not allowed');

    const local = `127.0.0.1:${listener.port}/ferry-present:busybox`;
    await docker
      .getImage(testImage)
      .tag({ repo: `127.0.0.1:${listener.port}/ferry-present`, tag: 'busybox' });
    tagged.push(local);
    for (const image of [testImage, local]) {
      const execution = await submit(server.client, {
        image,
        command: ['echo', 'present'],
        resources: { cpu: 0.25, memory: 64 },
      });
      submitted.push(execution.id);
      const done = await waitDone(server.client, execution.id);
      expect(done.state, done.reason).toBe('COMPLETED');
      expect((await stdoutOf(server.client, execution.id)).toString()).toBe('present\n');
    }
    expect(listener.connections()).toBe(0);
  });

  it('never pulls from a registry outside the list, even when an image present at the bid is gone at launch', async () => {
    const server = await serve({});
    const repo = `127.0.0.1:${listener.port}/ferry-vanishing`;
    await docker.getImage(testImage).tag({ repo, tag: 'busybox' });
    tagged.push(`${repo}:busybox`);
    const bid = await post(server, '/v1/bids', {
      image: `${repo}:busybox`,
      command: ['echo', 'never'],
      resources: { cpu: 0.25, memory: 64 },
    });
    expect(bid.body.bid.accepted).toBe(true);
    submitted.push(bid.body.executionId);
    await docker.getImage(`${repo}:busybox`).remove({ noprune: true });

    const accepted = await post(server, `/v1/bids/${bid.body.executionId}/accept`, undefined);
    expect(accepted.status).toBe(202);
    const done = await waitDone(server.client, bid.body.executionId);

    expect(done.state).toBe('FAILED');
    expect(done.reason).toContain(
      `registry 127.0.0.1:${listener.port} is not allowed by FERRY_REGISTRY_ALLOW`,
    );
    expect(await containersOf([bid.body.executionId])).toEqual([]);
    expect(listener.connections()).toBe(0);
  });
});
