import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createImageStore, ensureImage } from '../../images/index.ts';
import { type ApiProcess, runApi } from '../../src/api/index.ts';
import {
  ARCHES,
  type Arch,
  createLogger,
  type JobRecord,
  poolLayout,
  runCommand,
} from '../../src/core/index.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { type FakeGitHub, startFakeGitHub } from '../support/fake-github.ts';
import { createDeliverer } from '../support/github-deliveries.ts';
import { eventually, leftovers, testConfig } from '../support/test-host.ts';

/**
 * Real builds, as a user of a Travis-style CI runs them: Debian images built for the arches they
 * run on (on a fresh host too), apt through the host's package cache, egress that reaches the
 * mirror and nothing of the host, and a real C project's .travis.yml green on all four arches.
 * Heavy (image builds under qemu-user): the system suite, run by .ci/run after npm test.
 */
const SECRET = `s-${randomBytes(8).toString('hex')}`;
const INSTALLATION = 7;
const token = randomBytes(20).toString('hex');
const config = testConfig();
const logger = createLogger({ name: 'system-test', level: 'warn' });
const store = createImageStore({ poolPath: config.ARCHWAY_POOL_PATH });

let c: TestCluster;
let api: ApiProcess;
let gh: FakeGitHub;
const gitHub = createDeliverer({ apiUrl: () => api.url, secret: SECRET, installation: INSTALLATION });

const image = (name: string, arch: Arch) =>
  ensureImage(name, arch, {
    store,
    cacheDir: poolLayout(config.ARCHWAY_POOL_PATH).cache,
    idBase: config.ARCHWAY_UID_BASE,
    mirror: config.ARCHWAY_DEBIAN_MIRROR,
    logger,
  });

const cli = (args: string[]) =>
  execa('bin/archway', args, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ARCHWAY_URL: api.url, ARCHWAY_TOKEN: token },
    extendEnv: false,
    reject: false,
  });

/** `archway submit` as a user types it; `follow` streams the log and exits with the job's code. */
const submit = (
  o: { arch: string; image: string; network?: 'none' | 'egress'; follow?: boolean },
  script: string,
) =>
  cli([
    'submit',
    '--arch',
    o.arch,
    '--image',
    o.image,
    ...(o.network ? ['--network', o.network] : []),
    ...(o.follow === false ? [] : ['--follow']),
    '--',
    script,
  ]);
const APT_ZLIB = 'apt-get update && apt-get install -y zlib1g-dev && dpkg -s zlib1g-dev | grep Status';

beforeAll(async () => {
  // The images a user's jobs run on: built here when missing, as on a fresh host.
  for (const arch of ['amd64', 's390x'] as const) await image('debian-bookworm', arch);
  for (const arch of ARCHES) await image('debian-bookworm-build', arch);
  gh = await startFakeGitHub();
  c = await startCluster();
  for (const arch of ARCHES) await c.addWorker(arch, { slots: 2 });
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  api = await runApi(
    {
      REDIS_URL: c.redis.url,
      ARCHWAY_REDIS_PREFIX: c.keys.prefix,
      ARCHWAY_TOKEN: token,
      ARCHWAY_PORT: '0',
      ARCHWAY_HOST: '0.0.0.0',
      ARCHWAY_LOG_LEVEL: 'warn',
      ARCHWAY_GITHUB_APP_ID: '77',
      ARCHWAY_GITHUB_PRIVATE_KEY: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
      ARCHWAY_GITHUB_WEBHOOK_SECRET: SECRET,
      ARCHWAY_GITHUB_API_URL: gh.url,
      ARCHWAY_ALLOW_LOOPBACK_SOURCES: '1',
    },
    { handleSignals: false },
  );
});

afterAll(async () => {
  await api?.close();
  await c?.close();
  await gh?.close();
  if (gh)
    await rm(poolLayout(config.ARCHWAY_POOL_PATH).gitMirrorsOf(gh.host), {
      recursive: true,
      force: true,
    });
  expect(await leftovers()).toEqual([]);
});

describe('apt in a job', () => {
  it.each(['s390x', 'amd64'] as const)(
    'an egress job on %s installs a package through the package cache',
    async (arch) => {
      const r = await submit({ arch, image: 'debian-bookworm', network: 'egress' }, APT_ZLIB);
      expect(r.stdout).toContain('Status: install ok installed');
      expect(r.exitCode).toBe(0);
    },
  );

  it('without network it fails at once and says why', async () => {
    const r = await submit({ arch: 's390x', image: 'debian-bookworm', network: 'none' }, APT_ZLIB);
    expect(r.exitCode).not.toBe(0);
    expect(r.stdout).toContain('this job has no network (network: none)');
    const id = r.stdout.match(/job (\S+) on node/)?.[1] as string;
    const job = (await c.queue.get(id)) as JobRecord;
    const ran = Date.parse(job.finishedAt ?? '') - Date.parse(job.startedAt ?? '');
    // apt's own retries would take 7 s and more; without network there is nothing to wait for.
    expect(ran).toBeLessThan(5000);
  });

  it('sudo works as in a Travis job', async () => {
    const r = await submit(
      { arch: 'amd64', image: 'debian-bookworm' },
      "sudo -E sh -c 'id -u' && sudo -H true && sudo sh -c 'echo via-sudo'",
    );
    expect(r.stdout).toMatch(/\n0\nvia-sudo\n/);
    expect(r.stdout).not.toContain('unable to resolve host');
    expect(r.exitCode).toBe(0);
  });
});

describe('egress reaches nothing of the host', () => {
  let server: Server;
  let port: number;
  let lan: string;
  beforeAll(async () => {
    server = createServer((s) => s.end('host\n'));
    await new Promise<void>((r) => server.listen(0, '0.0.0.0', r));
    port = (server.address() as { port: number }).port;
    lan =
      (await runCommand('ip', ['-o', '-4', 'route', 'get', '203.0.113.1'])).match(/ src (\S+)/)?.[1] ?? '';
  });
  afterAll(() => {
    server?.close();
  });

  it('not 127.0.0.1, the LAN address, the gateway, 169.254.169.254, another job, Redis or the API', async () => {
    const other = await submit(
      { arch: 'amd64', image: 'debian-bookworm-build', network: 'egress', follow: false },
      [
        'python3 -m http.server 8000 --bind 0.0.0.0 >/dev/null 2>&1 &',
        'a=$(hostname -I | cut -d" " -f1)',
        // The control: on its own address the listener answers.
        'sleep 2; if bash -c "echo > /dev/tcp/$a/8000"; then echo "addr $a listening"; fi',
        'wait',
      ].join('\n'),
    );
    const otherId = other.stdout.trim();
    let otherAddr = '';
    await eventually(
      async () => {
        otherAddr = (await c.log(otherId)).match(/addr (\d+\.\d+\.\d+\.\d+) listening/)?.[1] ?? '';
        return otherAddr !== '';
      },
      "the other job's listener",
      120_000,
    );
    const apiPort = new URL(api.url).port;
    const targets = [
      `127.0.0.1/${port}`,
      `${lan}/${port}`,
      `GATEWAY/${port}`,
      '169.254.169.254/80',
      `${otherAddr}/8000`,
      `${lan}/${c.redis.port}`,
      `${lan}/${apiPort}`,
    ];
    const script = [
      // A job's gateway is the host end of its /30: its own address minus one.
      // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansions, not a template
      'a=$(hostname -I | cut -d" " -f1); gw=${a%.*}.$(( ${a##*.} - 1 ))',
      ...targets.map(
        (t) =>
          `if timeout 5 bash -c 'echo > /dev/tcp/${t.replace('GATEWAY', '$gw')}' 2>/dev/null; then echo "${t} open"; else echo "${t} closed"; fi`,
      ),
      // The control: the mirror, by name, through NAT.
      "if timeout 10 bash -c 'echo > /dev/tcp/deb.debian.org/80'; then echo 'mirror open'; fi",
    ].join('\n');
    const r = await submit({ arch: 'amd64', image: 'debian-bookworm', network: 'egress' }, script);
    const lines = r.stdout.split('\n').filter((l) => / (open|closed)$/.test(l));
    expect(lines).toEqual([...targets.map((t) => `${t} closed`), 'mirror open']);
    await cli(['cancel', otherId]);
  });
});

describe('a real C project on four arches', () => {
  it('.travis.yml with addons.apt and sudo, built through the GitHub App, passes on each arch', async () => {
    const repo = await gh.createRepo('acme/zlib-user');
    const sha = await repo.commit({
      '.travis.yml': `language: c
arch: [amd64, arm64, ppc64le, s390x]
addons:
  apt:
    packages: [zlib1g-dev]
before_install: sudo apt-get update -qq
script: gcc -o t t.c -lz && ./t
`,
      't.c': `#include <stdio.h>
#include <zlib.h>
int main(void) {
  const unsigned char in[] = "hello hello hello hello";
  unsigned char out[128];
  uLongf n = sizeof out;
  if (compress(out, &n, in, sizeof in) != Z_OK) return 1;
  printf("zlib ok (%lu bytes)\\n", (unsigned long)n);
  return 0;
}
`,
    });
    expect((await gitHub.deliver('push', gitHub.pushPayload(repo, sha))).status).toBe(202);
    const runsOf = () => [...gh.checkRuns.values()].filter((r) => r.head_sha === sha);
    await eventually(
      () => runsOf().filter((r) => r.status === 'completed').length >= 4,
      '4 completed check runs',
      1_500_000,
    );
    const jobs = (await c.queue.list({ label: `sha=${sha}`, limit: 10 })).jobs;
    expect(jobs.map((j) => j.arch).sort()).toEqual([...ARCHES].sort());
    for (const job of jobs) {
      const log = await c.log(job.id);
      expect(log, `${job.arch}: ${log.slice(-3000)}`).toContain('zlib ok');
      expect(job.state, job.arch).toBe('passed');
      expect(job.spec.network).toBe('egress');
    }
    for (const run of runsOf()) expect(run.conclusion).toBe('success');
  });
});
