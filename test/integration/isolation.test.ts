import { readFile } from 'node:fs/promises';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { collect, createTestHost, eventually, leftovers, type TestHost } from '../support/test-host.ts';

let h: TestHost;
beforeAll(async () => {
  h = await createTestHost('amd64');
});
afterEach(async () => {
  await h.launcher.close();
  expect(await leftovers()).toEqual([]);
  h = await createTestHost('amd64');
});

describe('container isolation', () => {
  it("maps the container's uid 0 to the unprivileged host uid", async () => {
    const job = await h.launcher.launch({
      jobId: 'uidmap',
      image: 'busybox',
      argv: ['sh', '-c', 'id -u; cat /proc/self/uid_map; exec sleep 30'],
    });
    let text = '';
    job.output.on('data', (c: Buffer) => {
      text += c.toString();
    });
    await eventually(() => text.includes('65536'), 'the uid map');
    expect(text.split('\n')[0]).toBe('0');
    // Container root is the first uid of the container's own range: base + range * size.
    const id = await containerId(h);
    const meta = JSON.parse(await readFile(`${h.config.ARCHWAY_POOL_PATH}/bundles/${id}/meta.json`, 'utf8'));
    const hostUid = h.config.ARCHWAY_UID_BASE + meta.uidRange * h.config.ARCHWAY_UID_SIZE;
    expect(hostUid).toBeGreaterThanOrEqual(100000);
    expect(text).toMatch(new RegExp(`^\\s*0\\s+${hostUid}\\s+65536$`, 'm'));
    // From the host, the container's processes run as that uid.
    const pids = (
      await readFile(`/sys/fs/cgroup/pids/${h.config.ARCHWAY_CGROUP_PARENT}/${id}/cgroup.procs`, 'utf8')
    )
      .trim()
      .split('\n');
    for (const pid of pids) {
      const status = await readFile(`/proc/${pid}/status`, 'utf8');
      expect(status).toMatch(
        new RegExp(`^Uid:\\s+${hostUid}\\s+${hostUid}\\s+${hostUid}\\s+${hostUid}$`, 'm'),
      );
    }
    job.cancel();
    expect((await job.result).reason).toBe('canceled');
  });

  it('sees no host process and only the loopback interface', async () => {
    const r = await collect(
      await h.launcher.launch({
        jobId: 'iso',
        image: 'busybox',
        argv: ['sh', '-c', 'ls /sys/class/net; echo ---; ls -d /proc/[0-9]* | wc -l; echo ---; hostname'],
      }),
    );
    const [nets, procs, hostname] = r.output.split('---\n');
    expect(nets?.trim()).toBe('lo');
    // init, sh, ls|wc: a handful, never the host's hundreds
    expect(Number(procs?.trim())).toBeLessThan(10);
    expect(hostname?.trim()).toBe('iso');
    expect(r.exitCode).toBe(0);
  });

  it('cannot reach anything on the host, its loopback included (Redis, the API)', async () => {
    const { createServer } = await import('node:net');
    let connections = 0;
    const server = createServer((sock) => {
      connections++;
      sock.end('hello\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const r = await collect(
        await h.launcher.launch({
          jobId: 'netiso',
          image: 'busybox',
          argv: [
            'sh',
            '-c',
            `for a in 127.0.0.1 localhost; do if nc -w 2 $a ${port} </dev/null; then echo "reached $a"; else echo "no route to $a"; fi; done`,
          ],
        }),
      );
      expect(r.output).toContain('no route to 127.0.0.1');
      expect(r.output).toContain('no route to localhost');
      expect(r.output).not.toContain('reached');
      expect(connections).toBe(0);
    } finally {
      server.close();
    }
  });

  it('cannot write to /sys', async () => {
    const r = await collect(
      await h.launcher.launch({
        jobId: 'sysro',
        image: 'busybox',
        argv: ['sh', '-c', 'touch /sys/kernel/x 2>&1; mount | grep " /sys "'],
      }),
    );
    expect(r.output).toMatch(/Read-only file system/);
    expect(r.output).toMatch(/sysfs on \/sys type sysfs \(ro,/);
  });

  it('ends a fork bomb at the pids limit without harming the host', async () => {
    const job = await h.launcher.launch({
      jobId: 'forkbomb',
      image: 'busybox',
      argv: ['sh', '-c', 'bomb() { bomb | bomb & }; bomb; sleep 2; echo still-here'],
      limits: { pids: 64 },
      timeoutSeconds: 20,
    });
    const r = await collect(job);
    expect(r.output).toMatch(/can't fork|Resource temporarily unavailable|fork/i);
    // The host can still start processes: this test runner just did, and the next test will.
    const hostCheck = await collect(
      await h.launcher.launch({ jobId: 'after-bomb', image: 'busybox', argv: ['echo', 'ok'] }),
    );
    expect(hostCheck.output.trim()).toBe('ok');
  });

  it('kills a memory hog at its memory limit and says it ran out of memory', async () => {
    const r = await collect(
      await h.launcher.launch({
        jobId: 'memhog',
        image: 'busybox',
        argv: ['sh', '-c', 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo survived'],
        limits: { memoryMiB: 64 },
      }),
    );
    expect(r.reason).toBe('oom');
    expect(r.output).not.toContain('survived');
  });

  it('stops a job that writes past its disk limit', async () => {
    const r = await collect(
      await h.launcher.launch({
        jobId: 'diskhog',
        image: 'busybox',
        argv: ['sh', '-c', 'dd if=/dev/zero of=/big bs=1M count=200 2>&1; sync; echo rc=$?'],
        limits: { diskMiB: 32 },
        timeoutSeconds: 30,
      }),
    );
    expect(r.output).toMatch(/Disk quota exceeded|No space left/);
  });
});

async function containerId(host: TestHost): Promise<string> {
  const { readdir } = await import('node:fs/promises');
  const ids = await readdir(`${host.config.ARCHWAY_POOL_PATH}/bundles`);
  const [id] = ids;
  if (!id || ids.length !== 1) throw new Error(`expected one container, found ${ids.join(', ')}`);
  return id;
}
