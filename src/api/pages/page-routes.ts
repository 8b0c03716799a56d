import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import fastifyCookie from '@fastify/cookie';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { createBuildStore, JobNotFoundError, readLog } from '../../../queue/index.ts';
import {
  type ApiToken,
  ArchInput,
  ArchwayError,
  type JobRecord,
  JobState,
  toError,
  VISIBILITY_LABEL,
} from '../../core/index.ts';
import type { ApiDeps } from '../api-deps.ts';
import { createTokenVerifier } from '../auth.ts';
import type { LogFanout } from '../log-fanout.ts';
import { createQueuePlaceReader } from '../queue-place.ts';
import { followLog } from '../routes/log.ts';
import { JobParams, maskJob, StreamId } from '../schemas.ts';
import { buildMain, buildPage, type SlotJob } from './build-page.ts';
import { dashboardMain, dashboardPage } from './dashboard-page.ts';
import { jobPage, placeLine } from './job-page.ts';
import { CSP, messagePage } from './layout.ts';
import { loginPage } from './login-page.ts';
import type { PageKind, PageLinks } from './page-links.ts';
import { poolsMain, poolsPage } from './pools-page.ts';

/** The cookie of a page login. */
export const SESSION_COOKIE = 'archway_session';

/** A page that needs a signed link or a login was asked for without one, or with a bad one. */
export class PageAccessError extends ArchwayError {
  constructor(
    readonly why: 'invalid' | 'expired' | 'missing',
    kind: PageKind | 'page',
  ) {
    super(
      why === 'expired'
        ? 'PAGE_LINK_EXPIRED'
        : why === 'invalid'
          ? 'PAGE_LINK_INVALID'
          : 'PAGE_LOGIN_REQUIRED',
      why === 'expired'
        ? `This ${kind} link has expired. Ask for a new one (the check run's Details link, or pageUrl of the API), or sign in.`
        : why === 'invalid'
          ? `This ${kind} link is not valid: its signature does not match (it was changed, or made with another secret). Sign in, or use the link as it was given.`
          : `This ${kind} needs a signed link or a login.`,
      { httpStatus: 403 },
    );
  }
}

class BuildNotFoundError extends ArchwayError {
  constructor(id: string) {
    super('BUILD_NOT_FOUND', `no build '${id}' (builds are kept 30 days)`, { httpStatus: 404 });
  }
}

export interface PageRoutesOptions {
  deps: ApiDeps;
  links: PageLinks;
  tokens: readonly ApiToken[];
  /** ARCHWAY_PUBLIC_LOGS: job pages open to anyone, jobs of private repositories excepted. */
  publicLogs: boolean;
  /** Whether the API is reached over https (its public URL): the session cookie is then Secure. */
  secureCookie: boolean;
  follows: Set<AbortController>;
  fanout: LogFanout;
}

const require = createRequire(import.meta.url);
/** The pages' assets: our own files, and ansi_up's ES module as its package ships it. */
const ASSETS: Record<string, { path: string; type: string }> = {
  'log.js': { path: new URL('./assets/log.js', import.meta.url).pathname, type: 'text/javascript' },
  'live.js': { path: new URL('./assets/live.js', import.meta.url).pathname, type: 'text/javascript' },
  'pages.css': { path: new URL('./assets/pages.css', import.meta.url).pathname, type: 'text/css' },
  'ansi_up.js': { path: require.resolve('ansi_up'), type: 'text/javascript' },
};

const Signed = z.object({
  exp: z.string().max(20).optional(),
  sig: z.string().max(100).optional(),
});

/** A `next` that stays on this server: a path, never `//host` or a scheme. */
function safeNext(next: unknown): string {
  return typeof next === 'string' && /^\/(?![/\\])[\x21-\x7e]*$/.test(next) ? next : '/';
}

/**
 * The human pages: `/` (recent jobs), `/jobs/:id` (the log, followed live), `/builds/:id`,
 * `/pools`, the token login, and their assets. Job and build pages open with a signed link, a
 * login, or (ARCHWAY_PUBLIC_LOGS) for anyone; the others with a login only.
 */
export const pageRoutes: FastifyPluginAsyncZod<PageRoutesOptions> = async (app, o) => {
  const { deps, links } = o;
  const verifier = createTokenVerifier(o.tokens);
  const { poolStatus } = deps;
  // Builds as the pages read them: the head, and of each slot's expanded job only what they show.
  const builds = createBuildStore(deps.redis, deps.keys, {
    job: z
      .object({ arch: z.string().optional(), number: z.string().optional() })
      .loose() as z.ZodType<SlotJob>,
    event: z.unknown(),
  });
  const assets = new Map<string, { body: Buffer; type: string }>();
  for (const [name, a] of Object.entries(ASSETS))
    assets.set(name, { body: await readFile(a.path), type: `${a.type}; charset=utf-8` });

  await app.register(fastifyCookie);
  // A login form posts urlencoded; only these routes read it.
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'string', bodyLimit: 8192 },
    (_req, body, done) => done(null, Object.fromEntries(new URLSearchParams(body as string))),
  );

  app.addHook('onSend', async (req, reply, payload) => {
    reply.header('content-security-policy', CSP);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('x-frame-options', 'DENY');
    // A signed link is in the page's URL: it must not leave in a Referer.
    reply.header('referrer-policy', 'no-referrer');
    if (!req.url.startsWith('/assets/')) reply.header('cache-control', 'no-store');
    return payload;
  });

  /**
   * A form post that another site made the reader's browser send (a login as the attacker's
   * token, a logout). Browsers say where a request comes from in Sec-Fetch-Site: only
   * `same-origin` (the pages' own forms) and `none` (typed by the user) pass. A browser without it
   * is judged by Origin, which must be the public URL's or the host the request names; `null` is
   * what the pages' own forms send there (their Referrer-Policy is no-referrer). Neither header
   * (curl): let through.
   */
  const fromAnotherSite = (req: FastifyRequest): boolean => {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined) return site !== 'same-origin' && site !== 'none';
    const origin = req.headers.origin;
    if (origin === undefined || origin === 'null' || origin === links.origin()) return false;
    try {
      return new URL(origin).host !== req.headers.host;
    } catch {
      return true;
    }
  };
  const refuseCrossSite = (reply: FastifyReply) =>
    sendPage(
      reply,
      403,
      loginPage('/', 'This form was sent from another site: open the login page here and sign in.'),
    );

  /** The token name of a valid login, if any (a token removed from the config ends its logins). */
  const userOf = (req: FastifyRequest): string | undefined => {
    const s = links.checkSession(req.cookies[SESSION_COOKIE]);
    return s && o.tokens.some((t) => t.name === s.name) ? s.name : undefined;
  };

  /**
   * Who may see a job's or a build's page: a login, a valid signed link (its query is carried to
   * the page's own requests), or anyone with public logs when the repository is not private.
   */
  const access = (
    req: FastifyRequest,
    kind: PageKind,
    id: string,
    isPrivate: boolean,
  ): { auth: string; user?: string } => {
    const user = userOf(req);
    if (user) return { auth: '', user };
    const q = Signed.safeParse(req.query);
    const { exp, sig } = q.success ? q.data : {};
    if (exp !== undefined || sig !== undefined) {
      const check = links.check(kind, id, exp, sig);
      if (check !== 'valid') throw new PageAccessError(check, kind);
      return { auth: `exp=${exp}&sig=${encodeURIComponent(sig ?? '')}` };
    }
    if (o.publicLogs && !isPrivate) return { auth: '' };
    throw new PageAccessError('missing', kind);
  };

  const isPrivateJob = (j: JobRecord) => j.labels[VISIBILITY_LABEL] === 'private';

  const requireLogin = (req: FastifyRequest, reply: FastifyReply): string | undefined => {
    const user = userOf(req);
    if (!user) void reply.redirect(`/login?next=${encodeURIComponent(req.url)}`, 303);
    return user;
  };

  const sendPage = (reply: FastifyReply, status: number, page: string) =>
    reply.code(status).type('text/html; charset=utf-8').send(page);

  // Errors of these routes are pages, not JSON.
  app.setErrorHandler((e, req, reply) => {
    const err = toError(e) as Error & { statusCode?: number };
    const user = userOf(req);
    if (err instanceof PageAccessError)
      return sendPage(
        reply,
        403,
        messagePage(err.why === 'expired' ? 'Link expired' : 'Access refused', err.message, user),
      );
    if (err instanceof JobNotFoundError)
      return sendPage(reply, 404, messagePage('No such job', err.message, user));
    const status = err instanceof ArchwayError ? (err.httpStatus ?? 500) : (err.statusCode ?? 500);
    if (status >= 500) req.log.error({ err }, 'page failed');
    const message = status >= 500 ? 'Something went wrong on the server; it is in its log.' : err.message;
    return sendPage(
      reply,
      status,
      messagePage(status >= 500 ? 'Server error' : 'Bad request', message, user),
    );
  });

  const hidden = { hide: true } as const;

  app.get(
    '/assets/:name',
    { schema: { ...hidden, params: z.object({ name: z.string() }) } },
    async (req, reply) => {
      const a = assets.get(req.params.name);
      if (!a) return sendPage(reply, 404, messagePage('Not found', 'No such file.'));
      return reply.type(a.type).header('cache-control', 'public, max-age=300').send(a.body);
    },
  );

  app.get(
    '/',
    {
      schema: {
        ...hidden,
        querystring: z.object({
          state: z.union([JobState, z.literal('')]).optional(),
          arch: z.union([ArchInput, z.literal('')]).optional(),
        }),
      },
    },
    async (req, reply) => {
      const user = requireLogin(req, reply);
      if (!user) return reply;
      const state = req.query.state || undefined;
      const arch = req.query.arch || undefined;
      const page = await deps.queue.list({
        limit: 50,
        ...(state ? { state } : {}),
        ...(arch ? { arch } : {}),
      });
      // The state filter applies to builds too where it is a build's state; arch, to builds with a
      // job of it. Among the 50 newest only: a page refreshed every 3 s must not scan every build.
      const recent = (await builds.list({ limit: 50 })).builds
        .filter(
          (b) =>
            (!state || (b.state as string) === state) &&
            (!arch || b.slots.some((sl) => sl.job.arch === arch)),
        )
        .slice(0, 10);
      const view = {
        builds: recent,
        jobs: page.jobs.map((j) => maskJob(j)),
        filter: { state, arch },
        user,
      };
      if (req.headers['x-archway-fragment'])
        return reply.type('text/html; charset=utf-8').send(dashboardMain(view).value);
      return sendPage(reply, 200, dashboardPage(view));
    },
  );

  app.get('/pools', { schema: hidden }, async (req, reply) => {
    const user = requireLogin(req, reply);
    if (!user) return reply;
    const statuses = await poolStatus.readAll();
    if (req.headers['x-archway-fragment'])
      return reply.type('text/html; charset=utf-8').send(poolsMain(statuses).value);
    return sendPage(reply, 200, poolsPage(statuses, user));
  });

  const queuePlace = createQueuePlaceReader(deps);

  async function jobFor(req: FastifyRequest, id: string) {
    const job = await deps.queue.get(id);
    if (!job) {
      // Refuse before saying whether the job exists: a missing one must not be told from a hidden one.
      access(req, 'job', id, true);
      throw new JobNotFoundError(id);
    }
    return { job, ...access(req, 'job', id, isPrivateJob(job)) };
  }

  app.get('/jobs/:id', { schema: { ...hidden, params: JobParams } }, async (req, reply) => {
    const { job, auth, user } = await jobFor(req, req.params.id);
    const build = job.labels.build;
    const buildHref = build
      ? `/builds/${encodeURIComponent(build)}${auth ? `?${links.query('build', build)}` : ''}`
      : undefined;
    const place = job.state === 'queued' ? await queuePlace(job) : undefined;
    if (req.headers['x-archway-fragment'] === 'place') {
      // The page's queue line again (log.js, while the job waits); 204 once it is in no line.
      const line = placeLine(job, place);
      if (!line) return reply.code(204).send();
      return reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(line);
    }
    return sendPage(reply, 200, jobPage({ job: maskJob(job), auth, buildHref, user, place }));
  });

  app.get('/jobs/:id/raw', { schema: { ...hidden, params: JobParams } }, async (req, reply) => {
    const { job } = await jobFor(req, req.params.id);
    const { chunks } = await readLog(deps.redis, deps.keys, job.id);
    return reply
      .type('text/plain; charset=utf-8')
      .header('content-disposition', `inline; filename="${job.id}.log"`)
      .send(chunks.map((c) => c.text).join(''));
  });

  app.get(
    '/jobs/:id/events',
    {
      exposeHeadRoute: false,
      schema: {
        ...hidden,
        params: JobParams,
        headers: z.object({ 'last-event-id': StreamId.optional() }).loose(),
      },
    },
    async (req, reply) => {
      const { job } = await jobFor(req, req.params.id);
      return followLog({
        req,
        reply,
        id: job.id,
        sse: true,
        after: req.headers['last-event-id'],
        queue: deps.queue,
        follows: o.follows,
        fanout: o.fanout,
      });
    },
  );

  app.get(
    '/builds/:id',
    {
      schema: {
        ...hidden,
        params: z.object({ id: z.string().regex(/^[A-Za-z0-9_.-]{1,128}$/, 'a build id') }),
      },
    },
    async (req, reply) => {
      const { id } = req.params;
      const build = await builds.get(id);
      if (!build) {
        access(req, 'build', id, true);
        throw new BuildNotFoundError(id);
      }
      const { auth, user } = access(req, 'build', id, build.private);
      const jobs = new Map<string, JobRecord>();
      for (const slot of build.slots) {
        const j = await deps.queue.get(slot.jobId);
        if (j) jobs.set(j.id, maskJob(j));
      }
      // Opened with the build's link: each job's link is signed too (the jobs of a build share its visibility).
      const jobHref = (jobId: string) =>
        `/jobs/${encodeURIComponent(jobId)}${auth ? `?${links.query('job', jobId)}` : ''}`;
      const view = { build, jobs, jobHref, user };
      if (req.headers['x-archway-fragment'])
        return reply.type('text/html; charset=utf-8').send(buildMain(view).value);
      return sendPage(reply, 200, buildPage(view));
    },
  );

  app.get(
    '/login',
    { schema: { ...hidden, querystring: z.object({ next: z.string().optional() }) } },
    async (req, reply) => sendPage(reply, 200, loginPage(safeNext(req.query.next))),
  );

  app.post(
    '/login',
    {
      bodyLimit: 8192,
      schema: {
        ...hidden,
        body: z.object({ token: z.string().max(4096).default(''), next: z.string().max(2048).optional() }),
      },
    },
    async (req, reply) => {
      if (fromAnotherSite(req)) return refuseCrossSite(reply);
      const next = safeNext(req.body.next);
      const token = verifier.verify(req.body.token.trim());
      if (!token) return sendPage(reply, 401, loginPage(next, 'That token is not valid here.'));
      req.log.info({ token: token.name }, 'page login');
      return reply
        .setCookie(SESSION_COOKIE, links.session(token.name), {
          path: '/',
          httpOnly: true,
          sameSite: 'lax',
          secure: o.secureCookie || req.protocol === 'https',
          maxAge: links.sessionSeconds,
        })
        .redirect(next, 303);
    },
  );

  app.post('/logout', { schema: hidden }, async (req, reply) =>
    fromAnotherSite(req)
      ? refuseCrossSite(reply)
      : reply.clearCookie(SESSION_COOKIE, { path: '/' }).redirect('/login', 303),
  );
};
