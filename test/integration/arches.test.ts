import { describe, expect, it } from 'vitest';
import { ARCH_INFO, ARCHES, type Arch } from '../../src/core/index.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { collect, createTestHost, type TestHost } from '../support/test-host.ts';

const hosts = new Map<Arch, TestHost>();
const host = async (arch: Arch) => {
  let h = hosts.get(arch);
  if (!h) {
    h = await createTestHost(arch);
    hosts.set(arch, h);
  }
  return h;
};

checkLeftovers('each', async () => {
  for (const h of hosts.values()) await h.launcher.close();
  hosts.clear();
});

describe.each(ARCHES)('%s', (arch) => {
  it(`runs busybox and reports ${ARCH_INFO[arch].uname}, ${ARCH_INFO[arch].bigEndian ? 'big' : 'little'}-endian`, async () => {
    const h = await host(arch);
    expect(h.runtime.emulated).toBe(arch !== 'amd64');
    // `od` prints the two bytes of "I\0"... as one 16-bit word in the machine's own byte order.
    const job = await h.launcher.launch({
      jobId: `arch-${arch}`,
      image: 'busybox',
      argv: ['sh', '-c', 'uname -m; printf "I\\000" | od -An -tx2 | tr -d " "'],
    });
    const r = await collect(job);
    expect(r.exitCode).toBe(0);
    const [uname, word] = r.output.trim().split('\n');
    expect(uname).toBe(ARCH_INFO[arch].uname);
    expect(word).toBe(ARCH_INFO[arch].bigEndian ? '4900' : '0049');
  });
});
