import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { Webhooks } from '@octokit/webhooks';
import examples from '@octokit/webhooks-examples';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startRedis, type TestRedis } from '../support/redis-server.ts';
import { eventually } from '../support/test-host.ts';

// Issue 9, point 8: unauthenticated webhook bodies are not buffered; memory stays bounded under a flood.
const SECRET = `wh-${randomBytes(12).toString('hex')}`;
const MiB = 1024 * 1024;
/** GitHub's cap on a payload, and what a hostile client posts. */
const BIG = 25 * MiB;
/** What the API may hold of webhook bodies at once, in this test. */
const MEMORY_MIB = 32;
let redis: TestRedis;
let api: ReturnType<typeof startApi>;
let url: string;

beforeAll(async () => {
  redis = await startRedis();
  const port = await freePort();
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  api = startApi({
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    REDIS_URL: redis.url,
    ARCHWAY_REDIS_PREFIX: `wh${randomBytes(3).toString('hex')}`,
    ARCHWAY_TOKEN: `admin-${randomBytes(12).toString('hex')}`,
    ARCHWAY_PORT: String(port),
    ARCHWAY_LOG_LEVEL: 'warn',
    ARCHWAY_GITHUB_APP_ID: '77',
    ARCHWAY_GITHUB_PRIVATE_KEY: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
    ARCHWAY_GITHUB_WEBHOOK_SECRET: SECRET,
    // Nothing listens there: deliveries are queued, never sent on.
    ARCHWAY_GITHUB_API_URL: `http://127.0.0.1:${await freePort()}`,
    ARCHWAY_GITHUB_WEBHOOK_MEMORY_MIB: String(MEMORY_MIB),
  });
  url = `http://127.0.0.1:${port}`;
  await eventually(
    async () => (await fetch(`${url}/healthz`).catch(() => undefined))?.ok === true,
    'the API to listen',
    60_000,
  );
}, 120_000);

/** `archway api` in a process of its own, so its memory is the API's alone. */
function startApi(env: Record<string, string>) {
  return execa('bin/archway', ['api'], { env, extendEnv: false, reject: false });
}

afterAll(async () => {
  api?.kill('SIGTERM');
  await api;
  await redis?.stop();
});

/** Resident memory of the API process now, and its peak since the last reset, in MiB. */
async function memory(): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${api.pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}
/** Resets the peak (VmHWM) to the current RSS (proc(5): clear_refs, value 5). */
const resetPeak = () => writeFile(`/proc/${api.pid}/clear_refs`, '5');

/** Posts `bytes` to the webhook route from one 1 MiB buffer (the client holds no big body), without a Content-Length. */
function post(bytes: number, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  const piece = Buffer.alloc(MiB, 'a');
  return new Promise((resolve, reject) => {
    const req = request(`${url}/webhooks/github`, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'x-github-event': 'push', ...headers },
    });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    // The server may answer and close the connection before the whole body is sent: that is the
    // point. The client then sees the connection reset, sometimes before it could read the answer.
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (answered) return;
      if (e.code === 'EPIPE' || e.code === 'ECONNRESET') resolve({ status: 0, body: e.code });
      else reject(e);
    });
    let sent = 0;
    const pump = () => {
      while (sent < bytes && !answered) {
        sent += piece.length;
        if (!req.write(piece)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

const fakeSignature = () => `sha256=${randomBytes(32).toString('hex')}`;

describe('POST /webhooks/github under a flood', () => {
  it('100 concurrent unsigned 25 MB posts: each a 401, and the API holds none of their bodies', async () => {
    const before = await memory();
    await resetPeak();
    const results = await Promise.all(Array.from({ length: 100 }, () => post(BIG, {})));
    // Each one refused: a 401, or its connection closed after the 401 was sent and before its body was.
    expect(results.every((r) => r.status === 401 || r.status === 0)).toBe(true);
    const answered = results.find((r) => r.status === 401);
    expect(JSON.parse(answered?.body ?? '{}').error.code).toBe('SIGNATURE_INVALID');
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const after = await memory();
    // Buffered, these would be 2.5 GB; refused before their bodies are read, they are nothing.
    expect(after.peak - before.rss).toBeLessThan(100);
  }, 120_000);

  it('100 concurrent 25 MB posts with well-formed but wrong signatures: the API holds at most its limit', async () => {
    const before = await memory();
    await resetPeak();
    const results = await Promise.all(
      Array.from({ length: 100 }, () => post(BIG, { 'x-hub-signature-256': fakeSignature() })),
    );
    // Each is either refused once its HMAC does not match (401) or, past the memory limit, 503
    // (or its connection closed after that answer, before the rest of its body was sent).
    expect(results.every((r) => r.status === 401 || r.status === 503 || r.status === 0)).toBe(true);
    expect(results.some((r) => r.status === 503)).toBe(true);
    const busy = results.find((r) => r.status === 503);
    expect(JSON.parse(busy?.body ?? '{}').error.code).toBe('WEBHOOK_BUSY');
    const after = await memory();
    // The limit (32 MiB) plus what the process needs to read and drop the rest; 2.5 GB buffered.
    expect(after.peak - before.rss).toBeLessThan(MEMORY_MIB + 150);
  }, 120_000);

  it('a body over 25 MiB is a 413 as soon as it passes the limit, signed or not', async () => {
    const over = await post(BIG + MiB, { 'x-hub-signature-256': fakeSignature() });
    expect(over.status).toBe(413);
    expect(JSON.parse(over.body).error.code).toBe('BODY_TOO_LARGE');
    // Announced by Content-Length: refused before a byte of it is read.
    const announced = await fetch(`${url}/webhooks/github`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'content-length': String(BIG + 1),
        'x-hub-signature-256': fakeSignature(),
      },
      body: Buffer.alloc(BIG + 1),
    });
    expect(announced.status).toBe(413);
  }, 60_000);

  it('a real payload signed with the secret is still taken (202), and the memory it held is free again', async () => {
    const all = examples as unknown as { name: string; examples: Record<string, unknown>[] }[];
    const push = all.find((e) => e.name === 'push')?.examples[0];
    const body = JSON.stringify(push);
    const id = randomUUID();
    const res = await fetch(`${url}/webhooks/github`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-github-event': 'push',
        'x-github-delivery': id,
        'x-hub-signature-256': await new Webhooks({ secret: SECRET }).sign(body),
      },
      body,
    });
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({ delivery: id, event: 'push' });
    // The same body with one byte changed is not.
    const tampered = await fetch(`${url}/webhooks/github`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-github-event': 'push',
        'x-github-delivery': randomUUID(),
        'x-hub-signature-256': await new Webhooks({ secret: SECRET }).sign(body),
      },
      body: `${body} `,
    });
    expect(tampered.status).toBe(401);
    // After the floods, a signed delivery of 20 MiB fits the memory limit again (nothing is left held).
    const large = JSON.stringify({ ...push, padding: 'p'.repeat(20 * MiB) });
    const big = await fetch(`${url}/webhooks/github`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-github-event': 'push',
        'x-github-delivery': randomUUID(),
        'x-hub-signature-256': await new Webhooks({ secret: SECRET }).sign(large),
      },
      body: large,
    });
    expect(big.status).toBe(202);
  }, 60_000);
});
