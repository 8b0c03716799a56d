import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Command } from 'commander';
import { z } from 'zod';
import { createProgressPrinter, ensureImage } from '../../../images/index.ts';
import {
  type Arch,
  ArchwayError,
  connectRedis,
  HostConfig,
  parseConfig,
  poolLayout,
  portAnswers,
  redisServerArgs,
  safeRedisUrl,
} from '../../core/index.ts';
import { createHostContext, createHostLauncher, HOST_ENV_HELP } from '../host-context.ts';
import { withLogFormat } from '../log-format.ts';
import { parseArchList } from './images.ts';

const DEMO_SCRIPT = 'echo "hello from $(hostname): $(uname -m)"; id';
const BIN = new URL('../../../bin/archway', import.meta.url).pathname;

/** What `up` reads besides a host's settings. */
export const UpConfig = HostConfig.extend({
  /** An existing Redis to use; unset: one answering on ARCHWAY_UP_REDIS_PORT, else `up` starts its own there. */
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL')
    .optional(),
  /** The port of the Redis `up` uses or starts on 127.0.0.1 when REDIS_URL is unset. Default 6379. */
  ARCHWAY_UP_REDIS_PORT: z.coerce.number().int().min(1).max(65_535).default(6379),
  /** The API's port. Default 8080. */
  ARCHWAY_PORT: z.coerce.number().int().min(1).max(65_535).default(8080),
  /** The admin token; default: a new random one each time. */
  ARCHWAY_TOKEN: z.string().min(16, 'at least 16 characters').optional(),
  /** The key of the pages' signed links; default: the one kept in `<pool>/page-secret` (made on the first `up`). */
  ARCHWAY_PAGE_SECRET: z.string().min(32, 'at least 32 characters').optional(),
});

/** A process `up` started, and what it is for the messages. */
interface Part {
  name: string;
  /** The arch of a worker. */
  arch?: Arch;
  proc: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startPart(name: string, cmd: string, args: string[], o: Parameters<typeof spawn>[2]): Part {
  const proc = spawn(cmd, args, o);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => resolve({ code, signal }));
    proc.once('error', () => resolve({ code: 127, signal: null }));
  });
  return { name, proc, exited };
}

/** Redis's pid file in up's Redis directory. */
const REDIS_PID_FILE = 'redis.pid';

/**
 * The pid of a redis-server an earlier `up` started on `port` and left running (that `up` was
 * killed: SIGKILL, the OOM killer), from the pid file in `dir`; undefined when none, or when the
 * Redis answering there is not that one (someone else's, which `up` uses but never stops).
 */
async function leftRedis(dir: string, port: number): Promise<number | undefined> {
  const pid = Number((await readFile(join(dir, REDIS_PID_FILE), 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmd.startsWith(`redis-server 127.0.0.1:${port}`) ? pid : undefined;
}

/** SIGTERM to `pid`, then waits (up to 60 s) until it has exited. */
async function stopPid(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let i = 0; i < 1200; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await sleep(50);
  }
}

const running = (p: Part) => p.proc.exitCode === null && p.proc.signalCode === null;

/**
 * The whole stack on this host, for development and the quick start: Redis (REDIS_URL, else one
 * answering on 127.0.0.1:ARCHWAY_UP_REDIS_PORT, else its own there with AOF under the pool), the
 * API, one worker per arch, and the busybox image where missing. Runs a first job on every arch,
 * then prints the URL and the admin token last, once everything is ready.
 *
 * Stopping (issue #10): every signal is handled and `up` never exits before its parts; the first
 * SIGINT or SIGTERM stops the API and the workers (running jobs are re-queued, containers
 * destroyed), and the Redis it started stops last: it runs in its own session, so the
 * terminal's Ctrl-C does not reach it while the workers still need it. When a part exits by
 * itself, `up` stops the others and exits 1; the part's own message (on the same terminal) says
 * what failed.
 */
export function registerUp(program: Command, env: Record<string, string | undefined>): void {
  withLogFormat(program.command('up'), env)
    .description('run the whole stack on this host: Redis, the API, one worker per arch')
    .option('--arches <list>', "comma-separated arches, or 'all'", 'all')
    .option('--slots <n>', 'slots per worker', '2')
    .option('--no-demo', 'do not run the first job on every arch')
    .option('--exit-after-demo', 'stop the stack once the first jobs have run (a smoke test)')
    .addHelpText(
      'after',
      `${HOST_ENV_HELP}
  REDIS_URL             an existing Redis (default: 127.0.0.1:ARCHWAY_UP_REDIS_PORT, else its own)
  ARCHWAY_UP_REDIS_PORT the port of that Redis (default 6379)
  ARCHWAY_PORT          the API's port (default 8080)
  ARCHWAY_TOKEN         the admin token (default: a new one each time)
  ARCHWAY_PAGE_SECRET   the key of the pages' signed links (default: kept in <pool>/page-secret)

Example (a second installation beside the first):
  ARCHWAY_POOL_PATH=/var/lib/archway-two ARCHWAY_PORT=8090 ARCHWAY_UP_REDIS_PORT=6380 archway up`,
    )
    .action(async (opts: { arches: string; slots: string; demo: boolean; exitAfterDemo?: boolean }) => {
      const arches = parseArchList(opts.arches);
      const config = parseConfig(UpConfig, env);
      const say = (s: string) => process.stdout.write(`${s}\n`);
      const tell = (s: string) => process.stderr.write(`archway up: ${s}\n`);

      // Redis first: an unreachable REDIS_URL is a clear error now, not a 60 s wait.
      let redisUrl = config.REDIS_URL;
      let ownRedis: Part | undefined;
      // The Redis a killed `up` left (its pid file names it): this `up` stops it as its own.
      let adoptedRedis: number | undefined;
      const redisDir = poolLayout(config.ARCHWAY_POOL_PATH).upRedis;
      if (redisUrl) {
        const r = await connectRedis({ url: redisUrl, name: 'archway-up', logger: { warn: () => {} } });
        r.disconnect();
        tell(`using Redis at ${safeRedisUrl(redisUrl)} (REDIS_URL)`);
      } else if (await portAnswers(config.ARCHWAY_UP_REDIS_PORT)) {
        redisUrl = `redis://127.0.0.1:${config.ARCHWAY_UP_REDIS_PORT}`;
        adoptedRedis = await leftRedis(redisDir, config.ARCHWAY_UP_REDIS_PORT);
        tell(
          adoptedRedis
            ? `using the Redis an earlier up started on 127.0.0.1:${config.ARCHWAY_UP_REDIS_PORT} (pid ${adoptedRedis}; that up was killed): it stops with this one`
            : `using the Redis already answering on 127.0.0.1:${config.ARCHWAY_UP_REDIS_PORT} (ARCHWAY_UP_REDIS_PORT sets another port)`,
        );
      }

      const ctx = await createHostContext(env, 'up');
      // A first build takes a while: its phases, live on a terminal, a line each otherwise.
      const printer = createProgressPrinter({
        tty: process.stderr.isTTY === true,
        write: (text) => process.stderr.write(text),
      });
      for (const arch of arches) {
        await ensureImage('busybox', arch, {
          store: ctx.store,
          cacheDir: ctx.cacheDir,
          idBase: ctx.config.ARCHWAY_UID_BASE,
          mirror: ctx.config.ARCHWAY_DEBIAN_MIRROR,
          logger: ctx.logger,
          onBuild: () => tell(`building the busybox image for ${arch}...`),
          onProgress: printer.update,
        }).finally(() => printer.end());
      }

      if (!redisUrl) {
        const port = config.ARCHWAY_UP_REDIS_PORT;
        const dir = redisDir;
        await mkdir(dir, { recursive: true });
        // Its own session: the terminal's SIGINT goes to up's process group, not to Redis, which
        // must outlive the workers that re-queue their jobs into it.
        ownRedis = startPart(
          'redis-server',
          'redis-server',
          redisServerArgs({
            port,
            dir,
            appendfsync: 'everysec',
            extra: ['--pidfile', join(dir, REDIS_PID_FILE)],
          }),
          { stdio: 'ignore', detached: true },
        );
        redisUrl = `redis://127.0.0.1:${port}`;
        for (let i = 0; i < 100 && running(ownRedis) && !(await portAnswers(port)); i++) await sleep(50);
        if (!running(ownRedis) || !(await portAnswers(port))) {
          ownRedis.proc.kill('SIGKILL');
          throw new ArchwayError(
            'REDIS_START_FAILED',
            `redis-server did not start on 127.0.0.1:${port} (is redis-server installed? is the port taken? ARCHWAY_UP_REDIS_PORT sets another)`,
            { httpStatus: 503, infra: true },
          );
        }
        tell(
          `started redis-server on 127.0.0.1:${port} (AOF in ${dir}; ARCHWAY_UP_REDIS_PORT sets the port)`,
        );
      }

      const token = config.ARCHWAY_TOKEN ?? randomBytes(24).toString('hex');
      const url = `http://127.0.0.1:${config.ARCHWAY_PORT}`;
      // Kept under the pool, so signed page links (check runs' Details) outlive a restart of up.
      const pageSecret = config.ARCHWAY_PAGE_SECRET ?? (await pageSecretIn(config.ARCHWAY_POOL_PATH));
      const childEnv = {
        ...env,
        REDIS_URL: redisUrl,
        ARCHWAY_TOKEN: token,
        ARCHWAY_PORT: String(config.ARCHWAY_PORT),
        ARCHWAY_PAGE_SECRET: pageSecret,
        // A part whose up is killed stops by itself (as on SIGTERM) instead of running on unsupervised.
        ARCHWAY_STOP_WITH_PID: String(process.pid),
      };
      const parts: Part[] = [];
      const start = (name: string, args: string[], arch?: Arch, extra: Record<string, string> = {}) => {
        const p = startPart(name, BIN, args, {
          env: { ...childEnv, ...extra },
          stdio: ['ignore', 'inherit', 'inherit'],
        });
        parts.push(arch ? { ...p, arch } : p);
      };
      start('the API', ['api']);
      // Skipping ports taken on this host (up's own Redis, another installation's API or workers).
      const taken = new Set([config.ARCHWAY_UP_REDIS_PORT, config.ARCHWAY_PORT]);
      const first = workerMetricsPorts(arches, config.ARCHWAY_PORT, env.ARCHWAY_WORKER_METRICS_PORT);
      const from = Math.min(...Object.values(first));
      if (Number.isFinite(from))
        for (let p = from; p < Math.min(from + arches.length + 16, 65_536); p++)
          if (!taken.has(p) && !(await canListen(p))) taken.add(p);
      const metricsPorts = workerMetricsPorts(
        arches,
        config.ARCHWAY_PORT,
        env.ARCHWAY_WORKER_METRICS_PORT,
        (p) => taken.has(p),
      );
      for (const arch of arches) {
        const m = metricsPorts[arch];
        start(
          `the ${arch} worker`,
          ['worker', '--arch', arch, '--slots', opts.slots, '--warm', '1'],
          arch,
          m ? { ARCHWAY_WORKER_METRICS_PORT: String(m) } : {},
        );
      }

      let stopping: Promise<void> | undefined;
      let failed: string | undefined;
      const stopAll = () => {
        stopping ??= (async () => {
          tell('stopping: workers re-queue running jobs and destroy their containers...');
          // Two SIGTERMs: the first drains, the second ends running jobs (re-queued) instead of waiting.
          for (const p of parts.filter(running)) p.proc.kill('SIGTERM');
          await sleep(200);
          for (const p of parts.filter(running)) p.proc.kill('SIGTERM');
          const ends = await Promise.all(parts.map((p) => p.exited));
          // A worker that was killed (SIGKILL, OOM) left its containers: remove them now, not at the next start.
          const killed = parts.filter((p, i) => p.arch && ends[i]?.code !== 0);
          for (const p of killed) {
            if (!p.arch) continue;
            try {
              await (await createHostLauncher(ctx, p.arch)).close();
            } catch (e) {
              tell(`could not remove what ${p.name} left: ${e instanceof Error ? e.message : String(e)}`);
            }
          }
          if (ownRedis && running(ownRedis)) {
            ownRedis.proc.kill('SIGTERM');
            await ownRedis.exited;
          }
          if (adoptedRedis) await stopPid(adoptedRedis);
          tell('stopped; no container left');
        })();
        return stopping;
      };
      // Every signal, not once: a second Ctrl-C must not end `up` before its parts (they would be orphaned).
      let signals = 0;
      const onSignal = () => {
        signals++;
        if (signals > 1) {
          const left = [...parts, ...(ownRedis ? [ownRedis] : [])].filter(running).map((p) => p.name);
          tell(`still stopping (${left.join(', ') || 'nothing'} left); it ends once they have`);
        }
        void stopAll();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      // A part that exits by itself (a bad setting, a lost Redis) stops the stack: its own message is above.
      for (const p of [...parts, ...(ownRedis ? [ownRedis] : [])]) {
        void p.exited.then(({ code, signal }) => {
          if (stopping) return;
          failed = `${p.name} exited (${signal ?? `exit code ${code}`}); see its message above`;
          tell(failed);
          void stopAll();
        });
      }

      await waitForApi(url, arches.length, token, () => stopping !== undefined);
      const ready = !stopping;
      if (ready && opts.demo) {
        const results = await Promise.all(arches.map((arch) => demo(url, token, arch)));
        for (const r of results) {
          for (const line of r.text.trimEnd().split('\n')) say(`[${r.arch}] ${line}`);
        }
        const bad = results.filter((r) => r.state !== 'passed').length;
        say(bad ? `${bad} arch(es) failed` : `a job ran on each of ${results.length} arches`);
        if (bad) process.exitCode = 1;
      }
      if (ready && !stopping) {
        // Last, once every part is ready: what the user needs stays on the screen (issue #13).
        say(
          `\narchway is up: ${url}  (pages: sign in at ${url}/login with the token; API docs: ${url}/docs)`,
        );
        say(`admin token: ${token}`);
        for (const [arch, m] of Object.entries(metricsPorts))
          say(`  ${arch} worker metrics: http://127.0.0.1:${m}/metrics`);
        say(`  export ARCHWAY_URL=${url} ARCHWAY_TOKEN=${token}`);
        say(`  bin/archway submit --arch ${arches[0] ?? 'amd64'} --image busybox --follow -- 'uname -m'`);
        say('Ctrl-C stops everything.');
      }
      if (opts.exitAfterDemo) await stopAll();
      await until(() => stopping !== undefined);
      await stopping;
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (failed) throw new ArchwayError('UP_PART_FAILED', failed, { httpStatus: 503, infra: true });
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
  /** Ports to pass over (taken on this host); the next free one is used instead. */
  skip: (port: number) => boolean = () => false,
): Partial<Record<Arch, number>> {
  const first = base !== undefined && base !== '' ? Number(base) : apiPort > 0 ? apiPort + 1 : 0;
  if (!Number.isInteger(first) || first <= 0) return {};
  const out: Partial<Record<Arch, number>> = {};
  let port = first;
  for (const arch of arches) {
    while (skip(port)) port++;
    if (port > 65_535)
      throw new Error(
        `ARCHWAY_WORKER_METRICS_PORT ${first}: ${arches.length} workers need ports up to ${port}, above 65535`,
      );
    out[arch] = port++;
  }
  return out;
}

/** Whether a listener can bind 127.0.0.1:`port` now (nothing else holds it). */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
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

/**
 * Resolves once the API is ready and `workers` live nodes have joined, or when `stop` says so;
 * never rejects (a part that fails exits, and that stops `up`).
 */
async function waitForApi(url: string, workers: number, token: string, stop: () => boolean): Promise<void> {
  while (!stop()) {
    try {
      const ready = await fetch(`${url}/readyz`);
      const nodes = await fetch(`${url}/v1/nodes`, { headers: { authorization: `Bearer ${token}` } }).catch(
        () => undefined,
      );
      const list = nodes?.ok ? ((await nodes.json()) as { nodes: { lost: boolean }[] }).nodes : [];
      const count = list.filter((n) => !n.lost).length;
      if (ready.ok && count >= workers) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
}

async function until(done: () => boolean): Promise<void> {
  while (!done()) await sleep(100);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The page secret of this host's stack: `<pool>/page-secret` (mode 0600), made on the first `up`.
 * A secret shorter than the API accepts is replaced.
 */
export async function pageSecretIn(poolPath: string): Promise<string> {
  const file = poolLayout(poolPath).upPageSecret;
  const kept = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (kept.length >= 32) return kept;
  const secret = randomBytes(32).toString('hex');
  await mkdir(poolPath, { recursive: true });
  await writeFile(file, `${secret}\n`, { mode: 0o600 });
  return secret;
}
