import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { InvalidInputError } from './errors/invalid-input-error.ts';

/**
 * A job's `source.git`: who may be fetched from. A worker fetches on the host side, so a URL is a
 * request the host makes on a user's behalf: only remote https and git URLs, never `file://`, a
 * local path, ssh (the host's keys), or an address of the host or its networks: loopback,
 * unspecified, private (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), link-local (169.254/16,
 * fe80::/10, the cloud metadata service), multicast and reserved ranges, in every spelling (the
 * WHATWG URL parser turns `2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1` into `127.0.0.1`; an
 * IPv4 address inside IPv6, mapped, NAT64 or 6to4, counts as that IPv4 address).
 */
export interface SourceUrlPolicy {
  /**
   * Allow URLs that name or resolve to a loopback address (127/8, ::1, localhost), and plain
   * `http://` to them: for tests with a local git server. Default false.
   */
  allowLoopback?: boolean;
  /**
   * The operator's allow-list for private git servers (ARCHWAY_SOURCE_ALLOW): CIDRs
   * (`10.20.0.0/16`, `fd12::/48`), single addresses, and host names (`git.corp.example`, or
   * `*.corp.example` for its subdomains) whose addresses may be anywhere. Default empty.
   */
  allow?: readonly string[];
  /** Plain `http://` to any allowed host, not only to loopback: for the API's own upload URLs. */
  allowHttp?: boolean;
}

/**
 * The policy for a tree uploaded to this installation's API (a job's `source.upload`): its URL is
 * the API's own (`ARCHWAY_PUBLIC_URL`, or where `up`'s API listens), written by the API and never
 * by a user, so it is fetched wherever the operator put the API: loopback, a private address,
 * plain http. Only that host is allowed.
 */
export function uploadSourcePolicy(url: string): Required<SourceUrlPolicy> {
  let host = '';
  try {
    host = new URL(url).hostname.toLowerCase().replace(/^\[|\]$/g, '');
  } catch {
    // parseSourceUrl names the bad URL.
  }
  return { allowLoopback: true, allowHttp: true, allow: host ? [host] : [] };
}

/** The parts of a source URL archway uses. */
export interface SourceUrl {
  url: URL;
  /** `host[:port]`, lower-case: the mirror's directory and what a credential is bound to. */
  host: string;
  /** `owner/name` (the path without `.git`), or the path's segments joined with `/`. */
  path: string;
}

/** A source URL whose host was resolved and checked: the addresses a fetch may connect to. */
export interface CheckedSourceUrl extends SourceUrl {
  /** At least one; connect to these only (a second lookup may answer otherwise: DNS rebinding). */
  addresses: string[];
}

const LOOPBACK_NAMES = new Set(['localhost', 'localhost.localdomain', 'ip6-localhost', 'ip6-loopback']);

type AddressKind =
  | 'loopback'
  | 'unspecified'
  | 'private'
  | 'shared (carrier-grade NAT)'
  | 'link-local'
  | 'multicast'
  | 'reserved';

const DENIED: [string, number, 'ipv4' | 'ipv6', AddressKind][] = [
  ['0.0.0.0', 8, 'ipv4', 'unspecified'],
  ['127.0.0.0', 8, 'ipv4', 'loopback'],
  ['10.0.0.0', 8, 'ipv4', 'private'],
  ['172.16.0.0', 12, 'ipv4', 'private'],
  ['192.168.0.0', 16, 'ipv4', 'private'],
  ['100.64.0.0', 10, 'ipv4', 'shared (carrier-grade NAT)'],
  ['169.254.0.0', 16, 'ipv4', 'link-local'],
  ['192.0.0.0', 24, 'ipv4', 'reserved'],
  ['198.18.0.0', 15, 'ipv4', 'reserved'],
  ['224.0.0.0', 4, 'ipv4', 'multicast'],
  ['240.0.0.0', 4, 'ipv4', 'reserved'],
  ['::', 128, 'ipv6', 'unspecified'],
  ['::1', 128, 'ipv6', 'loopback'],
  ['::', 96, 'ipv6', 'reserved'], // IPv4-compatible (deprecated)
  ['fc00::', 7, 'ipv6', 'private'],
  ['fe80::', 10, 'ipv6', 'link-local'],
  ['fec0::', 10, 'ipv6', 'private'], // site-local (deprecated)
  ['ff00::', 8, 'ipv6', 'multicast'],
  ['100::', 64, 'ipv6', 'reserved'], // discard
  ['2001::', 32, 'ipv6', 'reserved'], // Teredo: an IPv4 address in disguise
  ['2001:db8::', 32, 'ipv6', 'reserved'], // documentation
];
const DENY_LISTS = DENIED.map(([addr, prefix, type, kind]) => {
  const l = new BlockList();
  l.addSubnet(addr, prefix, type);
  return { list: l, kind };
});

/** The 8 groups of an IPv6 address. */
function ipv6Groups(addr: string): number[] {
  let a = addr;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (v4) {
    const [x, y, z, w] = v4.slice(1).map(Number) as [number, number, number, number];
    a = `${a.slice(0, v4.index)}${((x << 8) | y).toString(16)}:${((z << 8) | w).toString(16)}`;
  }
  const [head = '', tail] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const fill = tail === undefined ? [] : new Array<string>(8 - h.length - t.length).fill('0');
  return [...h, ...fill, ...t].map((g) => Number.parseInt(g, 16));
}

/** The IPv4 address an IPv6 address carries (mapped, NAT64 64:ff9b::/96, 6to4 2002::/16), if any. */
function embeddedIpv4(addr: string): string | undefined {
  const g = ipv6Groups(addr);
  const v4 = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return v4(g[6] as number, g[7] as number);
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0))
    return v4(g[6] as number, g[7] as number);
  if (g[0] === 0x2002) return v4(g[1] as number, g[2] as number);
  return undefined;
}

/** Why archway never fetches from `addr` (an IP address without brackets), or undefined when it may. */
export function deniedAddressKind(addr: string): AddressKind | undefined {
  const a = addr.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const type = isIP(a);
  if (type === 0) return undefined;
  if (type === 6) {
    const inner = embeddedIpv4(a);
    if (inner) return deniedAddressKind(inner);
  }
  return DENY_LISTS.find((d) => d.list.check(a, type === 4 ? 'ipv4' : 'ipv6'))?.kind;
}

/** The operator's allow-list, parsed: CIDRs and addresses in a BlockList, host names apart. */
interface AllowList {
  addresses: BlockList;
  names: string[];
}

const allowCache = new WeakMap<readonly string[], AllowList>();

/**
 * Checks one entry of ARCHWAY_SOURCE_ALLOW; returns an error message, or undefined when valid.
 * Entries: a CIDR (`10.0.0.0/8`, `fd00::/8`), an address, or a host name (`git.corp.example`,
 * `*.corp.example`).
 */
export function allowEntryError(entry: string): string | undefined {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(entry);
  if (m) {
    const type = isIP(m[1] as string);
    const bits = Number(m[2]);
    if (type === 0) return `'${entry}': '${m[1]}' is not an IP address`;
    if (bits > (type === 4 ? 32 : 128)) return `'${entry}': prefix /${bits} is too long`;
    return undefined;
  }
  if (isIP(entry)) return undefined;
  if (/^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]*[a-z0-9])?$/i.test(entry))
    return undefined;
  return `'${entry}' is neither a CIDR, an IP address nor a host name`;
}

function allowListOf(policy: SourceUrlPolicy): AllowList {
  const entries = policy.allow ?? [];
  let l = allowCache.get(entries);
  if (l) return l;
  l = { addresses: new BlockList(), names: [] };
  for (const e of entries) {
    const m = /^([^/]+)\/(\d{1,3})$/.exec(e);
    const type = isIP(m ? (m[1] as string) : e);
    if (m && type) l.addresses.addSubnet(m[1] as string, Number(m[2]), type === 4 ? 'ipv4' : 'ipv6');
    else if (type) l.addresses.addAddress(e, type === 4 ? 'ipv4' : 'ipv6');
    else l.names.push(e.toLowerCase());
  }
  allowCache.set(entries, l);
  return l;
}

function nameAllowed(host: string, allow: AllowList): boolean {
  return allow.names.some((n) => (n.startsWith('*.') ? host.endsWith(n.slice(1)) : host === n));
}

/** Why `addr` may not be fetched from under `policy`, or undefined when it may. */
function refusedKind(addr: string, policy: SourceUrlPolicy, allow: AllowList): AddressKind | undefined {
  const kind = deniedAddressKind(addr);
  if (!kind) return undefined;
  // The host itself is never the operator's list's to allow; loopback only by the test switch.
  if (kind === 'loopback') return policy.allowLoopback ? undefined : kind;
  if (kind === 'unspecified') return kind;
  const a = addr.replace(/^\[|\]$/g, '');
  const inner = isIP(a) === 6 ? embeddedIpv4(a) : undefined;
  const type = isIP(inner ?? a) === 4 ? 'ipv4' : 'ipv6';
  return allow.addresses.check(inner ?? a, type) ? undefined : kind;
}

const describe = (kind: AddressKind) =>
  kind === 'loopback' ? "this host's loopback" : `${/^[aeiou]/.test(kind) ? 'an' : 'a'} ${kind} address`;
const hint = (kind: AddressKind) =>
  kind === 'loopback' || kind === 'unspecified'
    ? ''
    : '; an operator can allow a private git server with ARCHWAY_SOURCE_ALLOW';

/**
 * Checks a source URL without the network: scheme https or git (http only to loopback when
 * allowed), no credentials in it, a host name, and a repository path; a host that is an address
 * archway never fetches from (in any spelling), or a loopback name, is refused unless allowed.
 * Throws InvalidInputError naming `field`.
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
  const loopback = LOOPBACK_NAMES.has(host) || deniedAddressKind(host) === 'loopback';
  const schemes = [
    'https:',
    'git:',
    ...((policy.allowLoopback && loopback) || policy.allowHttp ? ['http:'] : []),
  ];
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
  if (LOOPBACK_NAMES.has(host) && !policy.allowLoopback) {
    throw new InvalidInputError(field, `host '${host}' is this host's loopback: it is never fetched from`);
  }
  const kind = refusedKind(host, policy, allowListOf(policy));
  if (kind) {
    throw new InvalidInputError(
      field,
      `host '${url.hostname}' is ${describe(kind)}: it is never fetched from${hint(kind)}`,
    );
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

/** How a host name is resolved; injectable for tests (a resolver that answers like a rebinding DNS). */
export type SourceResolver = (host: string) => Promise<{ address: string }[]>;

const systemResolver: SourceResolver = (host) => lookup(host, { all: true });

/**
 * parseSourceUrl, then resolves the host: refused when any of its addresses is one archway never
 * fetches from (unless allowed), or when the name does not resolve. The addresses returned are the
 * ones a fetch may connect to: a worker checks again at connect time and connects to exactly these.
 */
export async function checkSourceUrl(
  value: string,
  policy: SourceUrlPolicy = {},
  field = 'source.git',
  resolve: SourceResolver = systemResolver,
): Promise<CheckedSourceUrl> {
  const parsed = parseSourceUrl(value, policy, field);
  const host = parsed.url.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host) !== 0) return { ...parsed, addresses: [host] };
  let addrs: { address: string }[];
  try {
    addrs = await resolve(host);
  } catch {
    throw new InvalidInputError(field, `host '${host}' does not resolve`);
  }
  if (addrs.length === 0) throw new InvalidInputError(field, `host '${host}' does not resolve`);
  const allow = allowListOf(policy);
  if (!nameAllowed(host.toLowerCase(), allow)) {
    for (const a of addrs) {
      const kind = refusedKind(a.address, policy, allow);
      if (kind) {
        throw new InvalidInputError(
          field,
          `host '${host}' resolves to ${a.address}, ${describe(kind)}: it is never fetched from${hint(kind)}`,
        );
      }
    }
  }
  return { ...parsed, addresses: [...new Set(addrs.map((a) => a.address))] };
}

/** Where a job's source is placed in its container and where its script starts: `/root/build/<path>`. */
export function sourceBuildDir(path: string): string {
  return `/root/build/${path}`;
}
