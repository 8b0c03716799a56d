import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A local git server over HTTP (git's smart protocol through `git http-backend`), fetch only. */
export interface GitHttpServer {
  /** `http://127.0.0.1:PORT`: a repository `<root>/x.git` is `${url}/x.git`. */
  url: string;
  /** The requests it answered (method and path), oldest first. */
  requests: string[];
  close(): Promise<void>;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of req) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/**
 * Answers one request of git's smart HTTP protocol for the bare repositories under `root` through
 * `git http-backend` (a CGI), with `env` added to its environment; the test servers' one copy.
 */
export async function answerGit(
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  root: string,
  env: Record<string, string> = {},
): Promise<void> {
  const body = await readBody(req);
  const cgi = spawn('git', ['http-backend'], {
    env: {
      PATH: '/usr/bin:/bin',
      HOME: '/nonexistent',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_PROJECT_ROOT: root,
      GIT_HTTP_EXPORT_ALL: '1',
      PATH_INFO: url.pathname,
      QUERY_STRING: url.search.slice(1),
      REQUEST_METHOD: req.method ?? 'GET',
      CONTENT_TYPE: req.headers['content-type'] ?? '',
      CONTENT_LENGTH: String(body.length),
      REMOTE_ADDR: '127.0.0.1',
      ...(req.headers['git-protocol'] ? { GIT_PROTOCOL: String(req.headers['git-protocol']) } : {}),
      ...(req.headers['content-encoding']
        ? { HTTP_CONTENT_ENCODING: String(req.headers['content-encoding']) }
        : {}),
      ...env,
    },
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  // git may answer before it has read the whole request: an EPIPE then is not the test's failure.
  cgi.stdin.on('error', () => undefined);
  cgi.stdin.end(body);
  const out: Buffer[] = [];
  for await (const c of cgi.stdout) out.push(c as Buffer);
  const all = Buffer.concat(out);
  const split = all.indexOf('\r\n\r\n');
  let status = 200;
  const headers: Record<string, string> = {};
  for (const line of all.subarray(0, Math.max(0, split)).toString().split('\r\n')) {
    const i = line.indexOf(':');
    const k = line.slice(0, i).trim();
    const v = line.slice(i + 1).trim();
    if (k.toLowerCase() === 'status') status = Number(v.split(' ')[0]);
    else if (k) headers[k] = v;
  }
  res.writeHead(status, headers);
  res.end(all.subarray(split + 4));
}

/**
 * Serves the bare repositories under `root`. `allowFilter` turns on `uploadpack.allowFilter`
 * (partial clone, as GitHub allows); without it a filtered fetch gets every blob.
 */
export async function startGitHttpServer(
  root: string,
  opts: {
    allowFilter?: boolean;
    /** Waits this long before answering each pack request (a fetch still running when a test looks). */
    packDelayMs?: number;
  } = {},
): Promise<GitHttpServer> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    requests.push(`${req.method} ${url.pathname}`);
    (async () => {
      if (opts.packDelayMs && url.pathname.endsWith('/git-upload-pack'))
        await new Promise((r) => setTimeout(r, opts.packDelayMs));
      await answerGit(req, res, url, root, {
        ...(opts.allowFilter
          ? { GIT_CONFIG_COUNT: '1', GIT_CONFIG_KEY_0: 'uploadpack.allowFilter', GIT_CONFIG_VALUE_0: 'true' }
          : {}),
      });
    })().catch(() => {
      res.statusCode = 500;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
