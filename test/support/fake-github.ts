import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { answerGit } from './git-http-server.ts';

/** One request the fake saw. */
export interface FakeCall {
  method: string;
  path: string;
  status: number;
  body: unknown;
  auth: string | undefined;
  at: number;
}

/** A check run as the fake holds it, with every state it was set to. */
export interface FakeCheckRun {
  id: number;
  repo: string;
  name: string;
  head_sha: string;
  status: string;
  conclusion: string | null;
  external_id: string | null;
  details_url: string | null;
  output: { title?: string; summary?: string; text?: string };
  actions: unknown[];
  /** Each status it was created with or moved to, in order (`completed:success`). */
  history: string[];
}

export interface FakeGitHub {
  /** The API's base URL, also the git host: `http://127.0.0.1:PORT`. */
  url: string;
  /** `127.0.0.1:PORT`. */
  host: string;
  calls: FakeCall[];
  checkRuns: Map<number, FakeCheckRun>;
  /** Every installation token issued. */
  tokens: string[];
  /** Authorization headers of git requests (the token a worker fetched with). */
  gitAuth: (string | undefined)[];
  /** A repository of the fake (`owner/name`), served over git's smart HTTP; private ones need a token. */
  createRepo(fullName: string, opts?: { private?: boolean }): Promise<FakeRepo>;
  /** Puts a fork's branch into the base repository as `refs/pull/<n>/head`, as GitHub does when a pull request is opened. */
  openPullRequest(base: FakeRepo, fork: FakeRepo, branch: string, n: number): Promise<void>;
  /** Answers 500 to every REST call until `ms` from now. */
  failFor(ms: number): void;
  close(): Promise<void>;
}

export interface FakeRepo {
  fullName: string;
  id: number;
  cloneUrl: string;
  /** Commits these files (on top of the previous commit) to `branch`; returns the sha. */
  commit(files: Record<string, string>, opts?: { branch?: string; message?: string }): Promise<string>;
}

const GIT_ENV = {
  PATH: '/usr/bin:/bin',
  HOME: '/nonexistent',
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  GIT_AUTHOR_NAME: 'Test',
  GIT_AUTHOR_EMAIL: 'test@example.com',
  GIT_COMMITTER_NAME: 'Test',
  GIT_COMMITTER_EMAIL: 'test@example.com',
};

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function send(res: ServerResponse, status: number, body?: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(body === undefined ? '' : JSON.stringify(body));
}

/**
 * A local fake of the GitHub the App talks to: installation tokens, repository contents (read
 * from real git repositories), check runs (create, update), and git's smart HTTP through
 * `git http-backend`. It records every call and can answer 500 for a while.
 */
export async function startFakeGitHub(): Promise<FakeGitHub> {
  const root = await mkdtemp(join(tmpdir(), 'archway-fake-github-'));
  const calls: FakeCall[] = [];
  const checkRuns = new Map<number, FakeCheckRun>();
  const tokens: string[] = [];
  const gitAuth: (string | undefined)[] = [];
  const repos = new Map<string, { private: boolean; id: number }>();
  let nextCheck = 1000;
  let nextRepo = 500;
  let failUntil = 0;

  const validToken = (auth: string | undefined) => {
    const m = /^(?:token|Bearer) (.+)$/.exec(auth ?? '');
    return m?.[1] !== undefined && tokens.includes(m[1]);
  };

  async function git(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const m = /^\/([^/]+\/[^/]+)\.git(\/.*)$/.exec(url.pathname);
    const repo = m?.[1] ? repos.get(m[1]) : undefined;
    const auth = req.headers.authorization;
    gitAuth.push(auth);
    if (!m || !repo) return send(res, 404, { message: 'Not Found' });
    if (repo.private) {
      const basic = /^Basic (.+)$/.exec(auth ?? '');
      const [user, pass] = basic?.[1] ? Buffer.from(basic[1], 'base64').toString().split(':') : [];
      if (user !== 'x-access-token' || !pass || !tokens.includes(pass)) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="GitHub"' });
        res.end();
        return;
      }
    }
    await answerGit(req, res, url, root);
  }

  async function api(req: IncomingMessage, res: ServerResponse, url: URL, body: unknown): Promise<number> {
    const p = url.pathname;
    const auth = req.headers.authorization;
    let m = /^\/app\/installations\/(\d+)\/access_tokens$/.exec(p);
    if (m && req.method === 'POST') {
      if (!/^Bearer ey/i.test(auth ?? ''))
        return reply(401, { message: 'A JSON web token could not be decoded' });
      const token = `ghs_${randomBytes(18).toString('hex')}`;
      tokens.push(token);
      return reply(201, {
        token,
        expires_at: new Date(Date.now() + 3_600_000).toISOString(),
        permissions: (body as { permissions?: unknown })?.permissions ?? {
          checks: 'write',
          contents: 'read',
        },
        repository_selection: 'selected',
      });
    }
    if (!validToken(auth)) return reply(401, { message: 'Bad credentials' });
    m = /^\/repos\/([^/]+\/[^/]+)\/contents\/(.+)$/.exec(p);
    if (m?.[1] && m[2] && req.method === 'GET') {
      const ref = url.searchParams.get('ref') ?? 'HEAD';
      const r = await execa(
        'git',
        ['--git-dir', join(root, `${m[1]}.git`), 'show', `${ref}:${decodeURIComponent(m[2])}`],
        {
          env: GIT_ENV,
          extendEnv: false,
          reject: false,
          encoding: 'buffer',
        },
      );
      if (r.exitCode !== 0) return reply(404, { message: 'Not Found' });
      return reply(200, {
        type: 'file',
        encoding: 'base64',
        path: m[2],
        content: Buffer.from(r.stdout).toString('base64'),
      });
    }
    m = /^\/repos\/([^/]+\/[^/]+)\/check-runs$/.exec(p);
    if (m?.[1] && req.method === 'POST') {
      const b = body as Record<string, unknown>;
      const id = nextCheck++;
      const run: FakeCheckRun = {
        id,
        repo: m[1],
        name: String(b.name),
        head_sha: String(b.head_sha),
        status: String(b.status ?? 'queued'),
        conclusion: (b.conclusion as string | undefined) ?? null,
        external_id: (b.external_id as string | undefined) ?? null,
        details_url: (b.details_url as string | undefined) ?? null,
        output: (b.output as FakeCheckRun['output']) ?? {},
        actions: (b.actions as unknown[]) ?? [],
        history: [],
      };
      run.history.push(run.conclusion ? `${run.status}:${run.conclusion}` : run.status);
      checkRuns.set(id, run);
      return reply(201, run);
    }
    m = /^\/repos\/([^/]+\/[^/]+)\/check-runs\/(\d+)$/.exec(p);
    if (m?.[2] && req.method === 'PATCH') {
      const run = checkRuns.get(Number(m[2]));
      if (!run) return reply(404, { message: 'Not Found' });
      const b = body as Record<string, unknown>;
      if (b.status !== undefined) run.status = String(b.status);
      if (b.conclusion !== undefined) {
        run.conclusion = String(b.conclusion);
        run.status = 'completed';
      }
      if (b.external_id !== undefined) run.external_id = String(b.external_id);
      if (b.details_url !== undefined) run.details_url = String(b.details_url);
      if (b.output !== undefined) run.output = b.output as FakeCheckRun['output'];
      if (b.actions !== undefined) run.actions = b.actions as unknown[];
      run.history.push(run.status === 'completed' ? `completed:${run.conclusion}` : run.status);
      return reply(200, run);
    }
    return reply(404, { message: 'Not Found' });

    function reply(status: number, data: unknown): number {
      send(res, status, data);
      return status;
    }
  }

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (/\.git\//.test(url.pathname)) {
      git(req, res, url).catch(() => send(res, 500, { message: 'git failed' }));
      return;
    }
    void (async () => {
      const raw = await readBody(req);
      let body: unknown;
      try {
        body = raw.length ? JSON.parse(raw.toString()) : undefined;
      } catch {
        body = raw.toString();
      }
      const call: FakeCall = {
        method: req.method ?? 'GET',
        path: url.pathname,
        status: 0,
        body,
        auth: req.headers.authorization,
        at: Date.now(),
      };
      calls.push(call);
      if (Date.now() < failUntil) {
        call.status = 500;
        return send(res, 500, { message: 'Server Error' });
      }
      call.status = await api(req, res, url, body);
    })().catch(() => send(res, 500, { message: 'fake failed' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const url = `http://127.0.0.1:${port}`;

  return {
    url,
    host: `127.0.0.1:${port}`,
    calls,
    checkRuns,
    tokens,
    gitAuth,
    async createRepo(fullName, opts = {}) {
      const gitDir = join(root, `${fullName}.git`);
      await mkdir(dirname(gitDir), { recursive: true });
      await execa('git', ['init', '--bare', '--quiet', gitDir], { env: GIT_ENV, extendEnv: false });
      await execa('git', ['--git-dir', gitDir, 'config', 'uploadpack.allowAnySHA1InWant', 'true'], {
        env: GIT_ENV,
        extendEnv: false,
      });
      const id = nextRepo++;
      repos.set(fullName, { private: opts.private ?? true, id });
      const work = join(root, '.work', fullName);
      await mkdir(work, { recursive: true });
      await execa('git', ['init', '--quiet', work], { env: GIT_ENV, extendEnv: false });
      const files = new Map<string, string>();
      return {
        fullName,
        id,
        cloneUrl: `${url}/${fullName}.git`,
        async commit(add, o = {}) {
          const branch = o.branch ?? 'main';
          for (const [k, v] of Object.entries(add)) files.set(k, v);
          for (const [k, v] of files) {
            await mkdir(dirname(join(work, k)), { recursive: true });
            await writeFile(join(work, k), v);
          }
          const g = (args: string[]) =>
            execa('git', ['-C', work, ...args], { env: GIT_ENV, extendEnv: false }).then((r) => r.stdout);
          await g(['add', '-A']);
          await g([
            'commit',
            '--quiet',
            '--allow-empty',
            '-m',
            o.message ?? `commit ${randomBytes(3).toString('hex')}`,
          ]);
          const sha = (await g(['rev-parse', 'HEAD'])).trim();
          await g(['push', '--quiet', '--force', gitDir, `HEAD:refs/heads/${branch}`]);
          return sha;
        },
      };
    },
    async openPullRequest(base, fork, branch, n) {
      await execa(
        'git',
        [
          '--git-dir',
          join(root, `${base.fullName}.git`),
          'fetch',
          '--quiet',
          join(root, `${fork.fullName}.git`),
          `+refs/heads/${branch}:refs/pull/${n}/head`,
        ],
        { env: GIT_ENV, extendEnv: false },
      );
    },
    failFor(ms) {
      failUntil = Date.now() + ms;
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      await rm(root, { recursive: true, force: true });
    },
  };
}
