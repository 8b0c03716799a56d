import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createPageLinks } from '../../src/api/pages/index.ts';
import { pageSecretIn } from '../../src/cli/commands/up.ts';

const SECRET = 'x'.repeat(40);
let now = Date.parse('2026-12-01T12:00:00Z');
const links = (secret = SECRET) =>
  createPageLinks({
    secret,
    publicUrl: () => 'https://ci.example/',
    linkSeconds: 3600,
    sessionSeconds: 600,
    now: () => now,
  });
const parts = (url: string) => {
  const u = new URL(url);
  return { exp: u.searchParams.get('exp') ?? undefined, sig: u.searchParams.get('sig') ?? undefined };
};

describe('signed page links', () => {
  it('a job link opens that job until it expires, and nothing else', () => {
    const l = links();
    const url = l.jobUrl('j123');
    expect(url).toMatch(/^https:\/\/ci\.example\/jobs\/j123\?exp=\d+&sig=[\w-]{43}$/);
    const { exp, sig } = parts(url);
    expect(l.check('job', 'j123', exp, sig)).toBe('valid');
    expect(l.check('job', 'j124', exp, sig)).toBe('invalid');
    expect(l.check('build', 'j123', exp, sig)).toBe('invalid');
    expect(l.check('job', 'j123', String(Number(exp) + 1), sig)).toBe('invalid');
    expect(l.check('job', 'j123', exp, `${sig?.slice(0, -1)}A`)).toBe('invalid');
    expect(l.check('job', 'j123', exp, undefined)).toBe('invalid');
    expect(l.check('job', 'j123', 'soon', sig)).toBe('invalid');
    expect(links('y'.repeat(40)).check('job', 'j123', exp, sig)).toBe('invalid');
    now += 3601_000;
    expect(l.check('job', 'j123', exp, sig)).toBe('expired');
  });

  it('a session cookie names its token until it expires; a changed one names nobody', () => {
    const l = links();
    const cookie = l.session('ops:team');
    expect(cookie).not.toContain('ops:team');
    expect(l.checkSession(cookie)).toEqual({ name: 'ops:team' });
    expect(
      l.checkSession(cookie.replace(/^[^.]+/, Buffer.from('admin').toString('base64url'))),
    ).toBeUndefined();
    expect(l.checkSession(undefined)).toBeUndefined();
    expect(l.checkSession('garbage')).toBeUndefined();
    // A job link's signature is no session.
    expect(
      l.checkSession(`${Buffer.from('admin').toString('base64url')}.${parts(l.jobUrl('x')).sig}`),
    ).toBeUndefined();
    now += 601_000;
    expect(l.checkSession(cookie)).toBeUndefined();
  });
});

describe("up's page secret", () => {
  it('is made once under the pool (mode 0600) and kept; a short one is replaced', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'page-secret-'));
    try {
      const first = await pageSecretIn(dir);
      expect(first).toMatch(/^[0-9a-f]{64}$/);
      expect((await stat(join(dir, 'page-secret'))).mode & 0o777).toBe(0o600);
      expect(await pageSecretIn(dir)).toBe(first);
      await writeFile(join(dir, 'page-secret'), 'short\n');
      const second = await pageSecretIn(dir);
      expect(second).not.toBe(first);
      expect((await readFile(join(dir, 'page-secret'), 'utf8')).trim()).toBe(second);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
