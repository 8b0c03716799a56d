import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createImageStore, publishImage } from '../../images/index.ts';
import { createImageCatalog } from '../../queue/index.ts';
import { createKeys, createLogger, FINAL_STATES, type JobRecord, runCommand } from '../../src/core/index.ts';
import { cgroupLeftovers, eventually, testConfig } from '../support/test-host.ts';

/**
 * A small fleet on this machine, as an operator runs one across machines: Redis (TLS and a
 * password) and the API (bound to its machine's loopback behind a TLS proxy) in one network
 * namespace, two worker "hosts" in two others, each with a storage pool, a runtime state dir
 * and a cgroup parent of its own, all talking over veth links on 10.77.0.0/24 (never loopback).
 * docs/operations.md ("Adding a host", "The API on its own machine") is written from this set-up.
 *
 * The namespaces hold the network only (the processes enter them with `nsenter --net`): the hosts
 * share this kernel, its mounts and cgroups, so they share one uid lease directory and base, as
 * the test suites do. Their job network is off (ARCHWAY_EGRESS=false): it is host-wide by design.
 */
const ROOT = resolve(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin/archway');
const T = testConfig();
const NS = { core: 'awfleet-core', a: 'awfleet-a', b: 'awfleet-b' } as const;
const ADDR = { core: '10.77.0.1', a: '10.77.0.2', b: '10.77.0.3', test: '10.77.0.254' } as const;
const PORT = { redis: 26_379, api: 26_080, proxy: 26_443 } as const;
type HostName = 'a' | 'b';
const HOST = {
  a: { pool: '/var/lib/archway-fleet-a', run: '/run/archway-fleet-a', cgroup: 'archway-fleet-a' },
  b: { pool: '/var/lib/archway-fleet-b', run: '/run/archway-fleet-b', cgroup: 'archway-fleet-b' },
} as const;
const REDIS_PASSWORD = randomBytes(16).toString('hex');
const ADMIN_TOKEN = randomBytes(16).toString('hex');
const SYNC_TOKEN = randomBytes(16).toString('hex');
const PREFIX = `fleet${randomBytes(3).toString('hex')}`;
const REDIS_URL = `rediss://:${REDIS_PASSWORD}@${ADDR.core}:${PORT.redis}`;
const API_URL = `https://${ADDR.core}:${PORT.proxy}`;
const IMAGE = 'busybox';
const logger = createLogger({ name: 'fleet-test', level: process.env.ARCHWAY_TEST_LOG_LEVEL ?? 'warn' });

let dir: string;
let ca: Buffer;
let redis: Redis;
const keys = createKeys(PREFIX);
const procs: { name: string; proc: ChildProcess; log: string }[] = [];
const workers: Partial<Record<HostName, ChildProcess>> = {};

const sh = async (cmd: string, args: string[]) => {
  await execa(cmd, args);
};
const ipIn = (ns: string, ...args: string[]) => sh('ip', ['-n', ns, ...args]);

/** A process inside a namespace's network (only: it keeps this machine's mounts and cgroups). */
function startIn(
  ns: string,
  name: string,
  cmd: string,
  args: string[],
  env: Record<string, string>,
): ChildProcess {
  const proc = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', cmd, ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const entry = { name, proc, log: '' };
  const keep = (d: Buffer) => {
    entry.log = (entry.log + d.toString()).slice(-20_000);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  procs.push(entry);
  return proc;
}
const logOf = (p: ChildProcess) => procs.find((e) => e.proc === p)?.log ?? '';
const exited = (p: ChildProcess) =>
  p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : once(p, 'exit').then(() => undefined);

/** The API through the TLS proxy, trusting the test's CA, as a client on the network would. */
async function api<T = unknown>(
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  return new Promise((resolvePromise, reject) => {
    const req = request(
      `${API_URL}${path}`,
      {
        method,
        ca,
        headers: {
          authorization: `Bearer ${ADMIN_TOKEN}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        timeout: 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {}
          resolvePromise({ status: res.statusCode ?? 0, body: parsed as T });
        });
      },
    );
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

interface NodeView {
  id: string;
  lost: boolean;
  state: string;
  busy: number;
  images: { name: string; digest: string }[];
}
const nodes = async () => (await api<{ nodes: NodeView[] }>('GET', '/v1/nodes')).body.nodes ?? [];
const job = async (id: string) => (await api<JobRecord>('GET', `/v1/jobs/${id}`)).body;
async function submit(script: string): Promise<string> {
  const r = await api<{ job: { id: string } }>('POST', '/v1/jobs', {
    arch: 'amd64',
    image: IMAGE,
    script,
    timeoutSeconds: 300,
  });
  expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
  return r.body.job.id;
}
async function waitFinal(id: string, ms = 120_000): Promise<JobRecord> {
  let j: JobRecord | undefined;
  await eventually(
    async () => {
      j = await job(id);
      return FINAL_STATES.includes(j.state);
    },
    `job ${id} to finish`,
    ms,
  );
  return j as JobRecord;
}
const logText = async (id: string) => {
  const r = await api<string>('GET', `/v1/jobs/${id}/log`);
  return typeof r.body === 'string' ? r.body : JSON.stringify(r.body);
};

function startWorker(h: HostName): ChildProcess {
  const p = startIn(NS[h], `worker-${h}`, BIN, ['worker', '--arch', 'amd64', '--slots', '1', '--warm', '0'], {
    REDIS_URL,
    NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem'),
    ARCHWAY_REDIS_PREFIX: PREFIX,
    ARCHWAY_NODE_ID: `fleet-${h}`,
    ARCHWAY_API_URL: API_URL,
    ARCHWAY_SYNC_TOKEN: SYNC_TOKEN,
    ARCHWAY_POOL_PATH: HOST[h].pool,
    ARCHWAY_POOL_SIZE_GIB: '4',
    ARCHWAY_RUN_DIR: HOST[h].run,
    ARCHWAY_CGROUP_PARENT: HOST[h].cgroup,
    ARCHWAY_UID_BASE: String(T.ARCHWAY_UID_BASE),
    ARCHWAY_UID_LEASE_DIR: T.ARCHWAY_UID_LEASE_DIR,
    ARCHWAY_EGRESS: 'false',
    ARCHWAY_LOG_LEVEL: 'info',
  });
  workers[h] = p;
  return p;
}

/** What a host has left: containers in its runtime state, snapshots and bundles in its pool, cgroups. */
async function hostLeftovers(h: HostName): Promise<string[]> {
  const found: string[] = [];
  const listed = await runCommand('runc', ['--root', join(HOST[h].run, 'runc'), 'list', '-q']).catch(
    () => '',
  );
  for (const id of listed.split('\n').filter(Boolean)) found.push(`container ${id}`);
  for (const d of ['warm', 'jobs', 'bundles'])
    for (const name of await readdir(join(HOST[h].pool, d)).catch(() => [] as string[]))
      found.push(`${d}/${name}`);
  found.push(...(await cgroupLeftovers(HOST[h].cgroup)));
  return found;
}

async function isMounted(path: string): Promise<boolean> {
  return (await readFile('/proc/self/mounts', 'utf8')).split('\n').some((l) => l.split(' ')[1] === path);
}

/** A storage pool made afresh: the host is new and holds no image. */
async function emptyPool(h: HostName): Promise<void> {
  const p = HOST[h].pool;
  if (await isMounted(p)) await sh('umount', [p]);
  await rm(`${p}.btrfs`, { force: true });
  await rm(p, { recursive: true, force: true });
}

async function removeNetwork(): Promise<void> {
  for (const ns of Object.values(NS)) await execa('ip', ['netns', 'del', ns], { reject: false });
  await execa('ip', ['link', 'del', 'awfleet-h'], { reject: false });
}

async function makeNetwork(): Promise<void> {
  await removeNetwork();
  for (const ns of Object.values(NS)) await sh('ip', ['netns', 'add', ns]);
  for (const ns of Object.values(NS)) await ipIn(ns, 'link', 'set', 'lo', 'up');
  // The core machine's switch: a bridge holding the address of Redis and the API.
  await ipIn(NS.core, 'link', 'add', 'br0', 'type', 'bridge');
  await ipIn(NS.core, 'addr', 'add', `${ADDR.core}/24`, 'dev', 'br0');
  await ipIn(NS.core, 'link', 'set', 'br0', 'up');
  // Each worker host's NIC (eth0) cabled to a port of the bridge.
  for (const h of ['a', 'b'] as const) {
    await sh('ip', ['link', 'add', `awfleet-${h}0`, 'type', 'veth', 'peer', 'name', `awfleet-${h}1`]);
    await sh('ip', ['link', 'set', `awfleet-${h}0`, 'netns', NS[h], 'name', 'eth0']);
    await sh('ip', ['link', 'set', `awfleet-${h}1`, 'netns', NS.core, 'name', `port-${h}`]);
    await ipIn(NS.core, 'link', 'set', `port-${h}`, 'master', 'br0', 'up');
    await ipIn(NS[h], 'addr', 'add', `${ADDR[h]}/24`, 'dev', 'eth0');
    await ipIn(NS[h], 'link', 'set', 'eth0', 'up');
  }
  // The test itself (the operator's laptop) on the same switch.
  await sh('ip', ['link', 'add', 'awfleet-h', 'type', 'veth', 'peer', 'name', 'awfleet-hc']);
  await sh('ip', ['link', 'set', 'awfleet-hc', 'netns', NS.core, 'name', 'port-test']);
  await ipIn(NS.core, 'link', 'set', 'port-test', 'master', 'br0', 'up');
  await sh('ip', ['addr', 'add', `${ADDR.test}/24`, 'dev', 'awfleet-h']);
  await sh('ip', ['link', 'set', 'awfleet-h', 'up']);
}

async function makeCertificates(): Promise<void> {
  const f = (name: string) => join(dir, name);
  const o = (...args: string[]) => sh('openssl', args);
  // A CA of the test's own, and a server certificate for the core machine's address.
  await o(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=archway fleet test CA',
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
  );
  await o(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    `/CN=${ADDR.core}`,
    '-keyout',
    f('server.key'),
    '-out',
    f('server.csr'),
  );
  await writeFile(f('ext.cnf'), `subjectAltName=IP:${ADDR.core}\nextendedKeyUsage=serverAuth\n`);
  await o(
    'x509',
    '-req',
    '-in',
    f('server.csr'),
    '-CA',
    f('ca.pem'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-days',
    '1',
    '-out',
    f('server.pem'),
    '-extfile',
    f('ext.cnf'),
  );
  ca = await readFile(f('ca.pem'));
}

/** A TLS-terminating proxy in front of the API, as nginx or haproxy would be. */
const PROXY = `
const net = require('node:net'), tls = require('node:tls'), fs = require('node:fs');
const [cert, key, listenHost, listenPort, toPort] = process.argv.slice(1);
tls.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (c) => {
  const u = net.connect(Number(toPort), '127.0.0.1');
  c.pipe(u).pipe(c);
  const end = () => { c.destroy(); u.destroy(); };
  c.on('error', end); u.on('error', end); c.on('close', end); u.on('close', end);
}).listen(Number(listenPort), listenHost);
`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archway-fleet-'));
  await makeNetwork();
  await makeCertificates();
  for (const h of ['a', 'b'] as const) await emptyPool(h);

  // The core machine: Redis with TLS and a password, AOF on; the API on its loopback; the proxy.
  startIn(
    NS.core,
    'redis',
    'redis-server',
    [
      '--port',
      '0',
      '--tls-port',
      String(PORT.redis),
      '--bind',
      ADDR.core,
      '--tls-cert-file',
      join(dir, 'server.pem'),
      '--tls-key-file',
      join(dir, 'server.key'),
      '--tls-ca-cert-file',
      join(dir, 'ca.pem'),
      '--tls-auth-clients',
      'no',
      '--requirepass',
      REDIS_PASSWORD,
      '--dir',
      dir,
      '--appendonly',
      'yes',
      '--appendfsync',
      'everysec',
      '--maxmemory-policy',
      'noeviction',
      '--save',
      '',
    ],
    {},
  );
  redis = new Redis(REDIS_URL, { tls: { ca }, maxRetriesPerRequest: 3 });
  redis.on('error', () => undefined);
  await eventually(async () => (await redis.ping().catch(() => '')) === 'PONG', 'Redis over TLS', 20_000);

  const blobDir = join(dir, 'blobs');
  startIn(NS.core, 'api', BIN, ['api'], {
    REDIS_URL,
    NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem'),
    ARCHWAY_REDIS_PREFIX: PREFIX,
    ARCHWAY_HOST: '127.0.0.1',
    ARCHWAY_PORT: String(PORT.api),
    ARCHWAY_PUBLIC_URL: API_URL,
    ARCHWAY_TOKEN: ADMIN_TOKEN,
    ARCHWAY_TOKENS: `sync:read:${SYNC_TOKEN}`,
    ARCHWAY_BLOB_DIR: blobDir,
    ARCHWAY_LOG_LEVEL: 'info',
  });
  startIn(
    NS.core,
    'proxy',
    process.execPath,
    [
      '-e',
      PROXY,
      join(dir, 'server.pem'),
      join(dir, 'server.key'),
      ADDR.core,
      String(PORT.proxy),
      String(PORT.api),
    ],
    {},
  );
  await eventually(
    async () => (await api('GET', '/readyz').catch(() => ({ status: 0 }))).status === 200,
    'the API through its TLS proxy',
    60_000,
  );

  // The busybox image (built on this machine's test pool) published on the core machine: the new
  // hosts have empty pools and must sync it from the API.
  const store = createImageStore({ poolPath: T.ARCHWAY_POOL_PATH });
  await publishImage(IMAGE, 'amd64', { store, catalog: createImageCatalog(redis, keys), blobDir, logger });
}, 300_000);

afterAll(async () => {
  for (const h of ['a', 'b'] as const) await ipIn(NS[h], 'link', 'set', 'eth0', 'up').catch(() => undefined);
  // Workers drain (first SIGTERM) and leave; then the API, the proxy and Redis.
  for (const e of [...procs].reverse()) {
    if (e.proc.exitCode !== null || e.proc.signalCode !== null) continue;
    e.proc.kill('SIGTERM');
    const t = setTimeout(() => e.proc.kill('SIGKILL'), 30_000);
    await exited(e.proc);
    clearTimeout(t);
  }
  redis?.disconnect();
  await removeNetwork();
  const left: string[] = [];
  for (const h of ['a', 'b'] as const) {
    left.push(...(await hostLeftovers(h)).map((l) => `${h}: ${l}`));
    if (await isMounted(HOST[h].pool)) await sh('umount', [HOST[h].pool]);
  }
  await rm(dir, { recursive: true, force: true });
  const ns = (await execa('ip', ['netns', 'list'])).stdout;
  expect(ns).not.toMatch(/awfleet-/);
  expect((await execa('ip', ['-o', 'link'])).stdout).not.toMatch(/awfleet-/);
  expect(left).toEqual([]);
}, 180_000);

describe('a fleet of two worker hosts and a core machine, over real links', () => {
  it('a new host with an empty pool syncs its images from the API and takes a job', async () => {
    const t0 = Date.now();
    startWorker('a');
    const id = await submit('echo "ran on $ARCHWAY_NODE"; uname -m');
    const j = await waitFinal(id, 120_000);
    const took = Date.now() - t0;
    expect(j, logOf(workers.a as ChildProcess)).toMatchObject({ state: 'passed', node: 'fleet-a' });
    expect(await logText(id)).toContain('ran on fleet-a');
    // It came from the API: the image sync received and verified the blob into the new pool.
    expect(logOf(workers.a as ChildProcess)).toMatch(/image sync: received and verified/);
    const held = (await nodes()).find((n) => n.id === 'fleet-a')?.images.map((i) => i.name) ?? [];
    expect(held).toContain(IMAGE);
    logger.warn({ ms: took }, 'new host: from start to its first job passed');

    startWorker('b');
    await eventually(
      async () =>
        (await nodes()).some((n) => n.id === 'fleet-b' && !n.lost && n.images.some((i) => i.name === IMAGE)),
      'host b to sync and register',
      120_000,
    );
  }, 300_000);

  it('a job runs on whichever host has a free slot', async () => {
    const first = await submit('echo "on $ARCHWAY_NODE"; sleep 6');
    await eventually(async () => (await job(first)).state === 'running', 'the first job to start', 60_000);
    const busy = (await job(first)).node;
    // One slot each: the second job cannot go where the first runs.
    const second = await submit('echo "on $ARCHWAY_NODE"');
    const j2 = await waitFinal(second, 60_000);
    expect(j2.state).toBe('passed');
    expect(j2.node).not.toBe(busy);
    const j1 = await waitFinal(first, 60_000);
    expect(j1.state).toBe('passed');
    // It ran while the first still did.
    expect(Date.parse(j2.finishedAt ?? '')).toBeLessThan(Date.parse(j1.finishedAt ?? ''));
    expect(new Set([j1.node, j2.node])).toEqual(new Set(['fleet-a', 'fleet-b']));
  }, 120_000);

  it('draining one host moves new work to the other', async () => {
    const r = await api('POST', '/v1/nodes/fleet-a/drain');
    expect(r.status).toBeLessThan(300);
    await exited(workers.a as ChildProcess);
    expect((workers.a as ChildProcess).exitCode).toBe(0);
    const ids = await Promise.all([1, 2, 3].map((i) => submit(`echo job ${i} on $ARCHWAY_NODE`)));
    for (const id of ids)
      expect(await waitFinal(id, 60_000)).toMatchObject({ state: 'passed', node: 'fleet-b' });
    expect((await nodes()).map((n) => n.id)).toEqual(['fleet-b']);
    // Back in service (its pool already holds the image).
    startWorker('a');
    await eventually(
      async () => (await nodes()).some((n) => n.id === 'fleet-a' && !n.lost && n.state === 'active'),
      'host a back',
      60_000,
    );
  }, 180_000);

  it('a partition: the cut node is marked lost, its job re-runs on the other host exactly once, and nothing is left on the cut host', async () => {
    const id = await submit('echo "started on $ARCHWAY_NODE"; sleep 20; echo "finished on $ARCHWAY_NODE"');
    let victim = '';
    await eventually(
      async () => {
        const m = (await logText(id)).match(/started on (fleet-[ab])/);
        victim = m?.[1] ?? '';
        return victim !== '';
      },
      'the job to start',
      60_000,
    );
    const cut: HostName = victim === 'fleet-a' ? 'a' : 'b';
    const other = cut === 'a' ? 'fleet-b' : 'fleet-a';
    await ipIn(NS[cut], 'link', 'set', 'eth0', 'down');
    await eventually(
      async () => (await nodes()).find((n) => n.id === victim)?.lost === true,
      'the cut node to be marked lost',
      30_000,
    );
    await eventually(async () => (await logText(id)).includes(`started on ${other}`), 'the re-run', 90_000);
    // The link returns while the re-run runs: the cut host's worker comes back with its stale attempt.
    await ipIn(NS[cut], 'link', 'set', 'eth0', 'up');
    const j = await waitFinal(id, 90_000);
    expect(j.state).toBe('passed');
    expect(j.node).toBe(other);
    // Give the returning worker time to flush what it held while cut off.
    await eventually(
      async () => (await nodes()).find((n) => n.id === victim)?.lost === false,
      'the cut node back',
      60_000,
    );
    await new Promise((r) => setTimeout(r, 5000));
    const after = await job(id);
    expect(after.state).toBe('passed');
    expect(after.node).toBe(other);
    // The cut host's run is on the record as errored (its end came after it lost the job), the
    // re-run as the one that passed.
    expect(after.attempts.map((a) => [a.n, a.node, a.outcome])).toEqual([
      [1, victim, 'errored'],
      [2, other, 'passed'],
    ]);
    expect(after.attempts[0]?.error).toMatch(/lost the job while it ran/);
    // Finished once: exactly one transition into a final state.
    const events = await redis.xrange(keys.events, '-', '+');
    const finals = events.filter(([, f]) => f[1] === id && FINAL_STATES.includes((f[5] ?? '') as never));
    expect(finals).toHaveLength(1);
    const finalLog = await logText(id);
    expect(finalLog).toContain(`finished on ${other}`);
    // What the cut run wrote after the re-run began (held while cut off, or after the link came
    // back) is fenced out of the log: the log is the re-run's from there on.
    expect(finalLog).not.toContain(`finished on ${victim}`);
    // The cut host's worker destroys what it ran; nothing is left there.
    await eventually(
      async () => (await hostLeftovers(cut)).length === 0,
      'the cut host to be clean',
      60_000,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}: ${(await hostLeftovers(cut)).join(', ')}`);
    });
  }, 300_000);
});
