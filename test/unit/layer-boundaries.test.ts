import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '../..');

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(root, dir), { withFileTypes: true })) {
    const rel = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(rel)));
    else if (e.name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

/** Files of `dir` whose text matches `pattern`. */
async function offenders(dir: string, pattern: RegExp): Promise<string[]> {
  const files = await sources(dir);
  const hits = await Promise.all(
    files.map(async (f) => (pattern.test(await readFile(join(root, f), 'utf8')) ? f : undefined)),
  );
  return hits.filter((f): f is string => f !== undefined);
}

/** Every product folder but queue/, which owns the shared records and BullMQ. */
const OUTSIDE_QUEUE = ['src', 'workers', 'images', 'webhooks', 'ops'];

async function offendersOutsideQueue(pattern: RegExp): Promise<string[]> {
  return (await Promise.all(OUTSIDE_QUEUE.map((dir) => offenders(dir, pattern)))).flat();
}

describe("the product uses queue/'s door for what folders share (issue #14)", () => {
  it('imports bullmq only inside queue/', async () => {
    expect(await offendersOutsideQueue(/from ['"]bullmq['"]/)).toEqual([]);
  });

  it('reads and writes job hashes by key only inside queue/', async () => {
    expect(await offendersOutsideQueue(/keys\.job\(/)).toEqual([]);
  });
});

describe("workers/ uses queue/'s door for what folders share (issue #14)", () => {
  it('imports no bullmq: the job consumer in queue/ wraps it', async () => {
    expect(await offenders('workers', /from ['"]bullmq['"]/)).toEqual([]);
  });

  it("reads no job hash by key: the job store's readers do", async () => {
    expect(await offenders('workers', /keys\.job\(/)).toEqual([]);
  });

  it('defines the heartbeat period nowhere but queue/', async () => {
    expect(await offenders('workers', /HEARTBEAT_MS\s*=/)).toEqual([]);
  });
});
