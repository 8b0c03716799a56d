import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { InvalidInputError } from './errors/invalid-input-error.ts';

/**
 * A job's `source.git`: who may be fetched from. A worker fetches on the host side, so a URL is a
 * request the host makes on a user's behalf: only remote https and git URLs, never `file://`, a
 * local path, ssh (the host's keys), or an address of the host itself.
 */
export interface SourceUrlPolicy {
  /**
   * Allow URLs that name or resolve to a loopback address (127/8, ::1, localhost), and plain
   * `http://` to them: for tests with a local git server. Default false.
   */
  allowLoopback?: boolean;
}

/** The parts of a source URL archway uses. */
export interface SourceUrl {
  url: URL;
  /** `host[:port]`, lower-case: the mirror's directory and what a credential is bound to. */
  host: string;
  /** `owner/name` (the path without `.git`), or the path's segments joined with `/`. */
  path: string;
}

const LOOPBACK_NAMES = new Set(['localhost', 'localhost.localdomain', 'ip6-localhost', 'ip6-loopback']);

function isLoopbackAddress(addr: string): boolean {
  if (isIP(addr) === 4) return addr.startsWith('127.') || addr === '0.0.0.0';
  const a = addr.toLowerCase().replace(/^\[|\]$/g, '');
  if (a === '::1' || a === '::') return true;
  // IPv4-mapped (::ffff:127.0.0.1)
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  return mapped?.[1] !== undefined && isLoopbackAddress(mapped[1]);
}

/**
 * Checks a source URL without the network: scheme https or git (http only to loopback when
 * allowed), no credentials in it, a host name, and a repository path; a loopback host is refused
 * unless allowed. Throws InvalidInputError naming `field`.
 */
export function parseSourceUrl(value: string, policy: SourceUrlPolicy = {}, field = 'source.git'): SourceUrl {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidInputError(
      field,
      `'${value}' is not a URL: give an https:// or git:// URL of a repository`,
    );
  }
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '');
  const loopback = LOOPBACK_NAMES.has(host) || (isIP(host) !== 0 && isLoopbackAddress(host));
  const schemes = ['https:', 'git:', ...(policy.allowLoopback && loopback ? ['http:'] : [])];
  if (!schemes.includes(url.protocol)) {
    throw new InvalidInputError(
      field,
      `scheme '${url.protocol.replace(/:$/, '')}' is not allowed: only https:// and git:// URLs are fetched`,
    );
  }
  if (url.username || url.password) {
    throw new InvalidInputError(
      field,
      'must not carry credentials: the URL is stored and shown with the job',
    );
  }
  if (!host) throw new InvalidInputError(field, 'has no host');
  if (loopback && !policy.allowLoopback) {
    throw new InvalidInputError(field, `host '${host}' is this host's loopback: it is never fetched from`);
  }
  const path = url.pathname
    .replace(/\.git\/?$/, '')
    .split('/')
    .filter(Boolean);
  if (path.length === 0 || path.some((s) => s === '..' || s === '.' || !/^[A-Za-z0-9_.~-]+$/.test(s))) {
    throw new InvalidInputError(field, `'${url.pathname}' is not a repository path such as /owner/name.git`);
  }
  if (url.search || url.hash) throw new InvalidInputError(field, 'must not have a query or a fragment');
  return { url, host: url.host.toLowerCase(), path: path.join('/') };
}

/**
 * parseSourceUrl, then resolves the host: refused when any of its addresses is a loopback (or
 * unspecified) address, unless allowed. A name that does not resolve is refused too.
 */
export async function checkSourceUrl(
  value: string,
  policy: SourceUrlPolicy = {},
  field = 'source.git',
): Promise<SourceUrl> {
  const parsed = parseSourceUrl(value, policy, field);
  if (policy.allowLoopback) return parsed;
  const host = parsed.url.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host) !== 0) return parsed;
  let addrs: { address: string }[];
  try {
    addrs = await lookup(host, { all: true });
  } catch {
    throw new InvalidInputError(field, `host '${host}' does not resolve`);
  }
  if (addrs.some((a) => isLoopbackAddress(a.address))) {
    throw new InvalidInputError(
      field,
      `host '${host}' resolves to this host's loopback: it is never fetched from`,
    );
  }
  return parsed;
}

/** Where a job's source is placed in its container and where its script starts: `/root/build/<path>`. */
export function sourceBuildDir(path: string): string {
  return `/root/build/${path}`;
}
