import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSourceCredentials, type SourceCredential } from '../../queue/index.ts';
import { createKeys, createLogger, type Keys } from '../../src/core/index.ts';
import {
  createSourceFetcher,
  SourceFetchError,
  type SourceFetcher,
  type SourceFetcherOptions,
} from '../../workers/index.ts';
import { type FakeGitHub, type FakeRepo, startFakeGitHub } from '../support/fake-github.ts';
import { startRedis, type TestRedis } from '../support/redis-server.ts';
import { testConfig } from '../support/test-host.ts';

let server: TestRedis;
let redis: Redis;
let keys: Keys;
let gh: FakeGitHub;
let pool: string;
let daemon: ChildProcess;
let daemonPort: number;
let daemonLog = '';
let work: string;
const logger = createLogger({ name: 'sources-test', level: 'silent' });

const GIT_ENV = {
  PATH: '/usr/bin:/bin',
  HOME: '/nonexistent',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 'T',
  GIT_AUTHOR_EMAIL: 't@example.com',
  GIT_COMMITTER_NAME: 'T',
  GIT_COMMITTER_EMAIL: 't@example.com',
};

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** A bare repository served by `git daemon` on the loopback, with one commit; returns its sha. */
async function daemonRepo(name: string): Promise<string> {
  const dir = join(work, 'daemon', `${name}.git`);
  const tree = join(work, `tree-${name}`);
  await mkdir(tree, { recursive: true });
  await execa('git', ['init', '--bare', '--quiet', dir], { env: GIT_ENV, extendEnv: false });
  await execa('git', ['init', '--quiet', tree], { env: GIT_ENV, extendEnv: false });
  await execa('sh', ['-c', 'echo hi > a.txt && git add a.txt && git commit -q -m one'], {
    cwd: tree,
    env: GIT_ENV,
    extendEnv: false,
  });
  await execa('git', ['push', '--quiet', dir, 'HEAD:refs/heads/main'], {
    cwd: tree,
    env: GIT_ENV,
    extendEnv: false,
  });
  return (
    await execa('git', ['rev-parse', 'HEAD'], { cwd: tree, env: GIT_ENV, extendEnv: false })
  ).stdout.trim();
}

function fetcher(o: Partial<SourceFetcherOptions> = {}): SourceFetcher {
  return createSourceFetcher({
    poolPath: pool,
    allowLoopback: true,
    redis,
    keys,
    logger,
    ...o,
  });
}

async function place(f: SourceFetcher, jobId: string, git: string, sha: string) {
  const rootfs = join(work, `rootfs-${jobId}`);
  await mkdir(rootfs, { recursive: true });
  return f.place({
    jobId,
    source: { git, sha },
    rootfs,
    idBase: testConfig().ARCHWAY_UID_BASE,
    signal: new AbortController().signal,
  });
}

async function mintToken(): Promise<string> {
  const res = await fetch(`${gh.url}/app/installations/1/access_tokens`, {
    method: 'POST',
    headers: { authorization: 'Bearer eyfake', 'content-type': 'application/json' },
    body: '{}',
  });
  return ((await res.json()) as { token: string }).token;
}

beforeAll(async () => {
  server = await startRedis();
  redis = new Redis(server.url);
  keys = createKeys(`t${randomBytes(3).toString('hex')}`);
  gh = await startFakeGitHub();
  work = await mkdtemp(join(tmpdir(), 'archway-sources-'));
  // The mirror lives in the pool, as on a worker: a directory of the test's own under it.
  pool = join(testConfig().ARCHWAY_POOL_PATH, 'cache-test', randomBytes(3).toString('hex'));
  await mkdir(join(work, 'daemon'), { recursive: true });
  daemonPort = await freePort();
  daemon = spawn(
    'git',
    [
      'daemon',
      '--reuseaddr',
      '--export-all',
      '--listen=127.0.0.1',
      `--port=${daemonPort}`,
      `--base-path=${join(work, 'daemon')}`,
      '--verbose',
      join(work, 'daemon'),
    ],
    { env: GIT_ENV, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  daemon.stderr?.on('data', (d: Buffer) => {
    daemonLog += d.toString();
  });
  await new Promise((r) => setTimeout(r, 300));
});
afterAll(async () => {
  daemon?.kill();
  await gh?.close();
  redis?.disconnect();
  await server?.stop();
  await rm(work, { recursive: true, force: true });
  await rm(pool, { recursive: true, force: true });
});

describe('source fetch: where it connects', () => {
  it('refuses a host that resolves to a private address at connect time (DNS rebinding), connecting nowhere', async () => {
    const sha = await daemonRepo('rebind');
    const before = daemonLog.length;
    // At submission the name resolved to a public address; now it answers with a private one.
    const f = fetcher({ allowLoopback: false, resolve: async () => [{ address: '10.0.0.7' }] });
    const err = await place(f, 'j-rebind', `git://git.example.org:${daemonPort}/rebind.git`, sha).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SourceFetchError);
    expect((err as SourceFetchError).infra).toBe(false);
    expect((err as Error).message).toMatch(/git\.example\.org' resolves to 10\.0\.0\.7, a private address/);
    // Loopback in IPv4-mapped IPv6 spelling, straight to the daemon: refused before any connection.
    const mapped = await place(
      fetcher({ allowLoopback: false }),
      'j-mapped',
      `git://[::ffff:127.0.0.1]:${daemonPort}/rebind.git`,
      sha,
    ).catch((e: unknown) => e);
    expect((mapped as Error).message).toMatch(/loopback/);
    expect(daemonLog.slice(before)).not.toMatch(/Connection from/);
  });

  it('connects to the address it checked, not to what the name resolves to later', async () => {
    const sha = await daemonRepo('pinned');
    // A name the system's resolver does not know: the fetch works only through the pinned address.
    let calls = 0;
    const f = fetcher({
      resolve: async () => {
        calls++;
        return [{ address: '127.0.0.1' }];
      },
    });
    const placed = await place(f, 'j-pin', `git://git.pinned.invalid:${daemonPort}/pinned.git`, sha);
    expect(placed.sha).toBe(sha);
    expect(calls).toBe(1);
    const tree = join(work, 'rootfs-j-pin', 'root/build/pinned/a.txt');
    expect(await readFile(tree, 'utf8')).toBe('hi\n');
  });

  it('pins https and http fetches too: curl connects to the checked address', async () => {
    const repo = await gh.createRepo('acme/pinned-http', { private: false });
    const sha = await repo.commit({ 'b.txt': 'pinned\n' });
    // ip6-localhost is a loopback name this host's resolver does not know (no /etc/hosts entry):
    // the fetch works only through the address the fetcher resolved and checked.
    const port = new URL(gh.url).port;
    const f = fetcher({ resolve: async () => [{ address: '127.0.0.1' }] });
    const placed = await place(f, 'j-pin-http', `http://ip6-localhost:${port}/acme/pinned-http.git`, sha);
    expect(placed.sha).toBe(sha);
    expect(await readFile(join(work, 'rootfs-j-pin-http', 'root/build/acme/pinned-http/b.txt'), 'utf8')).toBe(
      'pinned\n',
    );
  });

  it('an operator allow-list lets a private git server through, by CIDR or by name', async () => {
    const sha = await daemonRepo('allowed');
    // 127.0.0.1 stands in for the private server; the resolver says where it "is".
    const viaCidr = fetcher({
      allowLoopback: true,
      allow: ['10.9.0.0/16'],
      resolve: async () => [{ address: '10.9.1.1' }],
    });
    const err = await place(viaCidr, 'j-cidr', `git://git.corp.invalid:${daemonPort}/allowed.git`, sha).catch(
      (e: unknown) => e,
    );
    // Allowed, so git tried 10.9.1.1 itself (unreachable here): a connection failure, not a refusal.
    expect((err as Error).message).not.toMatch(/never fetched from/);
    const byName = await place(
      fetcher({
        allowLoopback: true,
        allow: ['*.corp.invalid'],
        resolve: async () => [{ address: '10.9.1.1' }],
      }),
      'j-name',
      `git://git.corp.invalid:${daemonPort}/allowed.git`,
      sha,
    ).catch((e: unknown) => e);
    expect((byName as Error).message).not.toMatch(/never fetched from/);
    const refused = await place(
      fetcher({
        allowLoopback: true,
        allow: ['10.8.0.0/16'],
        resolve: async () => [{ address: '10.9.1.1' }],
      }),
      'j-cidr2',
      `git://git.corp.invalid:${daemonPort}/allowed.git`,
      sha,
    ).catch((e: unknown) => e);
    expect((refused as Error).message).toMatch(/10\.9\.1\.1, a private address.*ARCHWAY_SOURCE_ALLOW/);
  }, 60_000);
});

/** A webhook job's credential, bound to the fake GitHub's host. */
const credential = (token: string): SourceCredential => ({
  host: gh.host,
  token,
  installationId: 1,
  repositoryId: 1,
  since: Date.now(),
});

describe("source fetch: the host's mirror", () => {
  let priv: FakeRepo;
  let pub: FakeRepo;

  it("serves a private repository's commit left in the mirror only to a job that holds a credential for it", async () => {
    priv = await gh.createRepo('acme/secret-sauce', { private: true });
    const sha = await priv.commit({ 'recipe.txt': 'top secret\n' });
    const token = await mintToken();
    // A webhook job: its credential is bound to the host.
    await createSourceCredentials(redis, keys).put(['j-hook'], credential(token), 60_000);
    const f = fetcher();
    const hook = await place(f, 'j-hook', priv.cloneUrl, sha);
    expect(hook.mirrorHit).toBe(false);
    // An API job naming the same URL and sha, with no credential: the mirror has the commit, but it is not served.
    const err = await place(f, 'j-api', priv.cloneUrl, sha).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SourceFetchError);
    expect((err as SourceFetchError).infra).toBe(false);
    expect((err as Error).message).toMatch(/cannot be read without a credential.*not served/);
    await expect(
      readFile(join(work, 'rootfs-j-api', 'root/build/acme/secret-sauce/recipe.txt')),
    ).rejects.toThrow();
    // Another job holding a credential for it gets it from the mirror.
    await createSourceCredentials(redis, keys).put(['j-hook2'], credential(token), 60_000);
    expect((await place(f, 'j-hook2', priv.cloneUrl, sha)).mirrorHit).toBe(true);
  });

  it('serves a public repository from the mirror to anyone, as recorded when it was fetched', async () => {
    pub = await gh.createRepo('acme/open', { private: false });
    const sha = await pub.commit({ README: 'open\n' });
    const f = fetcher();
    expect((await place(f, 'j-pub1', pub.cloneUrl, sha)).mirrorHit).toBe(false);
    const before = gh.gitAuth.length;
    const again = await place(f, 'j-pub2', pub.cloneUrl, sha);
    expect(again.mirrorHit).toBe(true);
    // Recorded public by the anonymous fetch: no request to the server at all.
    expect(gh.gitAuth.length).toBe(before);
  });
});
