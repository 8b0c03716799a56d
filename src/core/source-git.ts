import { isIP } from 'node:net';
import { HOST_ENV } from './host/run-command.ts';
import type { CheckedSourceUrl } from './source-url.ts';

/**
 * git's environment for a fetch of a user's source URL (a worker's mirror, the API's read of a
 * config): no user or system config, no prompts, no credential helper, no hooks, only the
 * transports archway fetches with (no ext::, file:// or ssh through a submodule or a redirect; and
 * with `network: false` none at all, so a local command cannot lazily fetch from a partial clone's
 * remote), no redirects, and `extra` (the address pin, an Authorization header for one host),
 * given as config in the environment (never in argv).
 */
export function sourceGitEnv(
  allowLoopback: boolean,
  extra: [string, string][] = [],
  opts: { network?: boolean } = {},
): Record<string, string> {
  const network = opts.network ?? true;
  const config: [string, string][] = [
    ['protocol.allow', 'never'],
    ...(network
      ? ([
          ['protocol.https.allow', 'always'],
          ['protocol.git.allow', 'always'],
          ...(allowLoopback ? [['protocol.http.allow', 'always'] as [string, string]] : []),
        ] as [string, string][])
      : []),
    ['credential.helper', ''],
    ['core.hooksPath', '/dev/null'],
    ['gc.auto', '0'],
    // A redirect would send git to a host nobody checked (and resolved without the pin).
    ['http.followRedirects', 'false'],
    ...extra,
  ];
  const env: Record<string, string> = {
    ...HOST_ENV,
    GIT_TERMINAL_PROMPT: '0',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    HOME: '/nonexistent',
    GIT_CONFIG_COUNT: String(config.length),
  };
  config.forEach(([k, v], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = k;
    env[`GIT_CONFIG_VALUE_${i}`] = v;
  });
  return env;
}

/**
 * How git connects to the checked address and no other: https (and http, for loopback tests)
 * through curl's resolve pin for the URL's host and port, so TLS still checks the name; git://
 * by the address itself in the URL (its protocol names the host only as a virtual-host hint).
 */
export function pinSourceUrl(src: CheckedSourceUrl): { url: string; config: [string, string][] } {
  const addr = src.addresses[0] as string;
  const literal = isIP(addr) === 6 ? `[${addr}]` : addr;
  const u = src.url;
  if (u.protocol === 'git:') {
    const pinned = new URL(u.href);
    pinned.hostname = literal;
    return { url: pinned.href, config: [] };
  }
  const port = u.port || (u.protocol === 'https:' ? '443' : '80');
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return { url: u.href, config: [['http.curloptResolve', `${host}:${port}:${literal}`]] };
}
