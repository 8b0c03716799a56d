import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** What a signed link opens: a job's page (with its log), or a build's page. */
export type PageKind = 'job' | 'build';

/** The outcome of checking a link's or a cookie's signature. */
export type SignatureCheck = 'valid' | 'expired' | 'invalid';

export interface PageLinksOptions {
  /** HMAC key (ARCHWAY_PAGE_SECRET). Default: 32 random bytes, so links end with the process. */
  secret?: string | undefined;
  /** The API's address as users reach it (ARCHWAY_PUBLIC_URL, else where it listens); read at each call. */
  publicUrl: () => string;
  /** Seconds a signed link stays valid (ARCHWAY_PAGE_LINK_DAYS). */
  linkSeconds: number;
  /** Seconds a login lasts (ARCHWAY_PAGE_SESSION_HOURS). */
  sessionSeconds: number;
  /** The clock, in ms. Default Date.now (tests pass their own). */
  now?: () => number;
}

export interface PageLinks {
  /** `<public url>/jobs/<id>?exp=..&sig=..`: the job's page for whoever holds the link, until it expires. */
  jobUrl(id: string): string;
  /** `<public url>/builds/<id>?exp=..&sig=..`. */
  buildUrl(id: string): string;
  /** The `exp=..&sig=..` query of a fresh link to a page of `kind` (exp in unix seconds). */
  query(kind: PageKind, id: string): string;
  /** Checks a link's `exp` and `sig`. */
  check(kind: PageKind, id: string, exp: string | undefined, sig: string | undefined): SignatureCheck;
  /** A session cookie's value for the token named `name`. */
  session(name: string): string;
  /** The token name a session cookie was made for, when its signature holds and it has not expired. */
  checkSession(value: string | undefined): { name: string } | undefined;
  readonly sessionSeconds: number;
  /** The public URL's origin (`https://ci.example.org`): where the pages' own forms are posted from. */
  origin(): string;
}

/**
 * Signed, expiring links to pages: HMAC-SHA256 over the kind, the id and the expiry, with the
 * server's page secret. The kind is part of what is signed, so a job's link never opens a build
 * (or a login), and the id is, so it opens no other job. No state is kept: a link is valid until
 * its expiry, or until the secret changes.
 */
export function createPageLinks(o: PageLinksOptions): PageLinks {
  const key = o.secret ?? randomBytes(32).toString('hex');
  const now = o.now ?? Date.now;
  const mac = (message: string) => createHmac('sha256', key).update(message).digest('base64url');
  const same = (a: string, b: string) => {
    const x = Buffer.from(a);
    const y = Buffer.from(b);
    return x.length === y.length && timingSafeEqual(x, y);
  };
  const seconds = () => Math.floor(now() / 1000);
  const base = () => o.publicUrl().replace(/\/+$/, '');

  const query = (kind: PageKind, id: string) => {
    const exp = seconds() + Math.round(o.linkSeconds);
    return `exp=${exp}&sig=${mac(`${kind}\n${id}\n${exp}`)}`;
  };
  return {
    query,
    jobUrl: (id) => `${base()}/jobs/${encodeURIComponent(id)}?${query('job', id)}`,
    buildUrl: (id) => `${base()}/builds/${encodeURIComponent(id)}?${query('build', id)}`,
    check(kind, id, exp, sig) {
      if (!exp || !sig || !/^\d{1,12}$/.test(exp)) return 'invalid';
      if (!same(sig, mac(`${kind}\n${id}\n${exp}`))) return 'invalid';
      return Number(exp) < seconds() ? 'expired' : 'valid';
    },
    session(name) {
      const exp = seconds() + Math.round(o.sessionSeconds);
      const body = `${Buffer.from(name).toString('base64url')}.${exp}`;
      return `${body}.${mac(`session\n${body}`)}`;
    },
    checkSession(value) {
      const m = /^([A-Za-z0-9_-]{1,200})\.(\d{1,12})\.([A-Za-z0-9_-]{43})$/.exec(value ?? '');
      if (!m) return undefined;
      const [, name, exp, sig] = m as unknown as [string, string, string, string];
      if (!same(sig, mac(`session\n${name}.${exp}`)) || Number(exp) < seconds()) return undefined;
      return { name: Buffer.from(name, 'base64url').toString() };
    },
    sessionSeconds: o.sessionSeconds,
    origin: () => {
      try {
        return new URL(base()).origin;
      } catch {
        return '';
      }
    },
  };
}
