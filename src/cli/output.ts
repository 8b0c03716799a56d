import { once } from 'node:events';

/**
 * Ends the process quietly when the reader of stdout or stderr has gone (`archway doctor |
 * head -1`): that is the reader's choice, not an error worth a stack trace (issue #10).
 */
export function exitQuietlyOnEpipe(o: { longRunning: boolean }): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') throw e;
      // A process that runs others (up) or serves (api, worker, scaler) must not die before its
      // own shutdown has run: it goes on without that output.
      if (!o.longRunning) process.exit(process.exitCode ?? 0);
    });
  }
}

/** Writes to stdout, waiting when its pipe is full (a 200 MB log must not pile up in memory). */
export async function out(text: string): Promise<void> {
  if (!process.stdout.write(text)) await once(process.stdout, 'drain');
}

/** Prints one JSON document (`--json`): the API's own shape, indented for people and parsed by scripts. */
export async function outJson(value: unknown): Promise<void> {
  await out(`${JSON.stringify(value, null, 2)}\n`);
}
