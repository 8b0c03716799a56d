import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import type { Command } from 'commander';
import { ensureImage } from '../../../images/index.ts';
import type { Arch } from '../../core/index.ts';
import { createHostContext } from '../host-context.ts';
import { parseArchList } from './images.ts';

const DEMO_SCRIPT = 'echo "hello from $(hostname): $(uname -m)"; id';
const BIN = new URL('../../../bin/archway', import.meta.url).pathname;

/**
 * The whole stack on this host, for development and the quick start: Redis (REDIS_URL, else one
 * answering on 127.0.0.1:6379, else its own with AOF under the pool), the API, one worker per
 * arch, and the busybox image where missing. Runs a first job on every arch through the API,
 * prints the URL and the admin token, and stops everything on Ctrl-C or SIGTERM.
 */
export function registerUp(program: Command, env: Record<string, string | undefined>): void {
  program
    .command('up')
    .description('run the whole stack on this host: Redis, the API, one worker per arch')
    .option('--arches <list>', "comma-separated arches, or 'all'", 'all')
    .option('--slots <n>', 'slots per worker', '2')
    .option('--no-demo', 'do not run the first job on every arch')
    .option('--exit-after-demo', 'stop the stack once the first jobs have run (a smoke test)')
    .action(async (opts: { arches: string; slots: string; demo: boolean; exitAfterDemo?: boolean }) => {
      const arches = parseArchList(opts.arches);
      const ctx = await createHostContext(env, 'up');
      const say = (s: string) => process.stdout.write(`${s}\n`);
      for (const arch of arches) {
        await ensureImage('busybox', arch, {
          store: ctx.store,
          cacheDir: ctx.cacheDir,
          idBase: ctx.config.ARCHWAY_UID_BASE,
          mirror: ctx.config.ARCHWAY_DEBIAN_MIRROR,
          logger: ctx.logger,
          onBuild: () => say(`building the busybox image for ${arch}...`),
        });
      }
      const children: ChildProcess[] = [];
      let ownRedis: ChildProcess | undefined;
      let redisUrl = env.REDIS_URL;
      if (!redisUrl) {
        if (await answers(6379)) {
          redisUrl = 'redis://127.0.0.1:6379';
        } else {
          const dir = join(ctx.config.ARCHWAY_POOL_PATH, 'redis');
          await mkdir(dir, { recursive: true });
          const port = 6379;
          ownRedis = spawn(
            'redis-server',
            [
              '--port',
              String(port),
              '--bind',
              '127.0.0.1',
              '--dir',
              dir,
              '--appendonly',
              'yes',
              '--maxmemory-policy',
              'noeviction',
              '--save',
              '',
            ],
            { stdio: 'ignore' },
          );
          redisUrl = `redis://127.0.0.1:${port}`;
          for (let i = 0; i < 100 && !(await answers(port)); i++) await sleep(50);
          say(`started redis-server on 127.0.0.1:${port} (AOF in ${dir})`);
        }
      }
      const token = env.ARCHWAY_TOKEN ?? randomBytes(24).toString('hex');
      const port = env.ARCHWAY_PORT ?? '8080';
      const url = `http://127.0.0.1:${port}`;
      const childEnv = { ...env, REDIS_URL: redisUrl, ARCHWAY_TOKEN: token, ARCHWAY_PORT: port };
      const start = (args: string[], extra: Record<string, string> = {}) => {
        const c = spawn(BIN, args, {
          env: { ...childEnv, ...extra },
          stdio: ['ignore', 'inherit', 'inherit'],
        });
        children.push(c);
        return c;
      };
      start(['api']);
      const metricsPorts = workerMetricsPorts(arches, Number(port), env.ARCHWAY_WORKER_METRICS_PORT);
      for (const arch of arches) {
        const m = metricsPorts[arch];
        start(
          ['worker', '--arch', arch, '--slots', opts.slots, '--warm', '1'],
          m ? { ARCHWAY_WORKER_METRICS_PORT: String(m) } : {},
        );
      }

      let stopping: Promise<void> | undefined;
      const stopAll = () => {
        stopping ??= (async () => {
          say('\nstopping: workers re-queue running jobs and destroy their containers...');
          // Two SIGTERMs: the first drains, the second ends running jobs (re-queued) instead of waiting.
          for (const c of children) c.kill('SIGTERM');
          await sleep(200);
          for (const c of children) c.kill('SIGTERM');
          await Promise.all(
            children.map((c) => (c.exitCode !== null ? undefined : new Promise((r) => c.once('exit', r)))),
          );
          if (ownRedis) {
            ownRedis.kill('SIGTERM');
            await new Promise((r) => ownRedis?.once('exit', r));
          }
          say('stopped; no container left');
        })();
        return stopping;
      };
      process.once('SIGINT', () => void stopAll());
      process.once('SIGTERM', () => void stopAll());

      await waitForApi(url, arches.length, token);
      say(`\narchway is up: ${url}  (API docs: ${url}/docs)`);
      say(`admin token: ${token}`);
      for (const [arch, m] of Object.entries(metricsPorts))
        say(`  ${arch} worker metrics: http://127.0.0.1:${m}/metrics`);
      say(`  export ARCHWAY_URL=${url} ARCHWAY_TOKEN=${token}`);
      say(`  bin/archway submit --arch arm64 --image busybox --follow -- 'uname -m'`);
      if (opts.demo) {
        const results = await Promise.all(arches.map((arch) => demo(url, token, arch)));
        for (const r of results) {
          for (const line of r.text.trimEnd().split('\n')) say(`[${r.arch}] ${line}`);
        }
        const failed = results.filter((r) => r.state !== 'passed').length;
        say(failed ? `${failed} arch(es) failed` : `a job ran on each of ${results.length} arches`);
        if (failed) process.exitCode = 1;
      }
      if (opts.exitAfterDemo) await stopAll();
      // Otherwise serve until a signal starts stopAll, then wait for it to finish.
      while (!stopping) await sleep(200);
      await stopping;
    });
}

/**
 * The /metrics port of each of `up`'s workers: consecutive ports from `base`
 * (ARCHWAY_WORKER_METRICS_PORT) when set, else from the API's port + 1 (8081, 8082, ...), so a
 * development stack is scraped as production is. None when the API takes any free port (0) and
 * no base is set, or the base is 0.
 */
export function workerMetricsPorts(
  arches: readonly Arch[],
  apiPort: number,
  base: string | undefined,
): Partial<Record<Arch, number>> {
  const first = base !== undefined && base !== '' ? Number(base) : apiPort > 0 ? apiPort + 1 : 0;
  if (!Number.isInteger(first) || first <= 0) return {};
  if (first + arches.length - 1 > 65_535)
    throw new Error(
      `ARCHWAY_WORKER_METRICS_PORT ${first}: ${arches.length} workers need ports up to ${first + arches.length - 1}, above 65535`,
    );
  return Object.fromEntries(arches.map((a, i) => [a, first + i]));
}

async function demo(
  url: string,
  token: string,
  arch: Arch,
): Promise<{ arch: Arch; state: string; text: string }> {
  const auth = { authorization: `Bearer ${token}` };
  const res = await fetch(`${url}/v1/jobs`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ arch, image: 'busybox', script: DEMO_SCRIPT, timeoutSeconds: 120 }),
  });
  if (!res.ok)
    return { arch, state: 'rejected', text: `submission failed: ${res.status} ${await res.text()}` };
  const { job } = (await res.json()) as { job: { id: string } };
  const log = await fetch(`${url}/v1/jobs/${job.id}/log?follow=1`, { headers: auth });
  const text = await log.text();
  const final = (await (await fetch(`${url}/v1/jobs/${job.id}`, { headers: auth })).json()) as {
    job?: { state: string };
    state?: string;
  };
  return { arch, state: final.job?.state ?? final.state ?? 'unknown', text };
}

async function waitForApi(url: string, workers: number, token: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    try {
      const ready = await fetch(`${url}/readyz`);
      const nodes = await fetch(`${url}/v1/nodes`, { headers: { authorization: `Bearer ${token}` } }).catch(
        () => undefined,
      );
      const count = nodes?.ok ? ((await nodes.json()) as { nodes: unknown[] }).nodes.length : workers;
      if (ready.ok && count >= workers) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`the API at ${url} did not become ready`);
}

function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ port, host: '127.0.0.1' });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
