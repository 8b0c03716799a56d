import { randomBytes } from 'node:crypto';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createBuildStore, createLogWriter, createNodeRegistry } from '../../queue/index.ts';
import { type ApiProcess, buildApp, createApiStores } from '../../src/api/index.ts';
import { createPageLinks } from '../../src/api/pages/index.ts';
import { ApiConfig, createLogger, JobSpec, type JobSpecInput, parseConfig } from '../../src/core/index.ts';
import { bigLog } from '../support/big-log.ts';
import { launchBrowser, screenshot } from '../support/browser.ts';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { eventually, leftovers } from '../support/test-host.ts';
import { testNode } from '../support/test-node.ts';

// What the functions run in the page see (the project's tsconfig has no DOM lib, which would
// change node's stream types for every other file).
// biome-ignore lint/suspicious/noExplicitAny: the browser's globals, untyped here
declare const document: any, window: any, location: any, getComputedStyle: any;
type HTMLDetailsElement = { open: boolean };

// Issue 12: the job page, the dashboard and the pools page, in a real browser (Debian's chromium
// through playwright-core), served by the real API process, with a real worker running real jobs.
const TOKEN = randomBytes(20).toString('hex');
const SECRET = randomBytes(32).toString('hex');
let c: TestCluster;
let api: ApiProcess;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const links = () =>
  createPageLinks({ secret: SECRET, publicUrl: () => api.url, linkSeconds: 3600, sessionSeconds: 3600 });

const busybox = (script: string, extra: Partial<JobSpecInput> = {}) =>
  c.submit({ arch: 'amd64', image: 'busybox', script, ...extra });

/** The log writer a worker uses, for a job whose log the test writes itself: exact bytes, any size. */
const logOf = (jobId: string) =>
  createLogWriter({ redis: c.client, keys: c.keys, jobId, limitBytes: 64e6, secrets: [], onLimit: () => {} });

/**
 * A job whose log the test writes itself, with the log writer a worker uses: exact bytes, any
 * size. On ppc64le, which has no worker here, so that none runs it.
 */
async function writtenJob(text: string, state: 'passed' | 'failed' = 'passed', exitCode = 0) {
  const { job } = await c.queue.submit(JobSpec.parse({ arch: 'ppc64le', image: 'busybox', script: 'true' }), {
    clientId: 'test',
  });
  await c.queue.store.transition(job.id, 'running', { newAttempt: true });
  const log = logOf(job.id);
  await log.write(Buffer.from(text));
  await log.end(600);
  await c.queue.store.transition(job.id, state, { attempt: 1, fields: { exitCode } });
  return job.id;
}

const logText = () => page.locator('#log').textContent();
/** The log is rendered to its end. Polled: a selector wait would query on each of the page's mutations. */
const done = () =>
  page.waitForFunction(() => document.getElementById('log')?.dataset.done === 'true', null, {
    polling: 50,
    timeout: 30_000,
  });

beforeAll(async () => {
  c = await startCluster();
  await c.addWorker('amd64', { slots: 2 });
  api = await c.startApi(TOKEN, { ARCHWAY_PAGE_SECRET: SECRET });
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  await api?.close();
  await c?.close();
  expect(await leftovers()).toEqual([]);
});
beforeEach(async () => {
  context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  page = await context.newPage();
});
afterEach(async () => {
  await context?.close();
});

describe('the job page', () => {
  it('follows a running job live, stops following when the reader scrolls up, ends with its state', async () => {
    const id = await busybox(
      'i=0; while [ $i -lt 80 ]; do echo "early line $i"; i=$((i+1)); done; sleep 4; echo "live line A"; sleep 3; echo "live line B"; sleep 3; i=0; while [ $i -lt 80 ]; do echo "late line $i"; i=$((i+1)); done; sleep 1; exit 3',
    );
    await eventually(async () => (await c.queue.get(id))?.state === 'running', 'the job to start', 30_000);
    await page.goto(links().jobUrl(id));
    await page.waitForFunction(() => document.querySelector('#log')?.textContent?.includes('early line 79'));
    // While it runs: the next line arrives without a reload, and the page is at its end.
    expect(await logText()).not.toContain('live line A');
    await page.waitForFunction(
      () => document.querySelector('#log')?.textContent?.includes('live line A'),
      null,
      {
        timeout: 15_000,
      },
    );
    const atEnd = () =>
      page.evaluate(() => window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 8);
    expect(await atEnd()).toBe(true);
    expect(await page.locator('#follow').getAttribute('aria-pressed')).toBe('true');
    // Its duration counts while it runs.
    const before = await page.locator('#duration').textContent();
    await page.waitForFunction((b) => document.getElementById('duration')?.textContent !== b, before, {
      timeout: 5000,
    });
    await screenshot(page, 'job-live');
    // The reader scrolls up: later lines must not pull the page down again.
    await page.mouse.move(600, 400);
    await page.mouse.wheel(0, -600);
    await page.waitForFunction(
      () => document.getElementById('follow')?.getAttribute('aria-pressed') === 'false',
    );
    const scrolled = await page.evaluate(() => window.scrollY);
    await page.waitForFunction(
      () => document.querySelector('#log')?.textContent?.includes('late line 79'),
      null,
      {
        timeout: 20_000,
      },
    );
    expect(await page.evaluate(() => window.scrollY)).toBe(scrolled);
    expect(await atEnd()).toBe(false);
    // The end: the job's state and exit code, and the header's state too.
    await done();
    expect(await page.locator('#log-end').textContent()).toBe('Job failed, exit code 3');
    expect(await page.locator('#state').textContent()).toBe('failed');
    expect((await c.waitFinal(id)).state).toBe('failed');
  });

  it('a queued job says where it stands in its queue, keeps it current, and drops it once its log starts', async () => {
    // On ppc64le, which has no node here: they stay queued until the test moves them on.
    const submit = async () =>
      (
        await c.queue.submit(JobSpec.parse({ arch: 'ppc64le', image: 'busybox', script: 'true' }), {
          clientId: 'test',
        })
      ).job;
    const ahead = await submit();
    const job = await submit();
    await page.goto(links().jobUrl(job.id));
    expect(await page.locator('#state').textContent()).toBe('queued');
    expect(await page.locator('#place').textContent()).toMatch(
      /^2nd of 2 in the ppc64le queue, wait unknown \(.+\); as of \d\d:\d\d:\d\d UTC$/,
    );
    await screenshot(page, 'job-queued');
    // The job ahead of it goes: the page moves it up by itself, without a reload.
    await c.queue.cancel(ahead.id);
    await page.waitForFunction(
      () => document.getElementById('place')?.textContent?.startsWith('1st of 1 '),
      null,
      {
        timeout: 10_000,
      },
    );
    // It starts: its first log line reaches the page, and where it stood in line is gone.
    await c.queue.store.transition(job.id, 'running', { newAttempt: true });
    const log = logOf(job.id);
    await log.write(Buffer.from('the job started\n'));
    await page.waitForFunction(() =>
      document.querySelector('#log')?.textContent?.includes('the job started'),
    );
    expect(await page.locator('#place').isHidden()).toBe(true);
    // Asked again now, the page's queue line says the job is in no line any more.
    expect(
      await page.evaluate(
        async () => (await fetch(location.href, { headers: { 'x-archway-fragment': 'place' } })).status,
      ),
    ).toBe(204);
    await log.end(600);
    await c.queue.store.transition(job.id, 'passed', { attempt: 1, fields: { exitCode: 0 } });
  });

  it("a line a job prints to freeze its readers' page (the start of Travis's failure words, 80,000 times: 1 MB) renders at once", async () => {
    // `The command ".*" exited with` took time quadratic in such a line: ~70 s for this one in
    // node, ~18 min for a 4 MiB log of it, with the tab frozen; one pass takes milliseconds.
    const id = await writtenJob(
      `travis_fold:start:hostile\n${'The command "'.repeat(80_000)}\nThe command "make" exited with 2.\ntravis_fold:end:hostile\nafter it\n`,
    );
    await page.goto(links().jobUrl(id));
    await page.waitForFunction(() => document.getElementById('log')?.dataset.done === 'true', null, {
      polling: 50,
      timeout: 10_000,
    });
    expect(await logText()).toContain('after it');
    // Travis's failure words still count: the section they are in is marked failed, and open.
    expect(await page.locator('details.failed').count()).toBe(1);
    expect(await page.locator('details.failed').getAttribute('open')).not.toBeNull();
  });

  it('shows the reason a job ended, when it did not simply exit', async () => {
    const id = await busybox('echo waiting for a cancel; sleep 60');
    await eventually(async () => (await c.queue.get(id))?.state === 'running', 'the job to start', 30_000);
    await page.goto(links().jobUrl(id));
    await page.waitForFunction(() =>
      document.querySelector('#log')?.textContent?.includes('waiting for a cancel'),
    );
    const r = await fetch(`${api.url}/v1/jobs/${id}/cancel`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(r.status).toBe(202);
    await done();
    expect(await page.locator('#log-end').textContent()).toMatch(
      /^Job canceled(, exit code \d+)?, reason: canceled$/,
    );
    expect(await page.locator('#state').textContent()).toBe('canceled');
    await screenshot(page, 'job-canceled');
  });

  it('renders ANSI colours as styles, folds collapsed with their durations, opened by a click, a failing one open', async () => {
    // The markers as a real job prints them (archway's own functions print the same; Travis ends its with \r).
    const id = await busybox(
      [
        "printf 'travis_fold:start:install\\ntravis_time:start:0001\\n'",
        "printf '\\033[33;1m$ make deps\\033[0m\\n'",
        'echo fetched deps',
        "printf 'travis_time:end:0001:start=1,finish=1500000001,duration=1500000000\\ntravis_fold:end:install\\n'",
        "printf 'travis_fold:start:script\\r\\033[0Ktravis_time:start:0002\\r\\033[0K'",
        "printf '\\033[31mred text\\033[0m plain \\033[38;2;10;200;30mtruecolour\\033[0m \\033[1mbold\\033[0m\\n'",
        'printf \'\\nThe command "false" exited with 1.\\n\'',
        "printf 'travis_time:end:0002:start=1,finish=65000000001,duration=65000000000\\r\\033[0Ktravis_fold:end:script\\r\\033[0K'",
        'echo after the folds',
        'exit 1',
      ].join('\n'),
    );
    expect((await c.waitFinal(id)).state).toBe('failed');
    await page.goto(links().jobUrl(id));
    await done();
    const text = await page.locator('#log').textContent();
    // No raw escape, no marker line.
    expect(text).not.toContain(String.fromCharCode(27));
    expect(text).not.toMatch(/\[3[0-9]m|\[0m|\[0K/);
    expect(text).not.toContain('travis_fold');
    expect(text).not.toContain('travis_time');
    const red = page.locator('#log .l > span.ansi-red-fg', { hasText: 'red text' });
    expect(await red.evaluate((e) => getComputedStyle(e).color)).toBe('rgb(239, 83, 80)');
    const tc = page.locator('#log .l > span', { hasText: 'truecolour' });
    expect(await tc.evaluate((e) => getComputedStyle(e).color)).toBe('rgb(10, 200, 30)');
    const bold = page.locator('#log .l > span', { hasText: /^bold$/ });
    expect(await bold.evaluate((e) => getComputedStyle(e).fontWeight)).toBe('700');

    const install = page.locator('details.fold[data-fold="install"]');
    expect(await install.evaluate((e) => (e as HTMLDetailsElement).open)).toBe(false);
    expect(await install.locator('summary .dur').textContent()).toBe('1.50s');
    expect(await install.locator('summary .fhead').textContent()).toBe('$ make deps');
    expect(await page.getByText('fetched deps').isVisible()).toBe(false);
    // The script fold failed: open, and marked.
    const script = page.locator('details.fold[data-fold="script"]');
    expect(await script.evaluate((e) => (e as HTMLDetailsElement).open)).toBe(true);
    expect(await script.getAttribute('class')).toContain('failed');
    expect(await script.locator('summary .dur').textContent()).toBe('1m 05s');
    await screenshot(page, 'job-folds', true);
    await install.locator('summary').click();
    expect(await page.getByText('fetched deps').isVisible()).toBe(true);
    expect(await install.evaluate((e) => (e as HTMLDetailsElement).open)).toBe(true);
    await screenshot(page, 'job-fold-opened', true);
  });

  it('a line anchor scrolls to its line (inside a closed fold) and highlights it', async () => {
    const lines = ['travis_fold:start:long', 'travis_time:start:1'];
    for (let i = 1; i <= 600; i++) lines.push(`numbered line ${i}`);
    lines.push('travis_time:end:1:start=1,finish=2,duration=2000000', 'travis_fold:end:long');
    for (let i = 601; i <= 700; i++) lines.push(`numbered line ${i}`);
    const id = await writtenJob(`${lines.join('\n')}\n`);
    // Marker lines are not shown nor numbered: line N is "numbered line N".
    await page.goto(`${links().jobUrl(id)}#L450`);
    await done();
    const line = page.locator('#L450');
    await page.waitForFunction(() => document.getElementById('L450')?.classList.contains('hl'));
    expect(await line.textContent()).toContain('numbered line 450');
    expect(
      await page.locator('details.fold[data-fold="long"]').evaluate((e) => (e as HTMLDetailsElement).open),
    ).toBe(true);
    const inView = (sel: string) =>
      page.evaluate((s) => {
        const r = document.querySelector(s)?.getBoundingClientRect();
        return !!r && r.top >= 0 && r.bottom <= window.innerHeight;
      }, sel);
    expect(await inView('#L450')).toBe(true);
    await screenshot(page, 'job-anchor');
    // A click on another line's number: the URL names it, it is shown and highlighted, the first is not.
    await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
    await page.locator('#L690 > a').click();
    await page.waitForFunction(() => document.getElementById('L690')?.classList.contains('hl'));
    expect(new URL(page.url()).hash).toBe('#L690');
    expect(await page.locator('#L450').getAttribute('class')).not.toContain('hl');
    expect(await inView('#L690')).toBe(true);
  });

  it('escapes hostile log content (nothing runs) and shows secrets masked', async () => {
    const secret = `s3cr3t-${randomBytes(6).toString('hex')}`;
    const id = await busybox(
      [
        'echo "the token is $API_TOKEN"',
        'echo "<script>window.__pwned = 1</script>"',
        'echo \'</pre></div><img src=x onerror="window.__pwned = 2">\'',
        "printf 'travis_fold:start:<img/src=x/onerror=window.__pwned=3//>\\n'",
        "printf '\\033]8;;javascript:window.__pwned=4\\033\\\\click me\\033]8;;\\033\\\\\\n'",
        "printf 'travis_fold:end:<img/src=x/onerror=window.__pwned=3//>\\n'",
      ].join('\n'),
      { secrets: { API_TOKEN: secret }, labels: { repo: '<b onmouseover=alert(1)>evil</b>' } },
    );
    expect((await c.waitFinal(id)).state).toBe('passed');
    const messages: string[] = [];
    page.on('console', (m) => messages.push(m.text()));
    const res = await page.goto(links().jobUrl(id));
    await done();
    const body = (await res?.text()) ?? '';
    const text = await logText();
    expect(text).toContain('the token is [secure]');
    expect(text).toContain('<script>window.__pwned = 1</script>');
    expect(text).toContain('</pre></div><img src=x onerror="window.__pwned = 2">');
    expect(await page.locator('details.fold summary .fname').textContent()).toBe(
      '<img/src=x/onerror=window.__pwned=3//>',
    );
    // Nothing became markup: no script or image in the log, no link (OSC 8 links are not rendered).
    expect(await page.locator('#log script, #log img, #log a[href^="javascript"]').count()).toBe(0);
    expect(await page.evaluate(() => (window as { __pwned?: number }).__pwned)).toBeUndefined();
    expect(await page.getByText('evil').count()).toBe(1);
    expect(await page.locator('b').count()).toBe(0);
    // The secret is nowhere: not in the page, nor its log events, nor its raw log.
    expect(body).not.toContain(secret);
    expect(await page.content()).not.toContain(secret);
    const raw = await page.evaluate(async () =>
      (await fetch(document.getElementById('raw')?.getAttribute('href') ?? '')).text(),
    );
    expect(raw).toContain('the token is [secure]');
    expect(raw).not.toContain(secret);
    expect(messages.join('\n')).not.toContain(secret);
    await screenshot(page, 'job-hostile');
  });

  it('opens a 4 MiB log fully (chunked rendering), with every line numbered', async () => {
    const log = bigLog(4 * 1024 * 1024);
    expect(log.text.length).toBeGreaterThan(4 * 1024 * 1024 - 300);
    const id = await writtenJob(log.text);
    await page.goto(links().jobUrl(id));
    await done();
    const count = Number(await page.locator('#log').getAttribute('data-lines'));
    expect(count).toBe(log.lines);
    expect(await page.locator('details.fold').count()).toBe(Math.ceil(log.lines / 1000));
    // The tab answers at once, and an anchor deep in the log (not parsed yet) works.
    await page.evaluate((n) => {
      location.hash = `#L${n}`;
    }, count - 5);
    await page.waitForFunction((n) => document.getElementById(`L${n}`)?.classList.contains('hl'), count - 5);
    expect(await page.locator(`#L${count - 5}`).textContent()).toContain(`line ${count - 5} `);
    // Then, idle, every line reaches the DOM (find-in-page sees them all).
    await page.waitForFunction(() => document.getElementById('log')?.dataset.complete === 'true', null, {
      polling: 100,
      timeout: 30_000,
    });
    expect(await page.locator('#log .l').count()).toBe(count);
    await screenshot(page, 'job-4mib');
  });
});

describe('access to the pages', () => {
  it('an unsigned, tampered, expired or borrowed link is refused with a page that says so', async () => {
    const id = await writtenJob('hidden log text\n');
    const other = await writtenJob('other\n');
    const url = new URL(links().jobUrl(id));
    const tampered = new URL(url);
    tampered.searchParams.set('exp', String(Number(url.searchParams.get('exp')) + 3600));
    const expired = createPageLinks({
      secret: SECRET,
      publicUrl: () => api.url,
      linkSeconds: 60,
      sessionSeconds: 60,
      now: () => Date.now() - 3600_000,
    }).jobUrl(id);
    const borrowed = `${api.url}/jobs/${id}?${links().query('job', other)}`;
    const asBuild = `${api.url}/jobs/${id}?${links().query('build', id)}`;
    const cases: [string, string, string][] = [
      ['unsigned', `${api.url}/jobs/${id}`, 'needs a signed link or a login'],
      ['tampered', tampered.href, 'is not valid'],
      ['expired', expired, 'has expired'],
      ['borrowed', borrowed, 'is not valid'],
      ['as-build', asBuild, 'is not valid'],
    ];
    for (const [name, href, words] of cases) {
      const res = await page.goto(href);
      expect(res?.status(), name).toBe(403);
      expect(await page.locator('main').textContent(), name).toContain(words);
      expect(await page.content(), name).not.toContain('hidden log text');
      await screenshot(page, `refused-${name}`);
    }
    // The log behind the page is refused the same way, as events and as text.
    for (const path of ['events', 'raw']) {
      const r = await fetch(`${api.url}/jobs/${id}/${path}?${tampered.searchParams}`);
      expect(r.status).toBe(403);
      expect(await r.text()).not.toContain('hidden log text');
    }
    // And the signed link itself opens it.
    const ok = await fetch(`${url.href.replace(`/jobs/${id}?`, `/jobs/${id}/raw?`)}`);
    expect(await ok.text()).toBe('hidden log text\n');
  });

  it('sends a Content-Security-Policy and no-referrer with every page', async () => {
    const id = await writtenJob('x\n');
    for (const href of [links().jobUrl(id), `${api.url}/login`, `${api.url}/jobs/${id}`]) {
      const r = await fetch(href);
      const csp = r.headers.get('content-security-policy') ?? '';
      expect(csp).toContain("script-src 'self'");
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).not.toMatch(/script-src[^;]*unsafe/);
      expect(r.headers.get('referrer-policy')).toBe('no-referrer');
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    }
    // Nothing comes from another origin: every script and style sheet of the page is this server's.
    const origins = new Set<string>();
    page.on('request', (req) => origins.add(new URL(req.url()).origin));
    await page.goto(links().jobUrl(id));
    await done();
    expect([...origins]).toEqual([new URL(api.url).origin]);
    await screenshot(page, 'job-csp');
  });

  it('a token login opens the dashboard with an HttpOnly SameSite cookie; a bad token and a foreign next are refused', async () => {
    const passed = await writtenJob('ok\n');
    const failed = await writtenJob('no\n', 'failed', 1);
    await page.goto(`${api.url}/`);
    expect(new URL(page.url()).pathname).toBe('/login');
    await page.fill('input[name=token]', 'not-a-valid-token-at-all');
    await page.click('button[type=submit]');
    expect(await page.locator('.error').textContent()).toContain('not valid');
    expect((await context.cookies()).length).toBe(0);
    await page.fill('input[name=token]', TOKEN);
    await page.click('main button[type=submit]');
    await page.waitForURL(`${api.url}/`);
    const [cookie] = await context.cookies();
    expect(cookie).toMatchObject({ name: 'archway_session', httpOnly: true, sameSite: 'Lax', secure: false });
    expect(cookie?.value).not.toContain(TOKEN);
    expect(await page.locator(`tr.job-row a[href="/jobs/${passed}"]`).count()).toBe(1);
    expect(await page.locator(`tr.job-row a[href="/jobs/${failed}"]`).count()).toBe(1);
    await screenshot(page, 'dashboard', true);
    // Filters by state.
    await page.selectOption('select[name=state]', 'failed');
    await page.click('form.filters button');
    await page.waitForURL(/state=failed/);
    expect(await page.locator(`tr.job-row a[href="/jobs/${failed}"]`).count()).toBe(1);
    expect(await page.locator(`tr.job-row a[href="/jobs/${passed}"]`).count()).toBe(0);
    expect(await page.locator('tr.job-row[data-state]:not([data-state=failed])').count()).toBe(0);
    // And by arch (aliases too): the written jobs are ppc64le, the real ones amd64.
    await page.goto(`${api.url}/?arch=ppc64el`);
    expect(await page.locator('tr.job-row').count()).toBeGreaterThan(0);
    expect(await page.locator('tr.job-row:not([data-arch=ppc64le])').count()).toBe(0);
    await page.goto(`${api.url}/?arch=amd64`);
    expect(await page.locator('tr.job-row[data-arch=ppc64le]').count()).toBe(0);
    // Updated live: a job submitted now appears without a reload.
    await page.goto(`${api.url}/`);
    const fresh = await writtenJob('fresh\n');
    await page.waitForSelector(`tr.job-row a[href="/jobs/${fresh}"]`, { timeout: 10_000 });
    // Logged in, a job page opens without a signed link.
    await page.click(`tr.job-row a[href="/jobs/${fresh}"]`);
    await done();
    expect(await logText()).toContain('fresh');
    // A login never sends the reader to another site.
    const r = await page.request.post(`${api.url}/login`, {
      form: { token: TOKEN, next: '//evil.example/x' },
      maxRedirects: 0,
    });
    expect(r.status()).toBe(303);
    expect(r.headers().location).toBe('/');
    // A form that another site makes the reader's browser post (logging them in as the attacker's
    // token, or out) is refused, by its Origin or by Sec-Fetch-Site, and sets no cookie.
    for (const headers of [
      { origin: 'https://evil.example' },
      { origin: 'null', 'sec-fetch-site': 'cross-site' },
      { origin: api.url, 'sec-fetch-site': 'same-site' },
    ])
      for (const path of ['/login', '/logout']) {
        const forged = await fetch(`${api.url}${path}`, {
          method: 'POST',
          headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ token: TOKEN, next: '/' }).toString(),
          redirect: 'manual',
        });
        expect(forged.status, `${path} ${JSON.stringify(headers)}`).toBe(403);
        expect(forged.headers.get('set-cookie')).toBeNull();
        expect(await forged.text()).toContain('sent from another site');
      }
    // Signing out ends it.
    await page.goto(`${api.url}/`);
    await page.click('header form button');
    await page.waitForURL(/\/login/);
    const again = await page.goto(`${api.url}/jobs/${fresh}`);
    expect(again?.status()).toBe(403);
  });

  it('GET /v1/jobs/:id carries pageUrl, the signed link that opens the page', async () => {
    const id = await writtenJob('via pageUrl\n');
    const r = await fetch(`${api.url}/v1/jobs/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const job = (await r.json()) as { pageUrl: string };
    expect(job.pageUrl).toMatch(new RegExp(`^${api.url}/jobs/${id}\\?exp=\\d+&sig=[\\w-]{43}$`));
    await page.goto(job.pageUrl);
    await done();
    expect(await logText()).toContain('via pageUrl');
    await screenshot(page, 'job-page-url');
  });

  it('ARCHWAY_PUBLIC_LOGS=true opens job pages without a link, except those of private repositories; behind TLS the cookie is Secure; bad input is refused', async () => {
    const app = buildApp(
      parseConfig(ApiConfig, {
        REDIS_URL: c.redis.url,
        ARCHWAY_REDIS_PREFIX: c.keys.prefix,
        ARCHWAY_TOKEN: TOKEN,
        ARCHWAY_PUBLIC_LOGS: 'true',
        ARCHWAY_PUBLIC_URL: 'https://ci.example',
      }),
      {
        redis: c.client,
        queue: c.queue,
        nodes: createNodeRegistry(c.client, c.keys),
        ...createApiStores({
          redis: c.client,
          keys: c.keys,
          queue: c.queue,
          nodes: createNodeRegistry(c.client, c.keys),
        }),
        keys: c.keys,
        ...createApiStores({
          redis: c.client,
          keys: c.keys,
          queue: c.queue,
          nodes: createNodeRegistry(c.client, c.keys),
        }),
        logger: createLogger({ name: 'pages-test', level: 'silent' }),
        createBlockingRedis: () => c.client.duplicate(),
      },
    );
    try {
      const open = await writtenJob('open source\n');
      const { job: hidden } = await c.queue.submit(
        JobSpec.parse({ arch: 'amd64', image: 'busybox', script: 'true', labels: { visibility: 'private' } }),
        { clientId: 'test' },
      );
      expect((await app.inject({ url: `/jobs/${open}` })).statusCode).toBe(200);
      expect((await app.inject({ url: `/jobs/${open}/raw` })).body).toBe('open source\n');
      expect((await app.inject({ url: `/jobs/${hidden.id}` })).statusCode).toBe(403);
      // The dashboard still needs a login.
      expect((await app.inject({ url: '/' })).statusCode).toBe(303);
      // Behind TLS (an https public URL) the login cookie is Secure.
      const login = await app.inject({
        method: 'POST',
        url: '/login',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        payload: `token=${TOKEN}&next=/pools`,
      });
      expect(login.statusCode).toBe(303);
      expect(login.headers.location).toBe('/pools');
      expect(String(login.headers['set-cookie'])).toMatch(
        /^archway_session=[\w-]+\.\d+\.[\w-]{43}; Max-Age=43200; Path=\/; HttpOnly; Secure; SameSite=Lax$/,
      );
      // Bad input: a clear page with its status, and nothing changes.
      const big = await app.inject({
        method: 'POST',
        url: '/login',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        payload: `token=${'a'.repeat(10_000)}`,
      });
      expect(big.statusCode).toBe(413);
      expect(big.headers['set-cookie']).toBeUndefined();
      const badId = await app.inject({ url: '/jobs/..%2F..%2Fetc' });
      expect(badId.statusCode).toBe(400);
      expect(badId.headers['content-type']).toContain('text/html');
      expect(badId.body).toContain('Bad request');
      const badExp = await app.inject({ url: `/jobs/${open}?exp=99999999999999999999&sig=x` });
      expect(badExp.statusCode).toBe(403);
      expect((await app.inject({ url: '/assets/..%2Fpage-routes.ts' })).statusCode).toBe(404);
    } finally {
      await app.close();
    }
  });
});

describe('the pools page', () => {
  it('shows each arch with its nodes, a drained node as draining, queue depth and images', async () => {
    const nodes = createNodeRegistry(c.client, c.keys);
    const id = `pages-arm64-${randomBytes(3).toString('hex')}`;
    await nodes.register(testNode(id, 'arm64', { busy: 1 }));
    await nodes.setImages(id, [
      { name: 'busybox', arch: 'arm64', digest: `sha256:${'ab'.repeat(32)}`, current: true },
    ]);
    // Drained through the API, as an operator does.
    const drain = await fetch(`${api.url}/v1/nodes/${id}/drain`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(drain.status).toBe(202);
    await c.queue.submit(JobSpec.parse({ arch: 's390x', image: 'busybox', script: 'true' }), {
      clientId: 't',
    });
    // A node that went silent a minute ago: lost (still listed, within the lost-node retention).
    const lostId = `pages-ppc64le-${randomBytes(3).toString('hex')}`;
    await nodes.register(testNode(lostId, 'ppc64le'));
    await c.client.hset(c.keys.node(lostId), 'lastSeen', String(Date.now() - 60_000));

    await page.goto(`${api.url}/login?next=/pools`);
    await page.fill('input[name=token]', TOKEN);
    await page.click('main button[type=submit]');
    await page.waitForURL(`${api.url}/pools`);
    const row = page.locator(`tr.node[data-node="${id}"]`);
    expect(await row.getAttribute('data-state')).toBe('draining');
    expect(await row.locator('.state').textContent()).toBe('draining');
    expect(await row.textContent()).toContain('1 / 2');
    expect(await row.textContent()).toContain('emulated on amd64');
    expect(await row.textContent()).toContain(`busybox@${'ab'.repeat(6)}`);
    expect(await page.locator('#pool-s390x .queue-depth').textContent()).toBe('1 waiting');
    // The amd64 worker of this test is there, active.
    expect(await page.locator('#pool-amd64 tr.node[data-state=active]').count()).toBe(1);
    const lost = page.locator(`tr.node[data-node="${lostId}"]`);
    expect(await lost.getAttribute('data-state')).toBe('lost');
    expect(await lost.locator('.state').textContent()).toBe('lost');
    expect(await page.locator('#pool-ppc64le .facts dd').first().textContent()).toMatch(/^0 healthy of 1 /);
    await screenshot(page, 'pools', true);
    await nodes.deregister(id);
    await nodes.deregister(lostId);
  });
});

describe('the build page', () => {
  it("shows a build's jobs by stage with their states, live, and signs the links to its jobs", async () => {
    const first = await writtenJob('stage one ran\n');
    const second = await writtenJob('stage two ran\n', 'failed', 2);
    const store = createBuildStore(c.client, c.keys, {
      job: z.record(z.string(), z.unknown()),
      event: z.unknown(),
    });
    const id = `b${randomBytes(6).toString('hex')}`;
    const slot = (n: number, stageIndex: number, jobId: string, name: string) => ({
      n,
      name,
      stageIndex,
      allowFailure: n === 3,
      gen: 0,
      jobId,
      checkKey: `${id}-${n}-0`,
      state: 'queued' as const,
      job: { arch: 'ppc64le', number: `7.${n}` },
    });
    await store.create({
      id,
      number: 7,
      repo: 'acme/<i>widget</i>',
      repoId: 1,
      installationId: 1,
      sha: 'a'.repeat(40),
      cloneUrl: 'https://github.com/acme/widget.git',
      private: false,
      ref: 'refs/heads/main',
      credential: false,
      autoCancel: true,
      configPath: '.travis.yml',
      stages: ['build', 'deploy'],
      currentStage: 1,
      state: 'running',
      notes: '',
      createdAt: new Date().toISOString(),
      origin: 'github',
      fastFinish: false,
      event: {},
      slots: [slot(1, 0, first, 'compile'), slot(2, 1, second, 'ship'), slot(3, 1, 'j-not-started', 'docs')],
    });
    const res = await page.goto(links().buildUrl(id));
    expect(res?.status()).toBe(200);
    expect(await page.locator('h1').textContent()).toContain('Build #7');
    expect(await page.locator('section.stage').evaluateAll((els) => els.map((e) => e.dataset.stage))).toEqual(
      ['build', 'deploy'],
    );
    expect(await page.locator('section[data-stage=build] tr.slot').getAttribute('data-state')).toBe('passed');
    expect(
      await page.locator('section[data-stage=deploy] tr.slot[data-slot="2"]').getAttribute('data-state'),
    ).toBe('failed');
    expect(await page.locator('section[data-stage=deploy] tr.slot[data-slot="3"]').textContent()).toContain(
      'allowed to fail',
    );
    expect(await page.getByText('acme/<i>widget</i>').count()).toBe(1);
    await screenshot(page, 'build', true);
    // Live: the build finishing shows without a reload.
    await store.update(id, (b) => ({ ...b, state: 'failed', finishedAt: new Date().toISOString() }));
    await page.waitForFunction(() => document.querySelector('h1 .state')?.textContent === 'failed', null, {
      timeout: 10_000,
    });
    // Its job links are signed: they open the job's page with no login.
    await page.click('section[data-stage=deploy] tr.slot[data-slot="2"] a');
    await done();
    expect(await logText()).toContain('stage two ran');
    // A build's link is refused when changed, and opens no job.
    const tampered = new URL(links().buildUrl(id));
    const sig = tampered.searchParams.get('sig') ?? '';
    tampered.searchParams.set('sig', `${sig.startsWith('A') ? 'B' : 'A'}${sig.slice(1)}`);
    expect((await fetch(tampered)).status).toBe(403);
    expect((await fetch(`${api.url}/jobs/${first}?${links().query('build', id)}`)).status).toBe(403);
    // Signed in, the dashboard lists it among the recent builds, and its filter by state holds.
    await page.request.post(`${api.url}/login`, { form: { token: TOKEN, next: '/' } });
    await page.goto(`${api.url}/?state=failed`);
    expect(await page.locator(`tr.build-row a[href="/builds/${id}"]`).textContent()).toBe('#7');
    await page.goto(`${api.url}/?state=passed`);
    expect(await page.locator(`tr.build-row a[href="/builds/${id}"]`).count()).toBe(0);
  });
});
