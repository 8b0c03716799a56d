/**
 * Job page benchmark: a finished job with a log of SIZE MiB (folds of 1000 lines, colours), its
 * page opened RUNS times in Debian's headless chromium (a fresh tab each), served by `buildApp`
 * listening on loopback with a real redis-server. Measured per run, from the navigation: the
 * first line shown; the whole log processed (#log[data-done]: every line numbered and reachable by
 * its anchor, the part in view parsed); every line parsed into the DOM (#log[data-complete], done
 * while the tab is idle); and the longest task that held the tab's main thread
 * (PerformanceObserver 'longtask': how long the tab could not answer a click).
 *
 *   npx tsx test/bench/page-log.ts   (ARCHWAY_BENCH_LOG_MIB=4 ARCHWAY_BENCH_RUNS=7)
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { createJobQueue, createLogWriter, createNodeRegistry } from '../../queue/index.ts';
import { buildApp, createApiStores } from '../../src/api/index.ts';
import { createPageLinks } from '../../src/api/pages/index.ts';
import { ApiConfig, createKeys, createLogger, JobSpec, parseConfig } from '../../src/core/index.ts';
import { bigLog } from '../support/big-log.ts';
import { launchBrowser } from '../support/browser.ts';
import { startRedis } from '../support/redis-server.ts';
import { machine, ms, summarize } from './stats.ts';

// biome-ignore lint/suspicious/noExplicitAny: the page's globals (the tsconfig has no DOM lib)
declare const document: any;

const MIB = Number(process.env.ARCHWAY_BENCH_LOG_MIB ?? 4);
const RUNS = Number(process.env.ARCHWAY_BENCH_RUNS ?? 7);
const say = (line = '') => process.stderr.write(`${line}\n`);

const server = await startRedis();
const redis = new Redis(server.url);
const keys = createKeys(`bench${randomBytes(3).toString('hex')}`);
const queue = createJobQueue({ redis, keys, logRetentionSeconds: 600 });
const secret = randomBytes(32).toString('hex');
let base = '';
const nodes = createNodeRegistry(redis, keys);
const links = createPageLinks({ secret, publicUrl: () => base, linkSeconds: 3600, sessionSeconds: 3600 });
const app = buildApp(
  parseConfig(ApiConfig, {
    REDIS_URL: server.url,
    ARCHWAY_REDIS_PREFIX: keys.prefix,
    ARCHWAY_TOKEN: `bench-${randomBytes(12).toString('hex')}`,
  }),
  {
    redis,
    queue,
    nodes,
    keys,
    ...createApiStores({ redis, keys, queue, nodes }),
    pageLinks: links,
    logger: createLogger({ name: 'bench', level: 'silent' }),
    createBlockingRedis: () => new Redis(server.url, { maxRetriesPerRequest: null }),
  },
);
base = await app.listen({ host: '127.0.0.1', port: 0 });

const log = bigLog(MIB * 1024 * 1024);
const { job } = await queue.submit(JobSpec.parse({ arch: 'amd64', image: 'busybox', script: 'true' }), {
  clientId: 'bench',
});
await queue.store.transition(job.id, 'running', { newAttempt: true });
const writer = createLogWriter({
  redis,
  keys,
  jobId: job.id,
  limitBytes: 1e9,
  secrets: [],
  onLimit: () => {},
});
await writer.write(Buffer.from(log.text));
await writer.end(600);
await queue.store.transition(job.id, 'passed', { attempt: 1, fields: { exitCode: 0 } });

const browser = await launchBrowser();
const first: number[] = [];
const whole: number[] = [];
const parsed: number[] = [];
const longest: number[] = [];
try {
  for (let r = 0; r < RUNS; r++) {
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    const page = await context.newPage();
    await page.addInitScript(() => {
      const w = globalThis as unknown as { __longest: number };
      w.__longest = 0;
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) w.__longest = Math.max(w.__longest, e.duration);
        // 'longtask' is Chromium's; node's types know only their own entry types.
      }).observe({ type: 'longtask' as 'mark', buffered: true });
    });
    const t0 = performance.now();
    await page.goto(links.jobUrl(job.id), { waitUntil: 'commit' });
    // Polled (not waitForSelector, whose query would run on each of the page's many mutations).
    await page.waitForFunction(() => document.getElementById('L1') !== null, null, {
      polling: 20,
      timeout: 60_000,
    });
    const t1 = performance.now();
    await page.waitForFunction(() => document.getElementById('log')?.dataset.done === 'true', null, {
      polling: 20,
      timeout: 60_000,
    });
    const t2 = performance.now();
    await page.waitForFunction(() => document.getElementById('log')?.dataset.complete === 'true', null, {
      polling: 20,
      timeout: 60_000,
    });
    const t3 = performance.now();
    const lines = Number(await page.locator('#log').getAttribute('data-lines'));
    if (lines !== log.lines) throw new Error(`rendered ${lines} lines, expected ${log.lines}`);
    first.push(t1 - t0);
    whole.push(t2 - t0);
    parsed.push(t3 - t0);
    longest.push(await page.evaluate(() => (globalThis as unknown as { __longest: number }).__longest));
    await context.close();
  }
} finally {
  await browser.close();
  await app.close();
  await queue.close();
  redis.disconnect();
  await server.stop();
}

say(`machine: ${await machine()}`);
say(
  `log: ${(log.text.length / 2 ** 20).toFixed(2)} MiB, ${log.lines} lines, ${Math.ceil(log.lines / 1000)} folds; ${RUNS} runs`,
);
say('figure (ms)            min     p50     p90     max');
for (const [name, xs] of [
  ['first line shown', first],
  ['whole log processed', whole],
  ['every line in the DOM', parsed],
  ['longest main-thread task', longest],
] as const) {
  const s = summarize(xs);
  say(
    `${name.padEnd(24)} ${ms(s.min).padStart(6)} ${ms(s.p50).padStart(7)} ${ms(s.p90).padStart(7)} ${ms(s.max).padStart(7)}`,
  );
}
