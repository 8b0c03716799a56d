import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import {
  HostCommandError,
  InvalidInputError,
  type Keys,
  type Logger,
  runCommand,
  toError,
} from '../../core/index.ts';
import { UploadTooLargeError } from './upload-too-large-error.ts';
import { UploadUnavailableError } from './upload-unavailable-error.ts';

/** An uploaded tree: a git commit in a bare repository of the API's, served to workers as a git source. */
export interface Upload {
  id: string;
  /** The commit holding the tree. */
  sha: string;
  sizeBytes: number;
}

export interface UploadsOptions {
  /** Where uploads are kept (`<id>.git` bare repositories). Made when missing. */
  dir: string;
  /**
   * Where each upload's record is kept (`keys.upload(id)`: sha, size, holder, claim), so that
   * every API replica knows it: one that lacks the tree fetches it from the replica that holds it.
   */
  redis: Redis;
  keys: Keys;
  /** This replica's address as the other replicas reach it (ARCHWAY_REPLICA_URL; default where it listens). */
  selfUrl: () => string;
  /** Largest upload, in bytes: a bigger one is refused with 413 UPLOAD_TOO_LARGE. */
  limitBytes: number;
  /** An upload no build has used is removed after this, in ms. */
  unusedTtlMs: number;
  logger: Logger;
}

export interface Uploads {
  /**
   * Takes a git bundle (what `archway build` sends: one commit of the working tree at
   * `refs/heads/main`), checks every object (`fsck`: no `..`, `.git` or absolute names, no bad
   * modes; git has no device files or hard links), and keeps it as a bare repository.
   */
  ingest(body: Readable, declaredLength?: number): Promise<Upload>;
  /**
   * The upload, or `undefined` when it is unknown (never made, or removed). An upload another
   * replica took is fetched from it first (over its `/git/uploads/` endpoint, with strict fsck).
   */
  get(id: string): Promise<Upload | undefined>;
  /** The text of the first of `files` in the upload's commit (a symlink gives its target's name, never the file). */
  readFile(id: string, files: readonly string[]): Promise<{ path: string; text: string } | undefined>;
  /** Marks an upload as used by a build (kept until the build lets it go). */
  claim(id: string, buildId: string): Promise<void>;
  remove(id: string): Promise<void>;
  /**
   * Removes the uploads that no build claimed within `unusedTtlMs`, and this replica's copies of
   * uploads removed elsewhere. Returns their ids.
   */
  sweep(now?: number): Promise<string[]>;
  /** The directory `git http-backend` serves (`<dir>/<id>.git`). */
  readonly dir: string;
}

const ID = /^u[0-9a-f]{24}$/;
/** fsck checks made errors: what could reach a path outside the build directory, or git's own files. */
const FSCK_CHECKS = [
  'hasDot',
  'hasDotdot',
  'hasDotgit',
  'fullPathname',
  'emptyName',
  'badFilemode',
  'zeroPaddedFilemode',
  'duplicateEntries',
  'nulInHeader',
];
const FSCK_FETCH = FSCK_CHECKS.flatMap((m) => ['-c', `fetch.fsck.${m}=error`]);
const FSCK_ALL = FSCK_CHECKS.flatMap((m) => ['-c', `fsck.${m}=error`]);
const GIT_ENV = {
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_CONFIG_GLOBAL: '/dev/null',
  HOME: '/nonexistent',
  GIT_TERMINAL_PROMPT: '0',
};

/** A fetch from another replica: over http or https only. */
const PULL_CONFIG = [
  '-c',
  'protocol.allow=never',
  '-c',
  'protocol.http.allow=always',
  '-c',
  'protocol.https.allow=always',
  '-c',
  'http.followRedirects=false',
  '-c',
  'core.hooksPath=/dev/null',
];

/** How long an upload's record lives at most (as long as builds are kept). */
const RECORD_TTL_S = 30 * 86_400;

/** What a replica keeps beside each upload it has (`<id>.json`). */
type LocalMeta = Upload & { createdMs: number; build?: string; pulled?: boolean };

/** An upload's record in Redis (strings, as HGETALL answers). */
const UploadRecord = z.object({
  sha: z.string().regex(/^[0-9a-f]{40,64}$/),
  sizeBytes: z.coerce.number().int().nonnegative(),
  createdMs: z.coerce.number(),
  holder: z.string().min(1),
  build: z.string().optional(),
});
type UploadRecord = z.infer<typeof UploadRecord>;

const git = (args: string[], label: string) =>
  runCommand('git', args, { env: GIT_ENV, timeoutMs: 120_000, label });

export function createUploads(o: UploadsOptions): Uploads {
  const log = o.logger.child({ component: 'uploads' });
  const repoOf = (id: string) => join(o.dir, `${id}.git`);
  const metaOf = (id: string) => join(o.dir, `${id}.json`);

  async function readMeta(id: string): Promise<LocalMeta | undefined> {
    if (!ID.test(id)) return undefined;
    try {
      return JSON.parse(await readFile(metaOf(id), 'utf8')) as LocalMeta;
    } catch {
      return undefined;
    }
  }

  /** This replica's copy only. */
  async function removeLocal(id: string): Promise<void> {
    if (!ID.test(id)) return;
    await rm(metaOf(id), { force: true });
    await rm(repoOf(id), { recursive: true, force: true });
  }

  async function remove(id: string): Promise<void> {
    if (!ID.test(id)) return;
    await o.redis.del(o.keys.upload(id));
    await removeLocal(id);
  }

  /** The upload's record, shared by the replicas. */
  async function record(id: string): Promise<UploadRecord | undefined> {
    if (!ID.test(id)) return undefined;
    const h = await o.redis.hgetall(o.keys.upload(id));
    const r = UploadRecord.safeParse(h);
    return r.success ? r.data : undefined;
  }

  /** Fetches an upload another replica holds into this replica's directory (checked as an ingest is). */
  const pulling = new Map<string, Promise<void>>();
  async function pull(id: string, rec: UploadRecord): Promise<void> {
    const tmp = join(o.dir, `.pull-${id}-${randomBytes(4).toString('hex')}.git`);
    const from = `${rec.holder.replace(/\/+$/, '')}/git/uploads/${id}.git`;
    try {
      await mkdir(o.dir, { recursive: true, mode: 0o700 });
      await git(['init', '--bare', '--quiet', tmp], 'git init');
      await runCommand(
        'prlimit',
        [
          `--fsize=${o.limitBytes * 2}`,
          '--',
          'git',
          ...PULL_CONFIG,
          '-c',
          'transfer.fsckObjects=true',
          ...FSCK_FETCH,
          '--git-dir',
          tmp,
          'fetch',
          '--quiet',
          '--no-tags',
          from,
          'refs/heads/main:refs/heads/main',
        ],
        { env: GIT_ENV, timeoutMs: 120_000, label: 'git fetch (upload from its replica)' },
      );
      await git(
        [
          '-c',
          'fsck.skipList=/dev/null',
          ...FSCK_ALL,
          '--git-dir',
          tmp,
          'fsck',
          '--strict',
          '--no-dangling',
          '--no-progress',
        ],
        'git fsck',
      );
      const sha = await git(['--git-dir', tmp, 'rev-parse', 'refs/heads/main^{commit}'], 'git rev-parse');
      if (sha !== rec.sha) throw new Error(`upload ${id} at ${rec.holder} is ${sha}, not ${rec.sha}`);
      await rm(repoOf(id), { recursive: true, force: true });
      await rename(tmp, repoOf(id));
      await writeFile(
        metaOf(id),
        JSON.stringify({ id, sha, sizeBytes: rec.sizeBytes, createdMs: rec.createdMs, pulled: true }),
        { mode: 0o600 },
      );
      log.info({ upload: id, from: rec.holder }, 'upload fetched from the replica that holds it');
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /** Writes the upload's shared record; it expires with the builds (their store keeps them 30 days). */
  async function writeRecord(id: string, r: UploadRecord): Promise<void> {
    await o.redis
      .multi()
      .hset(o.keys.upload(id), {
        sha: r.sha,
        sizeBytes: String(r.sizeBytes),
        createdMs: String(r.createdMs),
        holder: r.holder,
        ...(r.build ? { build: r.build } : {}),
      })
      .expire(o.keys.upload(id), RECORD_TTL_S)
      .exec();
  }

  /**
   * The record of an upload this replica took before uploads had records (its own copy, not one
   * fetched from another replica): made now, held here. Those removed elsewhere are all fetched copies.
   */
  async function adopt(m: LocalMeta): Promise<UploadRecord | undefined> {
    if (m.pulled) return undefined;
    const r: UploadRecord = {
      sha: m.sha,
      sizeBytes: m.sizeBytes,
      createdMs: m.createdMs,
      holder: o.selfUrl(),
      ...(m.build ? { build: m.build } : {}),
    };
    await writeRecord(m.id, r);
    return r;
  }

  async function get(id: string): Promise<Upload | undefined> {
    const m = await readMeta(id);
    const rec = (await record(id)) ?? (m ? await adopt(m) : undefined);
    if (m && rec) return { id: m.id, sha: m.sha, sizeBytes: m.sizeBytes };
    // Removed (its record is gone), or held by another replica: fetched from it once.
    if (!rec || rec.holder === o.selfUrl()) return undefined;
    let p = pulling.get(id);
    if (!p) {
      p = pull(id, rec).finally(() => pulling.delete(id));
      pulling.set(id, p);
    }
    try {
      await p;
    } catch (e) {
      log.warn(
        { upload: id, from: rec.holder, err: firstLine(e) },
        'fetching an upload from its replica failed',
      );
      throw new UploadUnavailableError(id, rec.holder, firstLine(e));
    }
    return { id, sha: rec.sha, sizeBytes: rec.sizeBytes };
  }

  return {
    dir: o.dir,
    async ingest(body, declaredLength) {
      if (declaredLength !== undefined && declaredLength > o.limitBytes) {
        body.resume();
        throw new UploadTooLargeError(o.limitBytes);
      }
      await mkdir(o.dir, { recursive: true, mode: 0o700 });
      const id = `u${randomBytes(12).toString('hex')}`;
      const bundle = join(o.dir, `.in-${id}.bundle`);
      let size = 0;
      try {
        const out = createWriteStream(bundle, { mode: 0o600 });
        await pipeline(
          body,
          async function* (source) {
            for await (const chunk of source) {
              size += (chunk as Buffer).length;
              if (size > o.limitBytes) throw new UploadTooLargeError(o.limitBytes);
              yield chunk;
            }
          },
          out,
        );
        const repo = repoOf(id);
        await git(['init', '--bare', '--quiet', repo], 'git init');
        try {
          await git(['--git-dir', repo, 'bundle', 'verify', '--quiet', bundle], 'git bundle verify');
        } catch (e) {
          throw new InvalidInputError(
            'body',
            `not a git bundle of one commit at refs/heads/main (${firstLine(e)})`,
          );
        }
        try {
          await git(
            [
              '-c',
              'transfer.fsckObjects=true',
              ...FSCK_FETCH,
              '--git-dir',
              repo,
              'fetch',
              '--quiet',
              '--no-tags',
              bundle,
              'refs/heads/main:refs/heads/main',
            ],
            'git fetch (bundle)',
          );
        } catch (e) {
          throw new InvalidInputError('body', `the tree was refused: ${firstLine(e)}`);
        }
        // Checked again as a whole (a fetch from a bundle does not run every check on every git).
        try {
          await git(
            [
              '-c',
              'fsck.skipList=/dev/null',
              ...FSCK_ALL,
              '--git-dir',
              repo,
              'fsck',
              '--strict',
              '--no-dangling',
              '--no-progress',
            ],
            'git fsck',
          );
        } catch (e) {
          throw new InvalidInputError('body', `the tree was refused: ${firstLine(e)}`);
        }
        const sha = await git(['--git-dir', repo, 'rev-parse', 'refs/heads/main^{commit}'], 'git rev-parse');
        const upload: Upload = { id, sha, sizeBytes: size };
        const createdMs = Date.now();
        await writeFile(metaOf(id), JSON.stringify({ ...upload, createdMs }), { mode: 0o600 });
        await writeRecord(id, { sha, sizeBytes: size, createdMs, holder: o.selfUrl() });
        log.info({ upload: id, sha, bytes: size }, 'tree uploaded');
        return upload;
      } catch (e) {
        await remove(id);
        throw e;
      } finally {
        await rm(bundle, { force: true });
      }
    },
    get,
    async readFile(id, files) {
      const m = await get(id);
      if (!m) return undefined;
      for (const path of files) {
        try {
          const text = await git(['--git-dir', repoOf(id), 'show', `${m.sha}:${path}`], 'git show');
          return { path, text };
        } catch (e) {
          if (e instanceof HostCommandError) continue;
          throw e;
        }
      }
      return undefined;
    },
    async claim(id, buildId) {
      // Only an upload that still exists: a claim never makes a record of its own.
      await o.redis.eval(
        "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'build', ARGV[1]) end",
        1,
        o.keys.upload(id),
        buildId,
      );
    },
    remove,
    async sweep(now = Date.now()) {
      const removed: string[] = [];
      for (const name of await readdir(o.dir).catch(() => [] as string[])) {
        const id = name.replace(/\.json$/, '');
        if (!name.endsWith('.json') || !ID.test(id)) {
          // A bundle left by a crashed upload, or a crashed fetch from another replica.
          if (name.startsWith('.in-') || name.startsWith('.pull-')) {
            const st = await stat(join(o.dir, name)).catch(() => undefined);
            if (st && now - st.mtimeMs > o.unusedTtlMs)
              await rm(join(o.dir, name), { recursive: true, force: true });
          }
          continue;
        }
        const m = await readMeta(id);
        if (!m) continue;
        const rec = (await record(id)) ?? (await adopt(m));
        // Removed by another replica (its build's retention ended): this copy goes too. A fresh
        // ingest writes its file before its record: left a minute.
        if (!rec && now - m.createdMs > 60_000) {
          await removeLocal(id);
          removed.push(id);
        } else if (rec && !rec.build && now - rec.createdMs > o.unusedTtlMs) {
          await remove(id);
          removed.push(id);
        }
      }
      return removed;
    },
  };
}

function firstLine(e: unknown): string {
  return (
    toError(e)
      .message.split('\n')
      .find((l) => l.trim()) ?? ''
  ).slice(0, 300);
}

/**
 * Answers one request of git's smart HTTP protocol for an upload (`info/refs` and
 * `git-upload-pack` only: nothing can be pushed) with `git http-backend`. The pack is streamed
 * (`body`), never held whole in memory: the jobs of one build fetch a tree of up to the upload
 * limit at once. `signal` (the request going away) ends git.
 */
export async function serveUploadGit(o: {
  dir: string;
  path: string;
  query: string;
  method: string;
  contentType?: string | undefined;
  body?: Buffer;
  signal?: AbortSignal;
}): Promise<{ status: number; headers: Record<string, string>; body: Readable }> {
  const cgi = spawn('git', ['http-backend'], {
    env: {
      ...GIT_ENV,
      PATH: '/usr/bin:/bin',
      GIT_PROJECT_ROOT: o.dir,
      GIT_HTTP_EXPORT_ALL: '1',
      PATH_INFO: o.path,
      QUERY_STRING: o.query,
      REQUEST_METHOD: o.method,
      CONTENT_TYPE: o.contentType ?? '',
      CONTENT_LENGTH: String(o.body?.length ?? 0),
      REMOTE_ADDR: '127.0.0.1',
    },
    stdio: ['pipe', 'pipe', 'ignore'],
    ...(o.signal ? { signal: o.signal } : {}),
  });
  cgi.on('error', () => undefined);
  // git may answer before it has read the whole request (an error): not a reason to throw.
  cgi.stdin.on('error', () => undefined);
  cgi.stdin.end(o.body ?? Buffer.alloc(0));
  // The CGI header first (small), then the rest of stdout as the response body, as it comes.
  let head = Buffer.alloc(0);
  let split = -1;
  const stdout = cgi.stdout;
  while (split < 0) {
    const chunk = (stdout.read() as Buffer | null) ?? (await nextChunk(stdout));
    if (!chunk)
      return { status: 502, headers: {}, body: Readable.from([Buffer.from('git http-backend failed\n')]) };
    head = Buffer.concat([head, chunk]);
    split = head.indexOf('\r\n\r\n');
    if (split < 0 && head.length > 64 * 1024) {
      cgi.kill();
      return { status: 502, headers: {}, body: Readable.from([Buffer.from('git http-backend failed\n')]) };
    }
  }
  let status = 200;
  const headers: Record<string, string> = {};
  for (const line of head.subarray(0, split).toString().split('\r\n')) {
    const i = line.indexOf(':');
    const k = line.slice(0, i).trim();
    const v = line.slice(i + 1).trim();
    if (k.toLowerCase() === 'status') status = Number(v.split(' ')[0]);
    else if (k) headers[k] = v;
  }
  const rest = head.subarray(split + 4);
  if (rest.length > 0) stdout.unshift(rest);
  return { status, headers, body: stdout };
}

/** The next chunk of a readable stream, or undefined at its end. */
function nextChunk(r: Readable): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const done = () => {
      r.off('readable', ready);
      r.off('end', done);
      r.off('close', done);
      resolve(undefined);
    };
    const ready = () => {
      const c = r.read() as Buffer | null;
      if (c === null) return;
      r.off('readable', ready);
      r.off('end', done);
      r.off('close', done);
      resolve(c);
    };
    r.on('readable', ready);
    r.once('end', done);
    r.once('close', done);
  });
}
