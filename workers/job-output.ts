import { Socket, type SocketConstructorOpts } from 'node:net';
import { Readable } from 'node:stream';

/** Bytes of one read of a job's output: a pipe's whole default capacity. */
const READ_BYTES = 64 * 1024;

/**
 * Takes one read of the job's output. `data` is a view of a buffer that the next read reuses:
 * copy what you keep before returning. Return false to stop reading until `resume()` is called.
 */
export type OutputSink = (data: Buffer) => boolean;

/**
 * The read end of a job's output FIFO. Every read lands in one buffer, reused: a fast job gives
 * tens of thousands of reads (a pipe read is what the job's last write left in it, often 4 KiB),
 * and a fresh buffer for each was most of what the worker's garbage collector had to do
 * (docs/benchmarks.md, log throughput). Read it in one of two ways:
 * - `drain(sink)`: each read handed to `sink` in place (the log writer copies it into its own
 *   reused blocks), resolving when the output ends;
 * - as a Readable (`on('data')`, `for await`): each read copied into a buffer of its own.
 */
export class JobOutput extends Readable {
  readonly #socket: Socket;
  #sink: OutputSink | undefined;
  #ended: Promise<void>;

  constructor(fd: number) {
    super();
    const buffer = Buffer.allocUnsafeSlow(READ_BYTES);
    // `onread` (Node >= 12 for sockets of an fd too) is missing from @types/node's constructor options.
    const onread = { buffer, callback: (n: number, buf: Uint8Array) => this.#read(n, buf) };
    this.#socket = new Socket({ fd, readable: true, writable: false, onread } as SocketConstructorOpts);
    this.#ended = new Promise((resolve, reject) => {
      this.#socket.once('end', resolve);
      this.#socket.once('error', reject);
    });
    this.#ended.then(
      () => this.push(null),
      (e: unknown) => this.destroy(e instanceof Error ? e : new Error(String(e))),
    );
  }

  #read(n: number, buf: Uint8Array): boolean {
    const view = Buffer.from(buf.buffer, buf.byteOffset, n);
    if (this.#sink) return this.#sink(view);
    return this.push(Buffer.from(view));
  }

  /** As a Readable: the consumer wants more. */
  override _read(): void {
    this.#socket.resume();
  }

  /** Destroyed (by its consumer, or on a read error): the FIFO's read end is closed too. */
  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.#socket.destroy();
    cb(err);
  }

  /**
   * Hands every read to `sink` until the output ends (what was read before, held as a Readable's,
   * goes first). Call it once, and do not read the stream otherwise.
   */
  async drain(sink: OutputSink): Promise<void> {
    this.#draining = true;
    let held: Buffer | null;
    // What the Readable holds, and whatever arrives while the sink holds it up, in order (reads go
    // on into the Readable's buffer until the sink is in place).
    // biome-ignore lint/suspicious/noAssignInExpressions: read until empty
    while ((held = this.read() as Buffer | null) !== null) if (!sink(held)) await this.#waitResume();
    this.#sink = sink;
    this.#socket.resume();
    // The Readable side ends too (its 'end' needs a consumer): nothing more is pushed into it.
    super.resume();
    await this.#ended;
  }

  /** Set by `drain`: from then on `resume` never makes the Readable flow (its data would go to no one). */
  #draining = false;
  #resumed: (() => void) | undefined;
  #waitResume(): Promise<void> {
    return new Promise((resolve) => {
      this.#resumed = resolve;
    });
  }

  /** After a sink returned false: reads go on. As a Readable: flowing mode, as usual. */
  override resume(): this {
    const r = this.#resumed;
    this.#resumed = undefined;
    r?.();
    if (this.#sink) this.#socket.resume();
    else if (!this.#draining) super.resume();
    return this;
  }
}
