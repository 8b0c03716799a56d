import { type Command, Option } from 'commander';

/**
 * `--log-format pretty|json` on a command that runs a process which logs (up, api, worker,
 * scaler, images build/publish): sets ARCHWAY_LOG_FORMAT for it and for what it starts.
 */
export function withLogFormat(cmd: Command, env: Record<string, string | undefined>): Command {
  return cmd
    .addOption(
      new Option(
        '--log-format <format>',
        'pretty (human lines) or json (default: pretty on a terminal)',
      ).choices(['pretty', 'json']),
    )
    .hook('preAction', (self) => {
      const format = self.opts<{ logFormat?: string }>().logFormat;
      if (format) env.ARCHWAY_LOG_FORMAT = format;
    });
}
