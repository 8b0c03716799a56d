import { ArchwayError } from './archway-error.ts';

/** A host command (btrfs, runc, mount, ...) failed. An infrastructure failure: retryable elsewhere. */
export class HostCommandError extends ArchwayError {
  readonly command: string;
  readonly exitCode: number | undefined;
  constructor(command: string, exitCode: number | undefined, stderr: string, cause?: unknown) {
    const detail = stderr.trim().split('\n').slice(-3).join(' | ');
    super(
      'HOST_COMMAND_FAILED',
      `${command} failed${exitCode === undefined ? '' : ` (exit ${exitCode})`}: ${detail}`,
      {
        infra: true,
        cause,
      },
    );
    this.command = command;
    this.exitCode = exitCode;
  }
}
