import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runCommand } from '../../src/core/index.ts';
import { JobOutput } from '../../workers/index.ts';

let dir: string;
let fifo: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'archway-job-output-'));
  fifo = join(dir, 'output.fifo');
  await runCommand('mkfifo', [fifo]);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The FIFO opened as the runtime opens it: our read end (non-blocking) and the job's write end. */
function openFifo(): { output: JobOutput; writeFd: number } {
  const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeFd = openSync(fifo, constants.O_WRONLY);
  return { output: new JobOutput(readFd), writeFd };
}

const tick = (ms = 20) => new Promise((r) => setTimeout(r, ms));

describe('JobOutput', () => {
  it('drain: what came before goes first, then every read in place, paused while the sink says so, to the end', async () => {
    const { output, writeFd } = openFifo();
    writeSync(writeFd, 'early\n'); // before anyone drains: held as a Readable's
    await tick();
    const seen: string[] = [];
    let views = 0;
    let paused = false;
    const drained = output.drain((data) => {
      seen.push(data.toString());
      views++;
      if (views === 2) {
        // Hold the reads for a while: nothing more arrives until resume().
        paused = true;
        setTimeout(() => {
          paused = false;
          output.resume();
        }, 100);
        return false;
      }
      expect(paused).toBe(false);
      return true;
    });
    await tick();
    writeSync(writeFd, 'second\n');
    await tick();
    writeSync(writeFd, 'third\n'); // arrives while paused: read after resume()
    await tick();
    expect(seen.join('')).toBe('early\nsecond\n');
    await tick(150);
    expect(seen.join('')).toBe('early\nsecond\nthird\n');
    closeSync(writeFd);
    await drained;
  });

  it('drain: a sink that pauses on what came before loses nothing that arrives meanwhile, in order', async () => {
    const { output, writeFd } = openFifo();
    writeSync(writeFd, 'early\n');
    await tick();
    const seen: string[] = [];
    let first = true;
    const drained = output.drain((data) => {
      seen.push(data.toString());
      if (!first) return true;
      first = false;
      setTimeout(() => output.resume(), 100);
      return false;
    });
    await tick();
    writeSync(writeFd, 'during\n'); // while the sink holds the reads
    await tick(150);
    writeSync(writeFd, 'late\n');
    await tick();
    closeSync(writeFd);
    await drained;
    expect(seen.join('')).toBe('early\nduring\nlate\n');
  });

  it('drain hands out one buffer reused for every read: a sink that keeps a view without copying sees it overwritten', async () => {
    const { output, writeFd } = openFifo();
    const kept: Buffer[] = [];
    const copies: Buffer[] = [];
    const drained = output.drain((data) => {
      kept.push(data);
      copies.push(Buffer.from(data));
      return true;
    });
    for (const word of ['aaaa', 'bbbb', 'cccc']) {
      writeSync(writeFd, word);
      await tick();
    }
    closeSync(writeFd);
    await drained;
    expect(Buffer.concat(copies).toString()).toBe('aaaabbbbcccc');
    // The reads share one backing buffer: the first view now shows the last read.
    expect(new Set(kept.map((b) => b.buffer)).size).toBe(1);
    expect(kept[0]?.toString()).toBe('cccc');
  });

  it('as a Readable: each read its own buffer, backpressure while nobody reads, then the end', async () => {
    const { output, writeFd } = openFifo();
    // 1 MiB into a pipe of 64 KiB with nobody reading: the writer would block, so from a child.
    const writer = runCommand('sh', ['-c', `head -c 1048576 /dev/zero | tr '\\0' x > ${fifo}`]);
    await tick(200);
    // Not read yet: the stream holds at most its high-water mark plus a pipe read.
    expect(output.readableLength).toBeGreaterThan(0);
    expect(output.readableLength).toBeLessThanOrEqual(16 * 1024 + 64 * 1024);
    closeSync(writeFd); // the child's end is the last writer now
    const chunks: Buffer[] = [];
    for await (const c of output) chunks.push(c as Buffer);
    await writer;
    const all = Buffer.concat(chunks);
    expect(all.length).toBe(1048576);
    expect(all.every((b) => b === 0x78)).toBe(true);
    expect(new Set(chunks.map((c) => c.buffer)).size).toBe(chunks.length);
  });
});
