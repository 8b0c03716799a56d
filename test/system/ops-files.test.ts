import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { startRedis, type TestRedis } from '../support/redis-server.ts';
import { eventually, leftovers, TEST_ENV, testConfig } from '../support/test-host.ts';

/**
 * The operations files in ops/ (systemd units, Prometheus rules, the Grafana dashboard) checked
 * by the tools that read them, and every metric they name compared with what a real API and a
 * real worker process export on /metrics.
 */
const ROOT = resolve(import.meta.dirname, '../..');
const BIN = join(ROOT, 'bin/archway');
const SYSTEMD = join(ROOT, 'ops/systemd');
const RULES = join(ROOT, 'ops/prometheus/archway-alerts.yml');
const RULE_TESTS = join(ROOT, 'ops/prometheus/archway-alerts.test.yml');
const DASHBOARD = join(ROOT, 'ops/grafana/archway-dashboard.json');
// Ports of this suite's own range (the machine is shared).
const API_PORT = 26_080;
const WORKER_METRICS_PORT = 26_091;

/** The units with ExecStart pointing at this checkout instead of /opt/archway (verify checks it is executable). */
async function unitsHere(): Promise<{ dir: string; units: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'archway-units-'));
  const units: string[] = [];
  for (const name of await readdir(SYSTEMD)) {
    if (!name.endsWith('.service')) continue;
    const text = (await readFile(join(SYSTEMD, name), 'utf8')).replaceAll('/opt/archway/bin/archway', BIN);
    await writeFile(join(dir, name), text);
    // A template is verified as one of its instances, as systemd would load it.
    const as = name.replace('@.service', '@amd64.service');
    if (as !== name) await writeFile(join(dir, as), text);
    units.push(as);
  }
  return { dir, units };
}

describe('systemd units', () => {
  it('ships the API, worker template and scaler units, each passing systemd-analyze verify with no warning', async () => {
    const { dir, units } = await unitsHere();
    try {
      expect(units.sort()).toEqual([
        'archway-api.service',
        'archway-scaler.service',
        'archway-worker@amd64.service',
      ]);
      for (const unit of units) {
        const r = await execa('systemd-analyze', ['verify', unit], { cwd: dir, reject: false });
        expect({ unit, code: r.exitCode, out: `${r.stdout}${r.stderr}`.trim() }).toEqual({
          unit,
          code: 0,
          out: '',
        });
      }
      // The check fails on a broken unit: an unknown directive and a missing program.
      await writeFile(
        join(dir, 'broken.service'),
        '[Service]\nExecStart=/nonexistent/archway\nKillMod=process\n',
      );
      const bad = await execa('systemd-analyze', ['verify', 'broken.service'], { cwd: dir, reject: false });
      expect(bad.exitCode).not.toBe(0);
      expect(bad.stderr).toMatch(/Unknown key 'KillMod'/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the worker drains on its first SIGTERM and keeps its orphan watchers; API and scaler are sandboxed', async () => {
    const worker = await readFile(join(SYSTEMD, 'archway-worker@.service'), 'utf8');
    const directive = (text: string, key: string) =>
      [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]);
    expect(directive(worker, 'KillMode')).toEqual(['process']);
    expect(directive(worker, 'KillSignal')).toEqual(['SIGTERM']);
    expect(directive(worker, 'Restart')).toEqual(['on-failure']);
    expect(Number(directive(worker, 'TimeoutStopSec')[0])).toBeGreaterThan(3000);
    expect(directive(worker, 'ExecStart')[0]).toMatch(/ worker --arch %i /);
    // No directive that gives the worker a mount namespace or a seccomp filter of its own.
    for (const key of [
      'ProtectSystem',
      'PrivateTmp',
      'SystemCallFilter',
      'NoNewPrivileges',
      'RestrictNamespaces',
    ])
      expect(directive(worker, key)).toEqual([]);
    const { dir } = await unitsHere();
    try {
      // systemd's own exposure score (0 safest, 10 unsafe): the API runs as a locked-down user.
      for (const [unit, threshold] of [
        ['archway-api.service', 2],
        ['archway-scaler.service', 5],
      ] as const) {
        const r = await execa(
          'systemd-analyze',
          ['security', '--offline=yes', `--threshold=${threshold * 10}`, '--no-pager', unit],
          { cwd: dir, reject: false },
        );
        expect({ unit, code: r.exitCode }).toEqual({ unit, code: 0 });
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('Prometheus rules', () => {
  it('pass promtool check rules and promtool test rules', async () => {
    const check = await execa('promtool', ['check', 'rules', RULES], { reject: false });
    expect(check.exitCode, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toMatch(/SUCCESS: \d+ rules found/);
    const test = await execa('promtool', ['test', 'rules', RULE_TESTS], {
      cwd: join(ROOT, 'ops/prometheus'),
      reject: false,
    });
    expect(test.exitCode, test.stdout + test.stderr).toBe(0);
    // Every alert of the rules has a test case.
    const alerts = ruleExprs().map((r) => r.alert);
    const tested =
      (await readFile(RULE_TESTS, 'utf8')).match(/alertname: (\w+)/g)?.map((s) => s.slice(11)) ?? [];
    expect(alerts.filter((a) => !tested.includes(a))).toEqual([]);
  });
});

let rulesDoc: { groups: { rules: { alert: string; expr: string }[] }[] } | undefined;
function ruleExprs(): { alert: string; expr: string }[] {
  return rulesDoc?.groups.flatMap((g) => g.rules) ?? [];
}

/** Metric names an expression uses: archway's own, and Prometheus's `up`. */
function metricNames(expr: string): string[] {
  const names = new Set(expr.match(/\barchway_[a-z0-9_]+\b/g) ?? []);
  if (/\bup\{/.test(expr)) names.add('up');
  return [...names];
}

/** `name -> type` from the `# TYPE` lines of a scrape. */
function families(scrape: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)) out.set(m[1] ?? '', m[2] ?? '');
  return out;
}

/** Whether a query's metric name is exported: a family of its own, or a histogram's series. */
function exported(name: string, fams: Map<string, string>): boolean {
  if (fams.has(name)) return fams.get(name) !== 'histogram';
  const m = name.match(/^(.*)_(bucket|sum|count)$/);
  return m !== null && fams.get(m[1] ?? '') === 'histogram';
}

describe('metric names of the rules and the dashboard, against real scrapes', () => {
  let redis: TestRedis;
  const procs: ChildProcess[] = [];
  const logs: string[] = [];
  const token = randomBytes(16).toString('hex');
  const prefix = `t${randomBytes(4).toString('hex')}`;
  const apiUrl = `http://127.0.0.1:${API_PORT}`;
  const base = () => ({
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    REDIS_URL: redis.url,
    ARCHWAY_REDIS_PREFIX: prefix,
  });
  const start = (args: string[], env: Record<string, string>) => {
    const p = spawn(BIN, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    p.stderr?.on('data', (d: Buffer) => {
      log = (log + d.toString()).slice(-4000);
    });
    p.on('exit', (code) => {
      if (code) process.stderr.write(`${args[0]} exited ${code}: ${log}\n`);
    });
    logs.push('');
    const i = logs.length - 1;
    p.stderr?.on('data', () => {
      logs[i] = `${args[0]}: ${log}`;
    });
    procs.push(p);
    return p;
  };
  const scrape = async (url: string) => {
    const r = await fetch(url);
    expect(r.status).toBe(200);
    return r.text();
  };

  beforeAll(async () => {
    rulesDoc = parseYaml(await readFile(RULES, 'utf8'));
    redis = await startRedis();
    start(['api'], {
      ...base(),
      ARCHWAY_TOKEN: token,
      ARCHWAY_HOST: '127.0.0.1',
      ARCHWAY_PORT: String(API_PORT),
      ARCHWAY_LOG_LEVEL: 'warn',
    });
    const c = testConfig();
    start(['worker', '--arch', 'amd64', '--slots', '1', '--warm', '0'], {
      ...base(),
      ARCHWAY_POOL_PATH: c.ARCHWAY_POOL_PATH,
      ARCHWAY_RUN_DIR: c.ARCHWAY_RUN_DIR,
      ARCHWAY_CGROUP_PARENT: c.ARCHWAY_CGROUP_PARENT,
      ARCHWAY_UID_BASE: String(c.ARCHWAY_UID_BASE),
      ARCHWAY_UID_LEASE_DIR: c.ARCHWAY_UID_LEASE_DIR,
      ARCHWAY_POOL_SIZE_GIB: TEST_ENV.ARCHWAY_POOL_SIZE_GIB,
      ARCHWAY_NODE_ID: `ops-files-${prefix}`,
      ARCHWAY_API_URL: apiUrl,
      ARCHWAY_SYNC_TOKEN: token,
      ARCHWAY_WORKER_METRICS_PORT: String(WORKER_METRICS_PORT),
      ARCHWAY_LOG_LEVEL: 'warn',
    });
    await eventually(
      async () =>
        (
          await fetch(`${apiUrl}/metrics`)
            .then((r) => r.text())
            .catch(() => '')
        ).includes('archway_healthy_nodes{arch="amd64"} 1'),
      'the API to count the worker as healthy',
      60_000,
    );
  }, 120_000);

  afterAll(async () => {
    await Promise.all(
      procs.map(async (p) => {
        if (p.exitCode !== null || p.signalCode !== null) return;
        const exited = once(p, 'exit');
        p.kill('SIGTERM');
        await exited;
      }),
    );
    await redis?.stop();
    expect(await leftovers()).toEqual([]);
  });

  it('every metric a rule or a panel queries is exported by the API or a worker after a job ran', {
    timeout: 90_000,
  }, async () => {
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const res = await fetch(`${apiUrl}/v1/jobs`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ arch: 'amd64', image: 'busybox', script: 'echo metrics' }),
    });
    expect(res.ok, await res.clone().text()).toBe(true);
    const { job } = (await res.json()) as { job: { id: string } };
    let last = '';
    await eventually(
      async () => {
        const r = (await (await fetch(`${apiUrl}/v1/jobs/${job.id}`, { headers: auth })).json()) as {
          state?: string;
        };
        last = JSON.stringify(r).slice(0, 600);
        return r.state === 'passed';
      },
      'the job to pass',
      60_000,
    ).catch((e: Error) => {
      throw new Error(`${e.message}: ${last}\n${logs.join('\n')}`);
    });
    const api = await scrape(`${apiUrl}/metrics`);
    const worker = await scrape(`http://127.0.0.1:${WORKER_METRICS_PORT}/metrics`);
    const fams = new Map([...families(api), ...families(worker), ['up', 'gauge']]);

    const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as {
      panels: { targets?: { expr: string }[] }[];
    };
    const panelExprs = dashboard.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
    expect(panelExprs.length).toBeGreaterThan(10);
    const used = new Set([...ruleExprs().map((r) => r.expr), ...panelExprs].flatMap(metricNames));
    expect(used.size).toBeGreaterThan(15);
    expect([...used].filter((n) => !exported(n, fams))).toEqual([]);
    // And the check has teeth: a name no process exports is caught.
    expect(exported('archway_queue_wait_seconds_bucket', fams)).toBe(true);
    expect(exported('archway_queue_wait_seconds', fams)).toBe(false);
    expect(exported('archway_no_such_metric', fams)).toBe(false);

    // The dashboard's panels cover what the issue lists.
    for (const name of [
      'archway_queue_depth',
      'archway_queue_wait_seconds_bucket',
      'archway_launch_seconds_bucket',
      'archway_job_outcomes_total',
      'archway_nodes',
      'archway_slots',
      'archway_log_bytes_total',
      'archway_image_sync_seconds_bucket',
    ])
      expect(
        panelExprs.some((e) => metricNames(e).includes(name)),
        name,
      ).toBe(true);
    // Samples the alerts read are there with real values.
    expect(api).toMatch(/^archway_redis_ready 1$/m);
    expect(api).toMatch(/^archway_queue_oldest_wait_seconds\{arch="amd64"\} 0$/m);
    expect(worker).toMatch(
      /^archway_queue_wait_seconds_count\{(?=[^}]*arch="amd64")(?=[^}]*node="ops-files-)[^}]*\} 1$/m,
    );
  });

  it('the API still answers /metrics when Redis is away, with archway_redis_ready 0, and 1 once it is back', async () => {
    const restarted = redis.restart({ downMs: 8000 });
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    const text = await scrape(`${apiUrl}/metrics`);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(text).toMatch(/^archway_redis_ready 0$/m);
    expect(text).not.toMatch(/^archway_queue_depth\{/m);
    await restarted;
    await eventually(
      async () => /^archway_redis_ready 1$/m.test(await scrape(`${apiUrl}/metrics`)),
      'the API to read Redis again',
      20_000,
    );
  }, 60_000);
});
