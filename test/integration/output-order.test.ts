import { beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type TestCluster } from '../support/cluster.ts';
import { checkLeftovers } from '../support/leak-check.ts';
import { collect, createTestHost } from '../support/test-host.ts';

// Issue 10, item 4: stdout and stderr are one stream from the job's process to its log.
let c: TestCluster;
beforeAll(async () => {
  c = await startCluster();
  await c.addWorker('amd64', { slots: 1, warm: 1 });
  await c.addWorker('arm64', { slots: 1, warm: 0 });
});
checkLeftovers('all', () => c?.close());

/** What the job itself wrote, without the worker's `[archway]` lines. */
async function jobOutput(id: string): Promise<string[]> {
  return (await c.log(id)).split('\n').filter((l) => l !== '' && !l.startsWith('[archway]'));
}

const WRITES = 1000;
/** WRITES writes, alternating between fd 1 and fd 2, each a line naming its number and stream. */
const INTERLEAVE = `i=0; while [ $i -lt ${WRITES / 2} ]; do echo "out $i"; echo "err $i" >&2; i=$((i + 1)); done`;
const interleaved = Array.from({ length: WRITES }, (_, n) => `${n % 2 ? 'err' : 'out'} ${Math.floor(n / 2)}`);

describe('stdout and stderr keep the order they were written in', () => {
  it.each(['amd64', 'arm64'] as const)('1,000 alternating writes on %s', async (arch) => {
    const id = await c.submit({ arch, image: 'busybox', script: INTERLEAVE });
    expect(await c.waitFinal(id, 60_000)).toMatchObject({ state: 'passed', exitCode: 0 });
    expect(await jobOutput(id)).toEqual(interleaved);
  });

  it("a failing command's error comes before what was echoed after it, and the exit code holds", async () => {
    const id = await c.submit({ arch: 'amd64', image: 'busybox', script: 'ls /nope; echo after; exit 3' });
    expect(await c.waitFinal(id)).toMatchObject({ state: 'failed', exitCode: 3 });
    expect(await jobOutput(id)).toEqual(['ls: /nope: No such file or directory', 'after']);
  });

  it('a job may reopen its own stdout and stderr (/dev/stdout, /dev/stderr), in order', async () => {
    const id = await c.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'echo one > /dev/stdout; echo two > /dev/stderr; echo three',
    });
    expect(await c.waitFinal(id)).toMatchObject({ state: 'passed', exitCode: 0 });
    expect(await jobOutput(id)).toEqual(['one', 'two', 'three']);
  });

  it('fd 1 and 2 are one FIFO, not a terminal; stdin is empty', async () => {
    const id = await c.submit({
      arch: 'arm64',
      image: 'busybox',
      script: [
        'test -p /proc/self/fd/1 && test ! -t 1 && test ! -t 2',
        // $$: the script's shell (inside $(...) fd 1 is the substitution's pipe).
        'test "$(readlink /proc/$$/fd/1)" = "$(readlink /proc/$$/fd/2)"',
        'read -r line || echo "stdin ended"',
      ],
    });
    expect(await c.waitFinal(id)).toMatchObject({ state: 'passed', exitCode: 0 });
    expect(await jobOutput(id)).toContain('stdin ended');
  });

  it("a job can neither write its exit status on the host's status FIFO nor hold it open", async () => {
    const id = await c.submit({
      arch: 'amd64',
      image: 'busybox',
      // The wrapper (the script's parent) holds the status FIFO as its fd 3.
      script: 'echo 0 > /proc/$PPID/fd/3; sleep 1 9> /proc/$PPID/fd/3; exit 7',
    });
    expect(await c.waitFinal(id)).toMatchObject({ state: 'failed', exitCode: 7 });
    const out = await jobOutput(id);
    expect(out).toHaveLength(2);
    for (const line of out) expect(line).toMatch(/Permission denied/);
  });

  it('a command that is not there: 127, and the shell says why in the output', async () => {
    const h = await createTestHost('arm64');
    try {
      const job = await h.launcher.launch({
        jobId: 'no-such-command',
        image: 'busybox',
        argv: ['/no/such/command', 'x'],
        timeoutSeconds: 30,
      });
      const r = await collect(job);
      expect(r.exitCode).toBe(127);
      expect(r.output).toMatch(/\/no\/such\/command/);
    } finally {
      await h.launcher.close();
    }
  });

  it("a job that closes its own stdout and stderr still ends with its exit code, not the host's guess", async () => {
    const id = await c.submit({
      arch: 'amd64',
      image: 'busybox',
      script: 'echo before; exec >&- 2>&-; sleep 0.2; exit 5',
    });
    expect(await c.waitFinal(id)).toMatchObject({ state: 'failed', exitCode: 5 });
    expect(await jobOutput(id)).toEqual(['before']);
  });
});
