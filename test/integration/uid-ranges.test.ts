import { copyFile, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { imageForRange, rangeCopiesOf } from '../../images/index.ts';
import { poolLayout, runCommand } from '../../src/core/index.ts';
import type { LaunchedJob } from '../../workers/index.ts';
import { makeVersion, removeImage } from '../support/image-versions.ts';
import { collect, createTestHost, eventually, leftovers, type TestHost } from '../support/test-host.ts';

/**
 * Issue 9, point 2: every container has a uid range of its own, so a job that exhausts a
 * per-user kernel quota (keys, inotify instances) hurts only itself, and cannot read another
 * job's keys. The hostile jobs are a static C program (test/fixtures/probes/quota-probe.c)
 * placed in the container through the launcher's prepare hook.
 */

/** Per uid inside a container: small, so that a job reaches it quickly and the host's per-user limit is the container's total. */
const PER_UID_INOTIFY = 8;
const ENV = { ARCHWAY_CONTAINER_MAX_INOTIFY_INSTANCES: String(PER_UID_INOTIFY) };

let probe: string;
/** The same for arm64 (gcc-aarch64-linux-gnu), run through qemu-user like any arm64 job here. */
let probeArm64: string;
let scratch: string;
let amd64: TestHost;
let arm64: TestHost;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'quota-probe-'));
  probe = join(scratch, 'quota-probe');
  const source = join(import.meta.dirname, '../fixtures/probes/quota-probe.c');
  probeArm64 = join(scratch, 'quota-probe-arm64');
  await Promise.all([
    runCommand('gcc', ['-static', '-O2', '-o', probe, source]),
    runCommand('aarch64-linux-gnu-gcc', ['-static', '-O2', '-o', probeArm64, source]),
  ]);
  amd64 = await createTestHost('amd64', { env: ENV });
  arm64 = await createTestHost('arm64', { env: ENV });
});
afterEach(async () => {
  await Promise.all([amd64.launcher.close(), arm64.launcher.close()]);
  expect(await leftovers()).toEqual([]);
  amd64 = await createTestHost('amd64', { env: ENV });
  arm64 = await createTestHost('arm64', { env: ENV });
});
afterAll(async () => {
  await Promise.all([amd64.launcher.close(), arm64.launcher.close()]);
  await rm(scratch, { recursive: true, force: true });
});

/** Puts the probe at /quota-probe in the container, as the worker places a job's source. */
const withProbe = async (rootfs: string) => copyFile(probe, join(rootfs, 'quota-probe'));
const withArm64Probe = async (rootfs: string) => copyFile(probeArm64, join(rootfs, 'quota-probe'));

/** A job's output so far, read as it comes. */
function follow(job: LaunchedJob): { text: () => string } {
  let text = '';
  job.output.on('data', (c: Buffer) => {
    text += c.toString();
  });
  return { text: () => text };
}

/** Host uids (real, effective, saved, fs) of the init of the container a job runs in. */
async function uidsOf(h: TestHost, jobId: string): Promise<Set<string>> {
  const bundles = poolLayout(h.config.ARCHWAY_POOL_PATH).bundles;
  const ids: string[] = [];
  for (const id of await readdir(bundles)) {
    const meta = JSON.parse(await readFile(join(bundles, id, 'meta.json'), 'utf8')) as { jobId?: string };
    if (meta.jobId === jobId) ids.push(id);
  }
  const [id] = ids;
  if (!id || ids.length !== 1)
    throw new Error(`expected one container for ${jobId}, found ${ids.join(', ')}`);
  const initPid = (await readFile(join(bundles, id, 'init.pid'), 'utf8')).trim();
  const status = await readFile(`/proc/${initPid}/status`, 'utf8');
  const uid = status.match(/^Uid:\s+(.+)$/m)?.[1] ?? '';
  return new Set(uid.trim().split(/\s+/));
}

describe('a uid range per container', () => {
  it('runs two concurrent containers as different host uids, each owning its own files', async () => {
    const h = await createTestHost('amd64', { env: ENV, warm: { busybox: 1 } });
    try {
      await h.warmPool?.filled();
      const argv = [
        'sh',
        '-c',
        'id -u; stat -c %u /bin/busybox; cat /proc/self/uid_map; echo started; exec sleep 60',
      ];
      const a = await h.launcher.launch({ jobId: 'range-a', image: 'busybox', argv });
      const b = await amd64.launcher.launch({ jobId: 'range-b', image: 'busybox', argv });
      expect(a.warm).toBe(true);
      expect(b.warm).toBe(false);
      const [ta, tb] = [follow(a), follow(b)];
      await eventually(() => ta.text().includes('started') && tb.text().includes('started'), 'both started');
      // Inside, both are root and own their files.
      for (const t of [ta.text(), tb.text()]) expect(t).toMatch(/^0\n0\n/);
      const ua = await uidsOf(h, 'range-a');
      const ub = await uidsOf(amd64, 'range-b');
      expect(ua.size).toBe(1);
      expect(ub.size).toBe(1);
      const [hostA] = [...ua];
      const [hostB] = [...ub];
      expect(hostA).not.toBe(hostB);
      for (const u of [Number(hostA), Number(hostB)]) {
        expect(u).toBeGreaterThanOrEqual(h.config.ARCHWAY_UID_BASE);
        expect((u - h.config.ARCHWAY_UID_BASE) % h.config.ARCHWAY_UID_SIZE).toBe(0);
      }
      expect(ta.text()).toMatch(new RegExp(`^\\s*0\\s+${hostA}\\s+65536$`, 'm'));
      expect(tb.text()).toMatch(new RegExp(`^\\s*0\\s+${hostB}\\s+65536$`, 'm'));
      // From the host, each container's files belong to its own root uid.
      const rootfsOwners = await Promise.all(
        poolLayout(h.config.ARCHWAY_POOL_PATH).snapshotDirs.map(async (dir) => {
          const names = await readdir(dir);
          return Promise.all(names.map(async (n) => (await stat(join(dir, n, 'bin/busybox'))).uid));
        }),
      );
      expect(rootfsOwners.flat().map(String)).toEqual(expect.arrayContaining([hostA, hostB]));
      a.cancel();
      b.cancel();
      expect((await a.result).reason).toBe('canceled');
      expect((await b.result).reason).toBe('canceled');
    } finally {
      await h.launcher.close();
    }
  });

  // The hog runs natively: qemu-user answers add_key/keyctl with ENOSYS, so an emulated job holds
  // no keys; but runc makes a session keyring for every container of any arch, as the victims show.
  it("does not let a job holding keys up to its quota make another job's container fail, on either arch", async () => {
    // The seccomp filter denies the keyring calls to jobs (docs/security.md); the uid range must hold
    // even where a profile allows them, so the hog and the reader run without one.
    const unfiltered = await createTestHost('amd64', { env: ENV, seccompProfile: false });
    // A warm container made before the hog: only its exec (a session keyring too) comes after.
    const warm = await createTestHost('amd64', { env: ENV, warm: { busybox: 1 } });
    await warm.warmPool?.filled();
    const hog = await unfiltered.launcher.launch({
      jobId: 'keyhog',
      image: 'busybox',
      argv: ['/quota-probe', 'keys'],
      prepare: withProbe,
    });
    const out = follow(hog);
    await eventually(() => out.text().includes('ready'), 'the key hog to fill its quota', 30_000);
    // It ran into its own uid's quota (kernel.keys.maxkeys / maxbytes), not some other failure.
    expect(out.text()).toMatch(/keys: held \d+, then Disk quota exceeded/);
    expect(Number(out.text().match(/held (\d+)/)?.[1])).toBeGreaterThan(100);
    const keyId = out.text().match(/first key (\d+)/)?.[1];
    expect(Number(keyId)).toBeGreaterThan(0);

    // runc joins a new session keyring for every container and exec: with a shared uid, these failed.
    const [same, emulated, reader, warmExec] = await Promise.all([
      amd64.launcher.launch({ jobId: 'keys-victim', image: 'busybox', argv: ['echo', 'fine'] }).then(collect),
      arm64.launcher
        .launch({ jobId: 'keys-victim-arm', image: 'busybox', argv: ['echo', 'fine'] })
        .then(collect),
      unfiltered.launcher
        .launch({
          jobId: 'keys-reader',
          image: 'busybox',
          argv: ['/quota-probe', 'describe', String(keyId)],
          prepare: withProbe,
        })
        .then(collect),
      warm.launcher
        .launch({ jobId: 'keys-victim-warm', image: 'busybox', argv: ['echo', 'fine'] })
        .then(async (j) => {
          expect(j.warm).toBe(true);
          return collect(j);
        }),
    ]);
    await warm.launcher.close();
    expect(same).toMatchObject({ exitCode: 0, output: 'fine\n' });
    expect(emulated).toMatchObject({ exitCode: 0, output: 'fine\n' });
    expect(warmExec).toMatchObject({ exitCode: 0, output: 'fine\n' });
    // Another job's key is neither visible nor readable (it was with one uid for every job).
    expect(reader.exitCode).toBe(0);
    expect(reader.output).toContain('describe: Permission denied');
    expect(reader.output).toContain('read: Permission denied');
    hog.cancel();
    expect((await hog.result).reason).toBe('canceled');
    await unfiltered.launcher.close();
  });

  it("keeps a job exhausting inotify instances, under many uids, from host root's and other jobs'", async () => {
    const hostLimit = Number((await readFile('/proc/sys/fs/inotify/max_user_instances', 'utf8')).trim());
    const hog = await amd64.launcher.launch({
      jobId: 'inotifyhog',
      image: 'busybox',
      // 64 uids x 8 per uid is far past any per-user limit: only the container's own uid bounds it.
      argv: ['/quota-probe', 'inotify', '64'],
      prepare: withProbe,
    });
    const out = follow(hog);
    await eventually(() => out.text().includes('ready'), 'the inotify hog to fill its limits', 30_000);
    const m = out.text().match(/inotify: (\d+) instances over 64 uids, at most (\d+) for one uid/);
    expect(m, out.text()).not.toBeNull();
    // The per-uid limit set in the container's user namespace held...
    expect(Number(m?.[2])).toBe(PER_UID_INOTIFY);
    // ...and the container's total stopped at the host's per-user limit, charged to its own uid.
    expect(Number(m?.[1])).toBeGreaterThan(PER_UID_INOTIFY);
    expect(Number(m?.[1])).toBeLessThanOrEqual(hostLimit);

    // Host root (this test process runs as root) still gets an instance: run the probe on the host.
    expect(await runCommand(probe, ['inotify-one'])).toBe('inotify-one: ok');
    // So does another job, on this arch and the emulated one.
    const others = await Promise.all([
      amd64.launcher
        .launch({
          jobId: 'inotify-other',
          image: 'busybox',
          argv: ['/quota-probe', 'inotify-one'],
          prepare: withProbe,
        })
        .then(collect),
      arm64.launcher
        .launch({
          jobId: 'inotify-other-arm',
          image: 'busybox',
          argv: ['/quota-probe', 'inotify-one'],
          prepare: withArm64Probe,
        })
        .then(collect),
    ]);
    for (const other of others) expect(other).toMatchObject({ exitCode: 0, output: 'inotify-one: ok\n' });
    hog.cancel();
    expect((await hog.result).reason).toBe('canceled');
  });

  it("sets the user.max_* limits in the container's namespace, where the job cannot raise them", async () => {
    const r = await collect(
      await amd64.launcher.launch({
        jobId: 'ucounts',
        image: 'busybox',
        argv: [
          'sh',
          '-c',
          'cat /proc/sys/user/max_inotify_instances /proc/sys/user/max_inotify_watches /proc/sys/user/max_user_namespaces; echo 100000 > /proc/sys/user/max_inotify_instances && echo raised',
        ],
      }),
    );
    // (busybox's cat runs inside sh with buffered output: its lines may come after the error)
    const c = amd64.config;
    expect(r.output).toContain(
      `${PER_UID_INOTIFY}\n${c.ARCHWAY_CONTAINER_MAX_INOTIFY_WATCHES}\n${c.ARCHWAY_CONTAINER_MAX_NAMESPACES}\n`,
    );
    expect(r.output).toContain('Read-only file system');
    expect(r.output).not.toContain('raised');
    expect(r.exitCode).not.toBe(0);
  });

  it('makes a shifted copy of an image version per range once, keeping setuid and capabilities, and removes it with the version', async () => {
    const busybox = await amd64.store.resolve('busybox', 'amd64');
    const base = amd64.config.ARCHWAY_UID_BASE;
    const size = amd64.config.ARCHWAY_UID_SIZE;
    const v1 = await makeVersion(amd64.store, 'rangecopy', 'amd64', busybox, async (root) => {
      // As the build leaves them: owners shifted by the base the version was built under (the
      // owner of its root), capabilities with that rootid.
      const built = (await stat(root)).uid;
      await copyFile(join(root, 'bin/busybox'), join(root, 'suid'));
      await copyFile(join(root, 'bin/busybox'), join(root, 'capped'));
      await runCommand('chown', [`${built}:${built}`, join(root, 'suid'), join(root, 'capped')]);
      await runCommand('chmod', ['4755', join(root, 'suid')]);
      await runCommand('setcap', ['-n', String(built), 'cap_net_raw+ep', join(root, 'capped')]);
    });
    try {
      // Three at once hold three ranges: at least two are not range 0 and need a copy.
      const jobs = await Promise.all(
        [0, 1, 2].map((i) =>
          amd64.launcher.launch({
            jobId: `copy-${i}`,
            image: 'rangecopy',
            argv: ['sh', '-c', 'stat -c "%u %a" /suid; echo started; exec sleep 60'],
          }),
        ),
      );
      const outs = jobs.map(follow);
      await eventually(() => outs.every((o) => o.text().includes('started')), 'all three started');
      for (const o of outs) expect(o.text()).toMatch(/^0 4755\n/);
      const copies = await rangeCopiesOf(v1.path);
      expect(copies.length).toBeGreaterThanOrEqual(2);
      for (const k of copies) {
        const copy = join(`${v1.path}.ranges`, String(k));
        const st = await stat(join(copy, 'suid'));
        expect(st.uid).toBe(base + k * size);
        expect(st.gid).toBe(base + k * size);
        expect(st.mode & 0o7777).toBe(0o4755);
        expect(await runCommand('getcap', ['-n', join(copy, 'capped')])).toMatch(
          new RegExp(`cap_net_raw=ep \\[rootid=${base + k * size}\\]`),
        );
      }
      // Two makers of one (version, range) at once (two workers of a host): one copy, no leftovers.
      const range = { index: 7, shift: 7 * size, hostId: base + 7 * size };
      const [p1, p2] = await Promise.all([imageForRange(v1, range), imageForRange(v1, range)]);
      expect(p1).toBe(p2);
      expect((await stat(join(p1, 'suid'))).uid).toBe(base + 7 * size);
      expect((await readdir(`${v1.path}.ranges`)).sort()).toEqual([...copies.map(String), '7'].sort());
      for (const j of jobs) j.cancel();
      await Promise.all(jobs.map((j) => j.result));
      // A new version replaces it; removing the old one takes its copies too.
      await makeVersion(amd64.store, 'rangecopy', 'amd64', busybox);
      await amd64.launcher.close();
      await amd64.store.remove('rangecopy', 'amd64', v1.digest);
      expect(await rangeCopiesOf(v1.path)).toEqual([]);
      await expect(stat(`${v1.path}.ranges`)).rejects.toThrow(/ENOENT/);
    } finally {
      await removeImage(amd64.store, 'rangecopy');
    }
  });

  it('runs a version built under another uid base (ARCHWAY_UID_BASE changed since): its owners are moved to the range, not left to fail', async () => {
    const busybox = await amd64.store.resolve('busybox', 'amd64');
    const base = amd64.config.ARCHWAY_UID_BASE;
    const size = amd64.config.ARCHWAY_UID_SIZE;
    const old = base + 1000 * size; // a base this host does not use now
    const v1 = await makeVersion(amd64.store, 'oldbase', 'amd64', busybox, async (root) => {
      // As a build under the old base left it: every owner shifted by old - base more.
      await runCommand('chown', ['-R', '-h', `${old}:${old}`, root]);
    });
    try {
      expect((await stat(v1.path)).uid).toBe(old);
      const r = await collect(
        await amd64.launcher.launch({
          jobId: 'oldbase',
          image: 'oldbase',
          argv: ['sh', '-c', 'stat -c "%u" /bin/busybox; mkdir /made && echo made'],
        }),
      );
      expect(r.output).toBe('0\nmade\n');
      expect(r.exitCode).toBe(0);
      // Range 0 too gets a copy, since the version itself no longer fits any range of this base.
      const range0 = { index: 0, shift: 0, hostId: base };
      const copy0 = await imageForRange(v1, range0);
      expect(copy0).not.toBe(v1.path);
      expect((await stat(copy0)).uid).toBe(base);
      // A copy made under yet another base is made again, not reused with its stale owners.
      await runCommand('btrfs', ['property', 'set', copy0, 'ro', 'false']);
      await runCommand('chown', ['-h', `${old}:${old}`, copy0]);
      const again = await imageForRange(v1, range0);
      expect(again).toBe(copy0);
      expect((await stat(again)).uid).toBe(base);
      expect((await stat(join(again, 'bin/busybox'))).uid).toBe(base);
    } finally {
      await amd64.launcher.close();
      await removeImage(amd64.store, 'oldbase');
    }
  });
});
