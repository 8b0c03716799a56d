import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runCommand } from '../../src/core/index.ts';
import { startRedis, type TestRedis } from '../support/redis-server.ts';
import {
  collect,
  createTestHost,
  eventually,
  leftovers,
  type TestHost,
  testConfig,
} from '../support/test-host.ts';

/**
 * Job egress, against real listeners: on the host (bound to every address), in a namespace this
 * test makes to stand for "the internet" (a public-looking address), behind it a private address
 * and a fake metadata service at 169.254.169.254, and in another running job.
 */
const tag = randomBytes(2).toString('hex');
const NS = `awt-out-${tag}`;
const HOST_IF = `awto${tag}`;
const OUTSIDE = '198.51.100.2';
const PRIVATE = '10.200.0.2';
const METADATA = '169.254.169.254';

let h: TestHost;
let hostServer: Server;
let hostPort: number;
let httpd: ChildProcess;
let lanAddress: string;
let redis: TestRedis;
let webroot: string;

async function sh(cmd: string, args: string[]) {
  return runCommand(cmd, args);
}

beforeAll(async () => {
  h = await createTestHost('amd64');
  // A listener on every host address: what a job must not reach on the host's LAN address,
  // its gateway or the service address.
  hostServer = createServer((s) => s.end('host\n'));
  await new Promise<void>((r) => hostServer.listen(0, '0.0.0.0', r));
  hostPort = (hostServer.address() as { port: number }).port;
  const route = await sh('ip', ['-o', '-4', 'route', 'get', '203.0.113.1']);
  lanAddress = route.match(/ src (\S+)/)?.[1] ?? '';
  expect(lanAddress).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
  redis = await startRedis();
  // "The internet": a namespace with a public-looking address, a private one and a fake metadata service.
  await sh('ip', ['netns', 'add', NS]);
  await sh('ip', ['link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS]);
  await sh('ip', ['addr', 'add', '198.51.100.1/24', 'dev', HOST_IF]);
  await sh('ip', ['link', 'set', HOST_IF, 'up']);
  for (const a of [`${OUTSIDE}/24`, `${PRIVATE}/32`, `${METADATA}/32`])
    await sh('ip', ['-n', NS, 'addr', 'add', a, 'dev', 'eth0']);
  await sh('ip', ['-n', NS, 'link', 'set', 'eth0', 'up']);
  await sh('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  await sh('ip', ['-n', NS, 'route', 'add', 'default', 'via', '198.51.100.1']);
  await sh('ip', ['route', 'add', `${PRIVATE}/32`, 'via', OUTSIDE]);
  await sh('ip', ['route', 'add', `${METADATA}/32`, 'via', OUTSIDE]);
  webroot = await mkdtemp(join(tmpdir(), 'awt-www-'));
  await writeFile(join(webroot, 'index.html'), 'outside\n');
  httpd = spawn('ip', ['netns', 'exec', NS, 'busybox', 'httpd', '-f', '-p', '0.0.0.0:8080', '-h', webroot], {
    stdio: 'ignore',
  });
  await eventually(
    async () =>
      (await runCommand('ip', [
        'netns',
        'exec',
        NS,
        'busybox',
        'wget',
        '-q',
        '-O-',
        `http://${OUTSIDE}:8080/`,
      ]).catch(() => '')) === 'outside',
    'the outside web server',
  );
});

afterAll(async () => {
  await h?.launcher.close();
  httpd?.kill('SIGKILL');
  hostServer?.close();
  await redis?.stop();
  await sh('ip', ['route', 'del', `${PRIVATE}/32`]).catch(() => undefined);
  await sh('ip', ['route', 'del', `${METADATA}/32`]).catch(() => undefined);
  await sh('ip', ['link', 'del', HOST_IF]).catch(() => undefined);
  await sh('ip', ['netns', 'del', NS]).catch(() => undefined);
  if (webroot) await rm(webroot, { recursive: true, force: true });
});

afterEach(async () => {
  await h.launcher.close();
  expect(await leftovers()).toEqual([]);
  h = await createTestHost('amd64');
});

/** A script that tries each `addr:port` and prints `addr:port open|closed`. */
const probe = (targets: string[]) =>
  targets
    .map(
      (t) =>
        `if nc -w 2 ${t.replace(':', ' ')} </dev/null >/dev/null 2>&1; then echo "${t} open"; else echo "${t} closed"; fi`,
    )
    .join('\n');

async function run(jobId: string, network: 'none' | 'egress', script: string) {
  return collect(
    await h.launcher.launch({
      jobId,
      image: 'busybox',
      argv: ['sh', '-c', script],
      network,
      timeoutSeconds: 60,
    }),
  );
}

describe('network egress', () => {
  it('reaches the outside and the Debian mirror by name, and nothing on the host or behind private ranges', async () => {
    const targets = [
      `${OUTSIDE}:8080`,
      `${PRIVATE}:8080`,
      `${METADATA}:8080`,
      `${lanAddress}:${hostPort}`,
      `10.89.0.1:${hostPort}`,
      `127.0.0.1:${hostPort}`,
      `${lanAddress}:${redis.port}`,
      '10.89.0.1:3142',
    ];
    const r = await run(
      'egress-probe',
      'egress',
      `${probe(targets)}
gw=$(ip route | sed -n 's/^default via \\([0-9.]*\\).*/\\1/p')
if nc -w 2 $gw ${hostPort} </dev/null >/dev/null 2>&1; then echo "gateway open"; else echo "gateway closed"; fi
wget -q -O- http://deb.debian.org/debian/dists/bookworm/Release | head -1`,
    );
    expect(r.exitCode).toBe(0);
    const lines = r.output.trim().split('\n');
    expect(lines).toEqual([
      `${OUTSIDE}:8080 open`,
      `${PRIVATE}:8080 closed`,
      `${METADATA}:8080 closed`,
      `${lanAddress}:${hostPort} closed`,
      `10.89.0.1:${hostPort} closed`,
      `127.0.0.1:${hostPort} closed`,
      `${lanAddress}:${redis.port} closed`,
      // The package cache is the one host port a job reaches (with DNS).
      '10.89.0.1:3142 open',
      'gateway closed',
      'Origin: Debian',
    ]);
  });

  it('a job cannot reach another running job', async () => {
    const server = await h.launcher.launch({
      jobId: 'egress-server',
      image: 'busybox',
      argv: [
        'sh',
        '-c',
        [
          'nc -ll -p 9000 -e echo hi &',
          'a=$(ip -4 -o addr show eth0 | sed "s/.*inet \\([0-9.]*\\).*/\\1/")',
          // The control: on its own address the listener answers.
          'sleep 0.3; echo "self $(nc -w 2 $a 9000 </dev/null)"',
          'echo "addr $a"',
          'wait',
        ].join('\n'),
      ],
      network: 'egress',
    });
    let text = '';
    server.output.on('data', (c: Buffer) => {
      text += c.toString();
    });
    await eventually(() => /addr \d/.test(text), "the server job's address");
    expect(text).toContain('self hi');
    const addr = text.match(/addr (\S+)/)?.[1] as string;
    const client = await run('egress-client', 'egress', probe([`${addr}:9000`]));
    expect(client.output.trim()).toBe(`${addr}:9000 closed`);
    server.cancel();
    await server.result;
  });

  it('the operator allow list opens a private range, and only that one', async () => {
    const allowed = await createTestHost('amd64', { env: { ARCHWAY_EGRESS_ALLOW: '10.200.0.0/24' } });
    try {
      const r = collect(
        await allowed.launcher.launch({
          jobId: 'egress-allow',
          image: 'busybox',
          argv: ['sh', '-c', probe([`${PRIVATE}:8080`, `${METADATA}:8080`])],
          network: 'egress',
        }),
      );
      expect((await r).output.trim().split('\n')).toEqual([
        `${PRIVATE}:8080 open`,
        `${METADATA}:8080 closed`,
      ]);
    } finally {
      await allowed.launcher.close();
      // Back to the default rules for the tests that follow.
      await createTestHost('amd64');
    }
  });

  it('network none has only loopback and no resolver', async () => {
    const r = await run(
      'none-probe',
      'none',
      `${probe([`${OUTSIDE}:8080`, '10.89.0.1:3142'])}\nls /sys/class/net\ncat /etc/resolv.conf | wc -c`,
    );
    expect(r.output.trim().split('\n')).toEqual([
      `${OUTSIDE}:8080 closed`,
      '10.89.0.1:3142 closed',
      'lo',
      '0',
    ]);
  });

  it('the DNS forwarder and the package cache outlive the runtime that started them, and a new one reuses them', async () => {
    const state = testConfig().ARCHWAY_NET_STATE_DIR;
    const pids = async () => [
      (await readFile(join(state, 'dnsmasq.pid'), 'utf8')).trim(),
      (await readFile(join(state, 'apt-cacher-ng', 'pid'), 'utf8')).trim(),
    ];
    const before = await pids();
    await h.launcher.close();
    h = await createTestHost('amd64');
    expect(await pids()).toEqual(before);
    for (const pid of before) expect(() => process.kill(Number(pid), 0)).not.toThrow();
  });

  it("another installation's runtime (its cache store in another pool) reuses the running package cache instead of restarting it", async () => {
    const state = testConfig().ARCHWAY_NET_STATE_DIR;
    const pidOf = async () => (await readFile(join(state, 'apt-cacher-ng', 'pid'), 'utf8')).trim();
    const before = await pidOf();
    const otherStore = join(testConfig().ARCHWAY_POOL_PATH, 'cache', 'apt-other-installation');
    const other = await createTestHost('amd64', { env: { ARCHWAY_APT_CACHE_DIR: otherStore } });
    try {
      const r = await collect(
        await other.launcher.launch({
          jobId: 'other-install',
          image: 'busybox',
          network: 'egress',
          argv: ['sh', '-c', 'wget -q -O /dev/null http://10.89.0.1:3142/ 2>&1; echo reached $?'],
        }),
      );
      expect(r.output).toMatch(/reached/);
      expect(await pidOf()).toBe(before);
      // Nothing was made for the other store: the running cache keeps its own.
      await expect(stat(otherStore)).rejects.toThrow(/ENOENT/);
    } finally {
      await other.launcher.close();
    }
  });

  it("bounds the package cache's store: a btrfs subvolume with a qgroup limit of ARCHWAY_APT_CACHE_GIB", async () => {
    const state = testConfig().ARCHWAY_NET_STATE_DIR;
    const args = JSON.parse(await readFile(join(state, 'apt-cacher-ng', 'pid.args'), 'utf8')) as string[];
    const dir = args.find((a) => a.startsWith('CacheDir='))?.slice('CacheDir='.length) as string;
    const id = (await runCommand('btrfs', ['subvolume', 'show', dir])).match(/Subvolume ID:\s+(\d+)/)?.[1];
    expect(id).toBeDefined();
    const line = (await runCommand('btrfs', ['qgroup', 'show', '-re', '--raw', dir]))
      .split('\n')
      .find((l) => l.startsWith(`0/${id} `));
    // Qgroupid, referenced, exclusive, max referenced, max exclusive.
    expect(Number(line?.trim().split(/\s+/)[3])).toBe(testConfig().ARCHWAY_APT_CACHE_GIB * 2 ** 30);
  });

  it("removes the container's interface and gives its address back when the job ends", async () => {
    const r = await run('egress-gone', 'egress', "ip route | sed -n 's/^default via \\([0-9.]*\\).*/\\1/p'");
    const gateway = r.output.trim();
    expect(gateway).toMatch(/^10\.89\.\d+\.\d+$/);
    await h.launcher.close();
    await eventually(
      async () => !(await runCommand('ip', ['-o', '-4', 'addr', 'show'])).includes(` ${gateway}/30 `),
      'the host end of the veth to go',
    );
  });
});
