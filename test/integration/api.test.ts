import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogWriter, type JobQueue, type NodeRegistry } from '../../queue/index.ts';
import type { ApiApp } from '../../src/api/index.ts';
import { JobSpec, type Keys } from '../../src/core/index.ts';
import { configSetAll, connectionClosed, freePort, keyCount } from '../support/redis-server.ts';
import { startTestApi, type TestApi } from '../support/test-api.ts';
import { testNode } from '../support/test-node.ts';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
const CI = `ci-${randomBytes(12).toString('hex')}`;
const VIEWER = `viewer-${randomBytes(12).toString('hex')}`;
const BODY_LIMIT = 64 * 1024;

let api: TestApi;
let redis: Redis;
let keys: Keys;
let queue: JobQueue;
let nodes: NodeRegistry;
let app: ApiApp;
/** Every connection the app opened for a log follow: each must be closed when its follow ends. */
const followConnections: Redis[] = [];

beforeAll(async () => {
  api = await startTestApi({
    name: 'api',
    env: {
      ARCHWAY_TOKEN: ADMIN,
      ARCHWAY_TOKENS: `ci:read+submit:${CI},viewer:read:${VIEWER}`,
      ARCHWAY_BODY_LIMIT_BYTES: String(BODY_LIMIT),
    },
    onBlockingRedis: (r) => followConnections.push(r),
  });
  ({ redis, keys, queue, nodes, app } = api);
  // A live amd64 worker; no other arch has one.
  await nodes.register(testNode('node-amd64', 'amd64'));
});

afterEach(async () => {
  // A follow that ended must have closed its Redis connection.
  for (let i = 0; i < 50 && followConnections.some((r) => !connectionClosed(r)); i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const open = followConnections.filter((r) => !connectionClosed(r));
  const statuses = open.map((r) => r.status);
  for (const r of open) r.disconnect();
  followConnections.length = 0;
  expect(statuses, 'log-follow connections left open').toEqual([]);
});

afterAll(() => api?.close());

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const spec = (over: Record<string, unknown> = {}) => ({
  arch: 'amd64',
  image: 'busybox',
  script: 'echo hi',
  ...over,
});
const submit = (body: unknown, headers: Record<string, string> = {}) =>
  app.inject({
    method: 'POST',
    url: '/v1/jobs',
    headers: { ...bearer(CI), ...headers },
    payload: body as object,
  });
const get = (url: string, headers: Record<string, string> = {}) =>
  app.inject({ method: 'GET', url, headers: { ...bearer(VIEWER), ...headers } });

/** Submits a job and returns its id. */
async function newJob(over: Record<string, unknown> = {}): Promise<string> {
  const res = await submit(spec(over));
  expect(res.statusCode).toBe(201);
  return res.json().job.id as string;
}

/** Plays a worker: takes the job, writes each chunk as one log entry. */
async function run(id: string, chunks: string[]) {
  expect(await queue.store.transition(id, 'running', { newAttempt: true })).toMatchObject({ ok: true });
  const log = createLogWriter({ redis, keys, jobId: id, limitBytes: 1e6, secrets: [], onLimit: () => {} });
  for (const c of chunks) await log.note(c);
  return log;
}

async function finish(id: string, log: Awaited<ReturnType<typeof run>>, exitCode = 0) {
  await log.end(60);
  await queue.store.transition(id, exitCode === 0 ? 'passed' : 'failed', {
    attempt: 1,
    fields: { exitCode, finishedAt: new Date().toISOString() },
  });
}

/** Parses a server-sent events body. */
function parseSse(text: string) {
  return text
    .split('\n\n')
    .filter((block) => block.trim())
    .map((block) => {
      const ev: { id?: string; event?: string; data?: unknown } = {};
      for (const line of block.split('\n')) {
        const [field, ...rest] = line.split(': ');
        const value = rest.join(': ');
        if (field === 'id') ev.id = value;
        if (field === 'event') ev.event = value;
        if (field === 'data') ev.data = JSON.parse(value);
      }
      return ev;
    });
}

describe('POST /v1/jobs', () => {
  it('creates a job (201) that GET returns, with the arch normalised and defaults filled in', async () => {
    const res = await submit(spec({ arch: 'x86_64', labels: { repo: 'a/b' } }));
    expect(res.statusCode).toBe(201);
    const { job, warnings } = res.json();
    expect(job).toMatchObject({ state: 'queued', arch: 'amd64', image: 'busybox', labels: { repo: 'a/b' } });
    expect(job.spec).toMatchObject({ arch: 'amd64', timeoutSeconds: 3000, network: 'none' });
    expect(warnings).toEqual([]);
    expect(res.headers.location).toBe(`/v1/jobs/${job.id}`);
    const got = await get(`/v1/jobs/${job.id}`);
    expect(got.statusCode).toBe(200);
    // GET adds the job's page: a signed link (issue 12), and a queued job's place (issue #13).
    expect(got.json()).toEqual({
      ...job,
      pageUrl: expect.stringMatching(/\/jobs\/j\w+\?exp=\d+&sig=[\w-]{43}$/),
      queue: expect.objectContaining({
        status: 'waiting',
        position: expect.any(Number),
        of: expect.any(Number),
      }),
    });
  });

  it.each([
    ['aarch64', 'arm64'],
    ['x64', 'amd64'],
    ['ppc64el', 'ppc64le'],
    ['power', 'ppc64le'],
  ])('accepts the alias %s for %s', async (alias, arch) => {
    const res = await submit(spec({ arch: alias }));
    expect(res.statusCode).toBe(201);
    expect(res.json().job.arch).toBe(arch);
  });

  it('never returns a secret: its value is [secure] in every answer', async () => {
    const res = await submit(spec({ secrets: { TOKEN: 'hunter2-very-secret' }, env: { A: '1' } }));
    expect(res.body).not.toContain('hunter2');
    expect(res.json().job.spec.secrets).toEqual({ TOKEN: '[secure]' });
    const got = await get(`/v1/jobs/${res.json().job.id}`);
    expect(got.body).not.toContain('hunter2');
    expect(got.json().spec).toMatchObject({ secrets: { TOKEN: '[secure]' }, env: { A: '1' } });
    const list = await get('/v1/jobs?limit=100');
    expect(list.body).not.toContain('hunter2');
    // The worker still gets the real value.
    expect((await queue.get(res.json().job.id))?.spec.secrets.TOKEN).toBe('hunter2-very-secret');
  });

  it("shows a private repository's job source (URL, sha) to admin tokens only", async () => {
    // As the GitHub App makes it for a private repository (webhooks/github/builds.ts).
    const sha = 'c0ffee'.padEnd(40, '0');
    const source = { git: 'https://github.com/acme/secret-sauce.git', ref: 'refs/heads/main', sha };
    const { job } = await queue.submit(
      JobSpec.parse({ ...spec(), source, labels: { repo: 'acme/secret-sauce', sha, visibility: 'private' } }),
      { clientId: 'github' },
    );
    for (const res of [await get(`/v1/jobs/${job.id}`), await get('/v1/jobs?limit=100')]) {
      expect(res.statusCode).toBe(200);
      expect(res.body).not.toContain('secret-sauce.git');
      expect(res.body).not.toContain(sha);
    }
    expect((await get(`/v1/jobs/${job.id}`)).json().labels).toMatchObject({ repo: 'acme/secret-sauce' });
    const admin = await get(`/v1/jobs/${job.id}`, bearer(ADMIN));
    expect(admin.json().spec.source).toEqual(source);
    expect(admin.json().labels.sha).toBe(sha);
  });

  it('accepts an arch with no live worker and says so, in the answer and on the job', async () => {
    const res = await submit(spec({ arch: 's390x' }));
    expect(res.statusCode).toBe(201);
    const warning = 'no live worker for s390x: the job waits until one joins';
    expect(res.json().warnings).toEqual([warning]);
    expect(res.json().job).toMatchObject({ arch: 's390x', warnings: [warning] });
    expect((await get(`/v1/jobs/${res.json().job.id}`)).json().warnings).toEqual([warning]);
  });

  it('is idempotent on Idempotency-Key: the same request returns the same job (200); another body is a 409', async () => {
    const key = `k-${randomBytes(4).toString('hex')}`;
    const first = await submit(spec(), { 'idempotency-key': key });
    expect(first.statusCode).toBe(201);
    const again = await submit(spec(), { 'idempotency-key': key });
    expect(again.statusCode).toBe(200);
    expect(again.json().job.id).toBe(first.json().job.id);
    // Scoped by the token: another client's key is another job.
    const other = await submit(spec(), { ...bearer(ADMIN), 'idempotency-key': key });
    expect(other.statusCode).toBe(201);
    expect(other.json().job.id).not.toBe(first.json().job.id);
    const before = await keyCount(redis);
    const conflict = await submit(spec({ script: 'echo other' }), { 'idempotency-key': key });
    expect(conflict.statusCode).toBe(409);
    expect(conflict.json().error.code).toBe('IDEMPOTENCY_CONFLICT');
    expect(await keyCount(redis)).toBe(before);
  });
});

describe('bad requests get a clear error and change nothing', () => {
  type Case = [string, () => ReturnType<typeof submit>, number, Record<string, unknown>];
  const cases: Case[] = [
    [
      'an unknown arch',
      () => submit(spec({ arch: 'mips' })),
      400,
      { code: 'INVALID_INPUT', field: 'arch', message: expect.stringMatching(/^arch: unknown arch 'mips'/) },
    ],
    [
      'an unknown field',
      () => submit(spec({ timeout: 5 })),
      400,
      { code: 'INVALID_INPUT', field: 'timeout', message: 'timeout: unknown field' },
    ],
    ['a missing field', () => submit({ arch: 'amd64', script: 'x' }), 400, { field: 'image' }],
    [
      'a nested bad value',
      () => submit(spec({ resources: { memoryMiB: 0 } })),
      400,
      { field: 'resources.memoryMiB' },
    ],
    ['a bad env name', () => submit(spec({ env: { 'A-B': '1' } })), 400, { field: 'env.A-B' }],
    ...[
      'git://[::ffff:127.0.0.1]:9418/a/b.git',
      'https://2130706433/a/b.git',
      'https://169.254.169.254/a/b.git',
      'https://[fd00::1]/a/b.git',
    ].map(
      (git): Case => [
        `a source on ${git}`,
        () => submit(spec({ source: { git, sha: 'a'.repeat(40) } })),
        400,
        { code: 'INVALID_INPUT', field: 'source.git' },
      ],
    ),
    ['a body that is not an object', () => submit([1, 2]), 400, { code: 'INVALID_INPUT', field: 'body' }],
    [
      'invalid JSON',
      () =>
        app.inject({
          method: 'POST',
          url: '/v1/jobs',
          headers: { ...bearer(CI), 'content-type': 'application/json' },
          payload: '{"arch":',
        }),
      400,
      { code: 'INVALID_INPUT', field: 'body' },
    ],
    [
      'a bad Idempotency-Key',
      () => submit(spec(), { 'idempotency-key': 'has space' }),
      400,
      { field: 'idempotency-key' },
    ],
    [
      'no token',
      () => app.inject({ method: 'POST', url: '/v1/jobs', payload: spec() }),
      401,
      { code: 'UNAUTHORIZED' },
    ],
    ['a bad token', () => submit(spec(), bearer('not-a-token-at-all')), 401, { code: 'UNAUTHORIZED' }],
    [
      'a token that is not a bearer token',
      () => submit(spec(), { authorization: `Basic ${CI}` }),
      401,
      { code: 'UNAUTHORIZED' },
    ],
    [
      'a read-only token submitting',
      () => submit(spec(), bearer(VIEWER)),
      403,
      { code: 'FORBIDDEN', message: expect.stringMatching(/'viewer' lacks the 'submit' scope/) },
    ],
    [
      'a body over the limit',
      () => submit(spec({ script: 'x'.repeat(BODY_LIMIT + 1) })),
      413,
      { code: 'BODY_TOO_LARGE' },
    ],
    [
      'a text/plain body',
      () =>
        app.inject({
          method: 'POST',
          url: '/v1/jobs',
          headers: { ...bearer(CI), 'content-type': 'text/plain' },
          payload: JSON.stringify(spec()),
        }),
      415,
      { code: 'UNSUPPORTED_MEDIA_TYPE' },
    ],
  ];

  it.each(cases)('%s', async (_what, send, status, error) => {
    const before = await keyCount(redis);
    const res = await send();
    expect(res.statusCode).toBe(status);
    expect(res.json().error).toMatchObject(error);
    expect(typeof res.json().error.message).toBe('string');
    expect(await keyCount(redis)).toBe(before);
  });

  it('401 carries WWW-Authenticate: Bearer', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/jobs' });
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
  });

  it('an unknown job is a 404, for every job route', async () => {
    for (const [method, url] of [
      ['GET', '/v1/jobs/jnosuch'],
      ['GET', '/v1/jobs/jnosuch/log'],
      ['POST', '/v1/jobs/jnosuch/cancel'],
    ] as const) {
      const res = await app.inject({ method, url, headers: bearer(ADMIN) });
      expect(res.statusCode, `${method} ${url}`).toBe(404);
      expect(res.json().error).toMatchObject({ code: 'JOB_NOT_FOUND', message: "no job 'jnosuch'" });
    }
  });

  it('a job id that cannot be one is a 400 naming id; an unknown route a 404', async () => {
    const bad = await get('/v1/jobs/a%20b');
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.field).toBe('id');
    const none = await get('/v1/nothing');
    expect(none.statusCode).toBe(404);
    expect(none.json().error.code).toBe('NOT_FOUND');
  });
});

describe('GET /v1/jobs', () => {
  it('lists newest first in pages, filtered by state, arch (aliases too) and label', async () => {
    const run = randomBytes(3).toString('hex');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push(await newJob({ arch: i % 2 ? 'arm64' : 'amd64', labels: { run, n: String(i % 2) } }));
      await new Promise((r) => setTimeout(r, 3));
    }
    const p1 = await get(`/v1/jobs?label=run=${run}&limit=2`);
    expect(p1.statusCode).toBe(200);
    expect(p1.json().jobs.map((j: { id: string }) => j.id)).toEqual([ids[4], ids[3]]);
    const p2 = await get(`/v1/jobs?label=run=${run}&limit=2&cursor=${p1.json().next}`);
    expect(p2.json().jobs.map((j: { id: string }) => j.id)).toEqual([ids[2], ids[1]]);
    const p3 = await get(`/v1/jobs?label=run=${run}&limit=2&cursor=${p2.json().next}`);
    expect(p3.json().jobs.map((j: { id: string }) => j.id)).toEqual([ids[0]]);
    expect(p3.json().next).toBeUndefined();

    const arm = await get(`/v1/jobs?label=run=${run}&arch=aarch64`);
    expect(arm.json().jobs.map((j: { id: string }) => j.id)).toEqual([ids[3], ids[1]]);
    await queue.cancel(ids[0] as string);
    const canceled = await get(`/v1/jobs?label=run=${run}&state=canceled`);
    expect(canceled.json().jobs.map((j: { id: string }) => j.id)).toEqual([ids[0]]);
    const queuedAmd = await get(`/v1/jobs?label=run=${run}&state=queued&arch=amd64`);
    expect(queuedAmd.json().jobs.map((j: { id: string }) => j.id)).toEqual([ids[4], ids[2]]);
  });

  it.each([
    ['state=bogus', 'state'],
    ['arch=mips', 'arch'],
    ['label=nokey', 'label'],
    ['limit=0', 'limit'],
    ['limit=1000', 'limit'],
    ['cursor=abc', 'cursor'],
  ])('refuses %s with a 400 naming %s', async (query, field) => {
    const res = await get(`/v1/jobs?${query}`);
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatchObject({ code: 'INVALID_INPUT', field });
  });
});

describe('POST /v1/jobs/:id/cancel', () => {
  it('cancels a queued job (202); a finished one is a 409', async () => {
    const id = await newJob();
    const res = await app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel`, headers: bearer(CI) });
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ id, state: 'canceled', reason: 'canceled' });
    const again = await app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel`, headers: bearer(CI) });
    expect(again.statusCode).toBe(409);
    expect(again.json().error.code).toBe('JOB_FINISHED');
  });

  it('asks the worker of a running job to stop it (202, cancelRequested)', async () => {
    const id = await newJob();
    await queue.store.transition(id, 'running', { newAttempt: true });
    const res = await app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel`, headers: bearer(CI) });
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ id, state: 'running', cancelRequested: true });
  });

  it('needs the submit scope', async () => {
    const id = await newJob();
    const res = await app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel`, headers: bearer(VIEWER) });
    expect(res.statusCode).toBe(403);
    expect((await queue.get(id))?.state).toBe('queued');
  });
});

describe('GET /v1/jobs/:id/log', () => {
  it('returns the log so far as text/plain', async () => {
    const id = await newJob();
    const log = await run(id, ['line 1\n', 'line 2\r\n', 'ünïcode €\n']);
    const res = await get(`/v1/jobs/${id}/log`);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expect(res.headers['archway-job-state']).toBe('running');
    expect(res.body).toBe('line 1\nline 2\r\nünïcode €\n');
    await finish(id, log);
  });

  it('?follow=1 streams until the end marker is written', async () => {
    const id = await newJob();
    const log = await run(id, ['first\n']);
    let done = false;
    const following = get(`/v1/jobs/${id}/log?follow=1`).then((r) => {
      done = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(done).toBe(false);
    await log.note('second\n');
    await new Promise((r) => setTimeout(r, 200));
    expect(done).toBe(false);
    await log.note('third\n');
    await finish(id, log);
    const res = await following;
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expect(res.body).toBe('first\nsecond\nthird\n');
  });

  it('SSE: one event per chunk with its id, a final end event, and resumes after Last-Event-ID', async () => {
    const id = await newJob();
    const chunks = ['one\n', 'two\r', 'three "quoted"\n', 'four\n', 'five\n'];
    const log = await run(id, chunks);
    await finish(id, log, 3);
    const sse = { accept: 'text/event-stream' };
    const all = await get(`/v1/jobs/${id}/log`, sse);
    expect(all.statusCode).toBe(200);
    expect(all.headers['content-type']).toMatch(/^text\/event-stream/);
    const events = parseSse(all.body);
    expect(events.map((e) => e.event)).toEqual(['log', 'log', 'log', 'log', 'log', 'end']);
    expect(events.slice(0, 5).map((e) => e.data)).toEqual(chunks);
    expect(events.slice(0, 5).every((e) => /^\d+-\d+$/.test(e.id ?? ''))).toBe(true);
    expect(new Set(events.map((e) => e.id)).size).toBe(6);
    expect(events[5]).toEqual({ event: 'end', data: { state: 'failed', exitCode: 3, reason: null } });

    const mid = events[1]?.id as string;
    const resumed = parseSse((await get(`/v1/jobs/${id}/log`, { ...sse, 'last-event-id': mid })).body);
    expect(resumed.map((e) => e.data)).toEqual([
      ...chunks.slice(2),
      { state: 'failed', exitCode: 3, reason: null },
    ]);
    expect(resumed.map((e) => e.id)).toEqual([...events.slice(2, 5).map((e) => e.id), undefined]);
    const viaQuery = parseSse((await get(`/v1/jobs/${id}/log?after=${mid}`, sse)).body);
    expect(viaQuery.map((e) => e.data)).toEqual(resumed.map((e) => e.data));
    // Plain text resumes too.
    expect((await get(`/v1/jobs/${id}/log?after=${mid}`)).body).toBe(chunks.slice(2).join(''));
  });

  it('SSE follows a running job live and ends with its final state', async () => {
    const id = await newJob();
    const log = await run(id, ['start\n']);
    const following = get(`/v1/jobs/${id}/log`, { accept: 'text/event-stream' });
    await new Promise((r) => setTimeout(r, 200));
    await log.note('more\n');
    await finish(id, log);
    const events = parseSse((await following).body);
    expect(events.map((e) => e.data)).toEqual([
      'start\n',
      'more\n',
      { state: 'passed', exitCode: 0, reason: null },
    ]);
  });

  it('a bad Last-Event-ID is a 400', async () => {
    const id = await newJob();
    const res = await get(`/v1/jobs/${id}/log`, { accept: 'text/event-stream', 'last-event-id': 'x' });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.field).toBe('last-event-id');
  });

  it('a follow whose client goes away closes its Redis connection', async () => {
    const id = await newJob();
    const res = await app.inject({
      method: 'GET',
      url: `/v1/jobs/${id}/log?follow=1`,
      headers: bearer(VIEWER),
      payloadAsStream: true,
    });
    expect(res.statusCode).toBe(200);
    const opened = followConnections.at(-1);
    expect(opened?.status).not.toBe('end');
    res.stream().destroy();
    res.raw.res.destroy();
    // afterEach checks that the connection was closed.
  });
});

describe('health, readiness and the OpenAPI document', () => {
  it('/healthz answers without a token', async () => {
    const res = await app.inject({ method: 'GET', url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ok' });
  });

  it('/readyz is 200 with noeviction and 503 once Redis may evict keys', async () => {
    expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
    await configSetAll(redis, 'maxmemory-policy', 'allkeys-lru');
    try {
      const res = await app.inject({ method: 'GET', url: '/readyz' });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({ status: 'unready', error: expect.stringMatching(/noeviction/) });
    } finally {
      await configSetAll(redis, 'maxmemory-policy', 'noeviction');
    }
  });

  it('/openapi.json is generated from the schemas, and /docs renders it', async () => {
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    expect(res.statusCode).toBe(200);
    const doc = res.json();
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/v1/jobs', '/v1/jobs/{id}', '/v1/jobs/{id}/cancel', '/v1/jobs/{id}/log']),
    );
    const body = doc.paths['/v1/jobs'].post.requestBody.content['application/json'].schema;
    expect(body.properties.arch).toBeDefined();
    expect(body.required).toEqual(expect.arrayContaining(['arch', 'image', 'script']));
    // A user's source is a git URL; only the API names an upload (a build's jobs), so the body has no such field.
    expect(
      Object.keys(body.properties.source.properties ?? body.properties.source.anyOf?.[0]?.properties),
    ).toEqual(['git', 'ref', 'sha']);
    expect(Object.keys(doc.paths).some((p) => p.startsWith('/docs'))).toBe(false);
    // A queued job's place (issue #13) is named in the document, with its fields.
    const place = JSON.stringify(doc.components.schemas.JobQueuePlace);
    for (const field of [
      'position',
      'of',
      'until',
      'estimatedWaitSeconds',
      'waiting',
      'delayed',
      'held',
      'starting',
    ])
      expect(place).toContain(`"${field}"`);
    expect(JSON.stringify(doc.components.schemas.Job.properties.queue)).toContain('JobQueuePlace');
    const docs = await app.inject({ method: 'GET', url: '/docs/' });
    expect(docs.statusCode).toBe(200);
    expect(docs.body).toMatch(/swagger/i);
  });
});

describe('bin/archway submit, logs, cancel, jobs (clients of the API)', () => {
  let url: string;
  beforeAll(async () => {
    url = await app.listen({ host: '127.0.0.1', port: 0 });
  });
  const archway = (args: string[], env: Record<string, string> = {}) =>
    execa('bin/archway', args, {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ARCHWAY_URL: url, ARCHWAY_TOKEN: CI, ...env },
      extendEnv: false,
      reject: false,
    });

  it('submit prints the id (warnings on stderr); jobs lists it; cancel cancels it, and a second cancel exits 2', async () => {
    const label = `run=${randomBytes(3).toString('hex')}`;
    const sub = await archway([
      'submit',
      '--arch',
      'ppc64el',
      '--image',
      'busybox',
      '--env',
      'A=1',
      '--secret',
      'S=very-secret-value',
      '--label',
      label,
      '--timeout',
      '60',
      '--',
      'echo',
      '$A',
      '&&',
      'true',
    ]);
    expect(sub.exitCode).toBe(0);
    const id = sub.stdout.trim();
    expect(id).toMatch(/^j[0-9a-f]{24}$/);
    expect(sub.stderr).toContain('warning: no live worker for ppc64le: the job waits until one joins');
    const job = await queue.get(id);
    expect(job?.spec).toMatchObject({
      arch: 'ppc64le',
      script: 'echo $A && true',
      env: { A: '1' },
      secrets: { S: 'very-secret-value' },
      labels: { run: label.slice(4) },
      timeoutSeconds: 60,
    });

    const list = await archway(['jobs', '--label', label, '--arch', 'power']);
    expect(list.exitCode).toBe(0);
    const lines = list.stdout.split('\n');
    expect(lines[0]).toMatch(/^ID\s+ARCH\s+STATE\s+REASON\s+IMAGE\s+CREATED$/);
    expect(lines[1]).toMatch(new RegExp(`^${id}\\s+ppc64le\\s+queued\\s+busybox\\s+\\d{4}-`));

    const cancel = await archway(['cancel', id]);
    expect(cancel.exitCode).toBe(0);
    expect(cancel.stdout).toBe(`canceled ${id}`);
    const again = await archway(['cancel', id]);
    expect(again.exitCode).toBe(2);
    expect(again.stderr).toContain(`archway: job ${id} has already finished (canceled)`);
  });

  it('submit --follow streams the log and exits with the job exit code', async () => {
    const label = `run=${randomBytes(3).toString('hex')}`;
    const following = archway([
      'submit',
      '--arch',
      'amd64',
      '--image',
      'busybox',
      '--label',
      label,
      '--follow',
      '--',
      'exit 3',
    ]);
    let id: string | undefined;
    for (let i = 0; i < 200 && !id; i++) {
      id = (await queue.list({ limit: 1, label })).jobs[0]?.id;
      if (!id) await new Promise((r) => setTimeout(r, 50));
    }
    if (!id) throw new Error('submit --follow made no job');
    const log = await run(id, ['one\n', 'two\r\n']);
    await new Promise((r) => setTimeout(r, 300));
    await log.note('three\n');
    await finish(id, log, 3);
    const r = await following;
    expect(r.stdout).toBe('one\ntwo\r\nthree');
    expect(r.stderr).toContain(`job ${id} failed with exit code 3`);
    expect(r.exitCode).toBe(3);

    const logs = await archway(['logs', id]);
    expect(logs.exitCode).toBe(0);
    expect(logs.stdout).toBe('one\ntwo\r\nthree');
  });

  it('nodes drain: the node is DRAINING as soon as the call returns (API and CLI), before any heartbeat; undrain reverts it', async () => {
    // node-amd64 is a registered record with no worker behind it: the test heartbeats for it as a
    // node that has not applied the drain yet would (state active), so it is not lost meanwhile.
    const beat = () => nodes.heartbeat('node-amd64', { busy: 0, state: 'active' });
    await beat();
    const drain = await archway(['nodes', 'drain', 'node-amd64'], { ARCHWAY_TOKEN: ADMIN });
    expect(drain.exitCode).toBe(0);
    try {
      const listed = (await get('/v1/nodes')).json().nodes as { id: string; state: string }[];
      expect(listed.find((n) => n.id === 'node-amd64')?.state).toBe('draining');
      await beat();
      expect((await archway(['nodes'])).stdout).toMatch(/node-amd64\s.*\sDRAINING\s/);
    } finally {
      expect((await archway(['nodes', 'undrain', 'node-amd64'], { ARCHWAY_TOKEN: ADMIN })).exitCode).toBe(0);
    }
    await beat();
    expect((await archway(['nodes'])).stdout).toMatch(/node-amd64\s.*\sONLINE\s/);
  });

  it('an unknown arch, an unknown job or a bad token exits 2 with the API message; no API exits 1', async () => {
    const bad = await archway(['submit', '--arch', 'mips', '--image', 'busybox', '--', 'true']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain("archway: arch: unknown arch 'mips'");
    const none = await archway(['logs', 'jnosuch']);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toContain("archway: no job 'jnosuch'");
    const denied = await archway(['jobs'], { ARCHWAY_TOKEN: 'wrong-token-wrong-token' });
    expect(denied.exitCode).toBe(2);
    expect(denied.stderr).toContain('archway: invalid token');
    const down = await archway(['jobs'], { ARCHWAY_URL: `http://127.0.0.1:${await freePort()}` });
    expect(down.exitCode).toBe(1);
    expect(down.stderr).toMatch(/archway: cannot reach the API at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/);
  });
});
