import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildImage } from '../../images/index.ts';
import { ImageNotFoundError } from '../../src/index.ts';
import { collect, createTestHost, leftovers, type TestHost } from '../support/test-host.ts';

const IMAGE = 'debian-bookworm-build';

/**
 * Opt-in (ARCHWAY_TEST_DEBIAN=1): the first run builds debian-bookworm-build for amd64 into the test
 * pool, about a minute on a 2-core VM and ~130 MB from the Debian mirror; later runs reuse it.
 */
describe.skipIf(process.env.ARCHWAY_TEST_DEBIAN !== '1')(`${IMAGE} (amd64)`, () => {
  const hosts: TestHost[] = [];
  const host = async () => {
    const h = await createTestHost('amd64');
    hosts.push(h);
    return h;
  };

  beforeAll(async () => {
    const h = await host();
    try {
      await h.store.resolve(IMAGE, 'amd64');
    } catch (e) {
      if (!(e instanceof ImageNotFoundError)) throw e;
      await buildImage(IMAGE, 'amd64', {
        store: h.store,
        cacheDir: `${h.config.ARCHWAY_POOL_PATH}/cache`,
        idBase: h.config.ARCHWAY_UID_BASE,
        mirror: h.config.ARCHWAY_DEBIAN_MIRROR,
        logger: h.logger,
      });
    }
  }, 900_000);
  afterEach(async () => {
    for (const h of hosts.splice(0)) await h.launcher.close();
    expect(await leftovers()).toEqual([]);
  });
  afterAll(async () => {
    for (const h of hosts.splice(0)) await h.launcher.close();
  });

  const run = async (jobId: string, script: string) =>
    collect(await (await host()).launcher.launch({ jobId, image: IMAGE, argv: ['sh', '-c', script] }));

  it('compiles and runs a C program with gcc', async () => {
    const r = await run(
      'debian-gcc',
      'printf \'int main(){return 42;}\' > /tmp/a.c && gcc /tmp/a.c -o /tmp/a; /tmp/a; echo "exit $?"',
    );
    expect(r.exitCode).toBe(0);
    expect(r.output).toBe('exit 42\n');
  });

  it('keeps setuid bits through the owner shift, and they take effect', async () => {
    // `passwd -S` reads /etc/shadow (root:shadow 0640): as nobody it only can when setuid root
    // works, and then prints the account's status (L, locked) instead of a bare P.
    const r = await run(
      'debian-setuid',
      'stat -c %A /usr/bin/passwd; setpriv --reuid=65534 --regid=65534 --clear-groups passwd -S nobody',
    );
    expect(r.exitCode).toBe(0);
    const [mode, status] = r.output.trim().split('\n');
    expect(mode).toBe('-rwsr-xr-x');
    expect(status).toMatch(/^nobody L /);
  });

  it("keeps setuid working in a uid range other than the image's own (its shifted copy)", async () => {
    // A container taken first holds a range; the next gets a higher one (the lowest free), never range 0.
    const h = await host();
    const holder = await h.launcher.launch({ jobId: 'debian-holder', image: IMAGE, argv: ['sleep', '60'] });
    holder.output.resume();
    try {
      const job = await h.launcher.launch({
        jobId: 'debian-setuid-range',
        image: IMAGE,
        argv: [
          'sh',
          '-c',
          'stat -c "%u %A" /usr/bin/passwd; setpriv --reuid=65534 --regid=65534 --clear-groups passwd -S nobody; cat /proc/self/uid_map',
        ],
      });
      const r = await collect(job);
      expect(r.exitCode).toBe(0);
      const [mode, status, map] = r.output.trim().split('\n');
      expect(mode).toBe('0 -rwsr-xr-x');
      expect(status).toMatch(/^nobody L /);
      const hostId = Number(map?.trim().split(/\s+/)[1]);
      expect(hostId).toBeGreaterThan(h.config.ARCHWAY_UID_BASE);
    } finally {
      holder.cancel();
      await holder.result;
    }
  });
});
