import { mkdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  ArchwayError,
  createHostLeases,
  exists,
  HostRequirementError,
  hasCommand,
  isSubvolume,
  type Logger,
  leaseHolderAlive,
  type ProcessIdentity,
  processIdentity,
  runCommand,
  toError,
} from '../src/core/index.ts';

/** Host interfaces of job containers are named `awn<index>`; nothing else on the host is touched. */
export const JOB_IF_PREFIX = 'awn';
/** The host-only interface that holds the service address (DNS and the package cache). */
export const SERVICE_IF = 'archway0';
export const APT_CACHE_PORT = 3142;

/**
 * Destinations a job's egress never reaches, besides the host itself and other jobs: private,
 * shared (CGN), link-local (cloud metadata at 169.254.169.254), loopback, "this network",
 * multicast and reserved space. The operator's allow list comes before it.
 */
export const BLOCKED_V4 = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '224.0.0.0/3',
];

export interface EgressNetworkOptions {
  /** IPv4 block that job addresses come from, e.g. 10.89.0.0/16: a /30 per container, the first one for the service address. */
  subnet: string;
  /** CIDRs jobs may reach although they are private (a private package mirror, say). */
  allow: readonly string[];
  /** Host-wide directory of the per-container address leases. */
  leasesDir: string;
  /** Host-wide directory of the helpers' pid files, configs and logs. */
  stateDir: string;
  /** Where the package cache keeps its files. */
  aptCacheDir: string;
  /** Most bytes the package cache may hold (a btrfs qgroup limit on its subvolume when it is on btrfs). */
  aptCacheBytes: number;
  /** The Debian mirror the cache fetches from (ARCHWAY_DEBIAN_MIRROR), whatever mirror a job's sources name. */
  mirror: string;
  logger: Logger;
}

/** A container's end of the job network. */
export interface NetworkAttachment {
  index: number;
  /** The container's address, and its gateway (the host end of its veth). */
  address: string;
  gateway: string;
  hostIf: string;
}

export interface PackageCacheStats {
  /** Files served to jobs from the cache without a fetch from the mirror. */
  hits: number;
  /** Files fetched from the mirror. */
  misses: number;
  /** Bytes fetched from the mirror, and bytes served to jobs. */
  bytesIn: number;
  bytesOut: number;
}

export interface EgressNetwork {
  /** The host-only address jobs reach DNS and the package cache on. */
  readonly serviceAddress: string;
  /** `http://ADDRESS:3142`: what egress containers' apt uses as its proxy. */
  readonly aptProxy: string;
  /** Gives the running container (its init `initPid`) a veth with an address and a default route. */
  attach(containerId: string, initPid: number, owner: ProcessIdentity): Promise<NetworkAttachment>;
  /** Removes the container's veth (gone with its netns anyway) and gives its address back. Idempotent. */
  detach(containerId: string, index: number): Promise<void>;
  /** Host interfaces of jobs whose lease is gone or dead: left by a crash; removes them. */
  reap(): Promise<string[]>;
  /** The package cache's counters, from its transfer log. */
  cacheStats(): Promise<PackageCacheStats>;
}

interface Ipv4Block {
  base: number;
  prefix: number;
}

/** Parses `a.b.c.d/n`; throws a clear error otherwise. */
export function parseCidr(cidr: string, what = 'CIDR'): Ipv4Block {
  const m = cidr.trim().match(/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/);
  const parts = m ? m.slice(1, 5).map(Number) : [];
  const prefix = m ? Number(m[5]) : -1;
  if (!m || parts.some((p) => p > 255) || prefix > 32)
    throw new ArchwayError('INVALID_CIDR', `${what} '${cidr}' is not an IPv4 CIDR such as 10.89.0.0/16`, {
      httpStatus: 400,
    });
  const addr = parts.reduce((a, p) => a * 256 + p, 0);
  const size = 2 ** (32 - prefix);
  return { base: addr - (addr % size), prefix };
}

export const ipv4 = (n: number) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');

/** Addresses of block `index` (>= 1) of a job subnet: each container has a /30, host end .1, container .2. */
export function blockAddresses(subnet: Ipv4Block, index: number) {
  const start = subnet.base + 4 * index;
  return { network: ipv4(start), gateway: ipv4(start + 1), address: ipv4(start + 2) };
}

/** How many containers a subnet has room for (block 0 holds the service address). */
export const blocksIn = (subnet: Ipv4Block) => 2 ** (32 - subnet.prefix) / 4 - 1;

/** The nftables ruleset of the job network: one table, replaced as a whole, so a re-run is idempotent. */
export function egressRuleset(o: {
  subnet: string;
  service: string;
  allow: readonly string[];
  hostSubnets: readonly string[];
}): string {
  const blocked = [...BLOCKED_V4, ...o.hostSubnets];
  const jobs = `"${JOB_IF_PREFIX}*"`;
  return `add table inet archway
delete table inet archway
table inet archway {
  set blocked4 { type ipv4_addr; flags interval; auto-merge; elements = { ${blocked.join(', ')} } }
${o.allow.length ? `  set allow4 { type ipv4_addr; flags interval; auto-merge; elements = { ${o.allow.join(', ')} } }\n` : ''}  chain prerouting {
    type filter hook prerouting priority -150; policy accept;
    # A job sends only from its own address: no spoofing another job or the host.
    iifname ${jobs} fib saddr . iif oif missing drop
  }
  chain input {
    type filter hook input priority 0; policy accept;
    iifname ${jobs} jump from_jobs
  }
  chain from_jobs {
    ip daddr ${o.service} udp dport 53 accept
    ip daddr ${o.service} tcp dport { 53, ${APT_CACHE_PORT} } accept
    # Nothing else on the host, on any of its addresses: refused at once, not left to time out.
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    oifname ${jobs} ct state established,related accept
    iifname ${jobs} jump egress
    # Nothing starts a connection to a job.
    oifname ${jobs} drop
  }
  chain egress {
    meta nfproto ipv6 reject with icmpx admin-prohibited
    ip daddr ${o.subnet} jump refuse
${o.allow.length ? '    ip daddr @allow4 accept\n' : ''}    ip daddr @blocked4 jump refuse
    accept
  }
  chain refuse {
    meta l4proto tcp reject with tcp reset
    reject with icmpx admin-prohibited
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    ip saddr ${o.subnet} oifname != ${jobs} masquerade
  }
}
`;
}

/**
 * Sets up the host side of job egress once per host (idempotent, shared by every worker on it)
 * and returns what attaches containers to it: the nftables table, IPv4 forwarding, the service
 * interface, a DNS forwarder (dnsmasq, answering from the host's own resolver configuration)
 * and a package cache (apt-cacher-ng) on the service address only.
 */
export async function createEgressNetwork(o: EgressNetworkOptions): Promise<EgressNetwork> {
  for (const [cmd, pkg] of [
    ['nft', 'nftables'],
    ['ip', 'iproute2'],
    ['dnsmasq', 'dnsmasq-base'],
    ['apt-cacher-ng', 'apt-cacher-ng'],
  ] as const) {
    if (!(await hasCommand(cmd)))
      throw new HostRequirementError(
        `${cmd} is missing: job egress needs it`,
        `apt-get install ${pkg} (or run ops/setup-host.sh), or set ARCHWAY_EGRESS=false`,
      );
  }
  const subnet = parseCidr(o.subnet, 'ARCHWAY_EGRESS_SUBNET');
  if (subnet.prefix > 28)
    throw new ArchwayError('INVALID_CIDR', `ARCHWAY_EGRESS_SUBNET ${o.subnet} is too small: at least a /28`);
  for (const c of o.allow) parseCidr(c, 'ARCHWAY_EGRESS_ALLOW entry');
  const subnetText = `${ipv4(subnet.base)}/${subnet.prefix}`;
  const service = ipv4(subnet.base + 1);
  const leases = createHostLeases({ dir: o.leasesDir, size: blocksIn(subnet), what: 'job addresses' });
  await mkdir(o.stateDir, { recursive: true, mode: 0o755 });
  const log = o.logger.child({ component: 'egress' });

  // Serialised per host through a lock directory: two workers starting at once set up one network.
  await withLock(join(o.stateDir, 'setup.lock'), async () => {
    await writeFile('/proc/sys/net/ipv4/ip_forward', '1');
    const links = await runCommand('ip', ['-o', 'link', 'show', SERVICE_IF]).catch(() => '');
    if (!links) {
      // A bridge with no ports, only for its address (this kernel may lack the dummy driver).
      await runCommand('ip', ['link', 'add', SERVICE_IF, 'type', 'bridge']);
      await runCommand('ip', ['link', 'set', SERVICE_IF, 'addrgenmode', 'none']).catch(() => undefined);
    }
    const addrs = await runCommand('ip', ['-o', '-4', 'addr', 'show', 'dev', SERVICE_IF]);
    if (!addrs.includes(` ${service}/32`))
      await runCommand('ip', ['addr', 'add', `${service}/32`, 'dev', SERVICE_IF]);
    await runCommand('ip', ['link', 'set', SERVICE_IF, 'up']);
    await runCommand('nft', ['-f', '-'], {
      input: egressRuleset({
        subnet: subnetText,
        service,
        allow: o.allow,
        hostSubnets: await hostSubnets(),
      }),
    });
    await ensureDnsForwarder(o.stateDir, service, log);
    await ensurePackageCache(o, service, log);
  });

  return {
    serviceAddress: service,
    aptProxy: `http://${service}:${APT_CACHE_PORT}`,

    async attach(containerId, initPid, owner) {
      const init = await processIdentity(initPid);
      const index = await leases.acquire({ id: containerId, owner, ...(init ? { init } : {}) });
      // Index 0 is the service address's block.
      const block = blockAddresses(subnet, index + 1);
      const hostIf = `${JOB_IF_PREFIX}${index}`;
      try {
        // A crashed process may have left an interface of this name behind.
        await runCommand('ip', ['link', 'del', hostIf]).catch(() => undefined);
        await runCommand('ip', ['-batch', '-'], {
          input: [
            `link add ${hostIf} type veth peer name eth0 netns ${initPid}`,
            `link set ${hostIf} addrgenmode none`,
            `addr add ${block.gateway}/30 dev ${hostIf}`,
            `link set ${hostIf} up`,
          ].join('\n'),
        });
        // Inside: no IPv6 address at all (egress is IPv4; said in docs), the /30 and the default route.
        await runCommand('nsenter', [`--net=/proc/${initPid}/ns/net`, 'ip', '-batch', '-'], {
          input: [
            'link set lo up',
            'link set eth0 addrgenmode none',
            `addr add ${block.address}/30 dev eth0`,
            'link set eth0 up',
            `route add default via ${block.gateway}`,
          ].join('\n'),
        });
        return { index, address: block.address, gateway: block.gateway, hostIf };
      } catch (e) {
        await runCommand('ip', ['link', 'del', hostIf]).catch(() => undefined);
        await leases.release(index, containerId);
        throw new ArchwayError(
          'EGRESS_SETUP_FAILED',
          `attaching ${containerId} to the job network: ${toError(e).message}`,
          {
            infra: true,
            cause: e,
          },
        );
      }
    },

    async detach(containerId, index) {
      const held = (await leases.list()).get(index);
      if (held?.id !== containerId) return;
      await runCommand('ip', ['link', 'del', `${JOB_IF_PREFIX}${index}`]).catch(() => undefined);
      await leases.release(index, containerId);
    },

    async reap() {
      const held = await leases.list();
      const removed: string[] = [];
      const out = await runCommand('ip', ['-o', 'link', 'show']).catch(() => '');
      for (const m of out.matchAll(new RegExp(`^\\d+: (${JOB_IF_PREFIX}(\\d+))[@:]`, 'gm'))) {
        const name = m[1] as string;
        const h = held.get(Number(m[2]));
        if (h && (await leaseHolderAlive(h))) continue;
        await runCommand('ip', ['link', 'del', name]).catch(() => undefined);
        removed.push(name);
      }
      if (removed.length) log.info({ removed }, 'removed job interfaces left by processes that are gone');
      return removed;
    },

    cacheStats: () => packageCacheStats(join(o.stateDir, 'apt-cacher-ng', 'log')),
  };
}

/**
 * The IPv4 networks on the interfaces of the host's default routes (its LAN): jobs do not reach
 * the host's neighbours either. Other on-link networks (test namespaces, VPNs) are left to the
 * private-range rules and the operator.
 */
async function hostSubnets(): Promise<string[]> {
  const defaults = await runCommand('ip', ['-o', '-4', 'route', 'show', 'default']).catch(() => '');
  const devs = new Set([...defaults.matchAll(/ dev (\S+)/g)].map((m) => m[1] as string));
  const out = await runCommand('ip', ['-o', '-4', 'route', 'show', 'scope', 'link']).catch(() => '');
  const nets: string[] = [];
  for (const line of out.split('\n')) {
    const m = line.match(/^(\d+\.\d+\.\d+\.\d+\/\d+) dev (\S+)/);
    if (m?.[1] && m[2] && devs.has(m[2])) nets.push(m[1]);
  }
  return nets;
}

async function pidAlive(pidFile: string): Promise<boolean> {
  const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).trim());
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether the helper of `pidFile` runs with exactly `args`; if it runs with others (an older
 * archway, another setting), it is stopped so that the caller starts it anew.
 */
async function runningWith(
  pidFile: string,
  args: readonly string[],
  /** Whether a helper running with these other args serves as well (it is then kept). */
  serves?: (running: string[]) => Promise<boolean>,
): Promise<boolean> {
  const argsFile = `${pidFile}.args`;
  const want = JSON.stringify(args);
  const alive = await pidAlive(pidFile);
  const stored = alive ? await readFile(argsFile, 'utf8').catch(() => '') : '';
  if (alive && stored === want) return true;
  if (alive && serves && (await serves(parseArgs(stored)))) return true;
  if (alive) {
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 50 && (await pidAlive(pidFile)); i++) await new Promise((r) => setTimeout(r, 100));
  }
  await writeFile(argsFile, want);
  return false;
}

function parseArgs(text: string): string[] {
  try {
    const v: unknown = JSON.parse(text);
    return Array.isArray(v) ? v.map(String) : [];
  } catch {
    return [];
  }
}

const CACHE_DIR_ARG = 'CacheDir=';

/**
 * The package cache is one per host, but its store lives in a storage pool, and two
 * installations on one host have two pools: a cache running on another installation's store
 * serves this one as well, as long as that store is still there and nothing else differs.
 * Restarting it onto our own store instead would make two installations stop each other's
 * cache in turn (and cut the downloads of the other's running jobs).
 */
async function cacheServes(running: string[], want: readonly string[]): Promise<boolean> {
  const other = (a: readonly string[]) => a.filter((x) => !x.startsWith(CACHE_DIR_ARG));
  if (JSON.stringify(other(running)) !== JSON.stringify(other(want))) return false;
  const dir = running.find((x) => x.startsWith(CACHE_DIR_ARG))?.slice(CACHE_DIR_ARG.length);
  return dir !== undefined && (await isSubvolume(dir));
}

async function ensureDnsForwarder(stateDir: string, service: string, log: Logger): Promise<void> {
  const pidFile = join(stateDir, 'dnsmasq.pid');
  const args = [
    '--conf-file=/dev/null',
    `--listen-address=${service}`,
    '--bind-interfaces',
    '--port=53',
    '--no-hosts',
    '--resolv-file=/etc/resolv.conf',
    `--pid-file=${pidFile}`,
    '--user=nobody',
    '--group=nogroup',
    '--cache-size=1000',
    '--domain-needed',
    '--bogus-priv',
    // No --stop-dns-rebind: it also drops documentation ranges some mirrors use, and a job cannot
    // reach a private address whatever a name says (the nftables egress chain refuses it).
    `--log-facility=${join(stateDir, 'dnsmasq.log')}`,
  ];
  if (await runningWith(pidFile, args)) return;
  // dnsmasq daemonises itself: it outlives the worker that started it, as the cache does.
  await runCommand('dnsmasq', args);
  log.info({ address: service }, 'DNS forwarder for jobs started (dnsmasq)');
}

async function ensurePackageCache(o: EgressNetworkOptions, service: string, log: Logger): Promise<void> {
  const dir = join(o.stateDir, 'apt-cacher-ng');
  const pidFile = join(dir, 'pid');
  const args = [
    '-c',
    '/etc/apt-cacher-ng',
    'ForeGround=0',
    `BindAddress=${service}`,
    `Port=${APT_CACHE_PORT}`,
    `CacheDir=${o.aptCacheDir}`,
    `LogDir=${join(dir, 'log')}`,
    `PidFile=${pidFile}`,
    `SocketPath=${join(dir, 'socket')}`,
    // Index files are checked against the mirror at most this often: a second job's update is local.
    'ExThreshold=4',
    'VerboseLog=1',
    // Debian's backends file is filled by debconf, and empty on a non-interactive install:
    // without a backend every request is a "503 Host not found". The operator's mirror it is.
    `Remap-debrep=file:deb_mirror*.gz /debian ; ${o.mirror.replace(/\/*$/, '/')}`,
  ];
  await mkdir(join(dir, 'log'), { recursive: true });
  if (await runningWith(pidFile, args, (running) => cacheServes(running, args))) return;
  await ensureCacheDir(o.aptCacheDir, o.aptCacheBytes);
  const owner = await runCommand('id', ['-u', 'apt-cacher-ng']).catch(() => '');
  if (owner) {
    await runCommand('chown', ['-R', 'apt-cacher-ng:apt-cacher-ng', dir]);
    await runCommand('chown', ['apt-cacher-ng:apt-cacher-ng', o.aptCacheDir]);
  }
  // Not as root: it serves untrusted jobs. setpriv (util-linux) drops to its own user.
  if (owner)
    await runCommand('setpriv', [
      '--reuid=apt-cacher-ng',
      '--regid=apt-cacher-ng',
      '--init-groups',
      'apt-cacher-ng',
      ...args,
    ]);
  else await runCommand('apt-cacher-ng', args);
  for (let i = 0; i < 50 && !(await pidAlive(pidFile)); i++) await new Promise((r) => setTimeout(r, 100));
  if (!(await pidAlive(pidFile)))
    throw new HostRequirementError(
      `the package cache (apt-cacher-ng) did not start on ${service}:${APT_CACHE_PORT}`,
      `see ${join(dir, 'log')}`,
    );
  log.info(
    { address: `${service}:${APT_CACHE_PORT}`, dir: o.aptCacheDir },
    'package cache for jobs started (apt-cacher-ng)',
  );
}

/** The cache's directory: a btrfs subvolume with a qgroup limit when its parent is btrfs, so it stays bounded. */
async function ensureCacheDir(path: string, bytes: number): Promise<void> {
  if (!(await exists(path))) {
    // Its parent first: on a fresh pool `cache/` may not exist yet, and a plain directory would be unbounded.
    await mkdir(dirname(path), { recursive: true });
    const made = await runCommand('btrfs', ['subvolume', 'create', path]).then(
      () => true,
      () => false,
    );
    if (!made) await mkdir(path, { recursive: true });
  }
  const isSubvolume = await runCommand('btrfs', ['subvolume', 'show', path]).then(
    () => true,
    () => false,
  );
  if (isSubvolume) await runCommand('btrfs', ['qgroup', 'limit', String(bytes), path]).catch(() => undefined);
}

/**
 * apt-cacher-ng's transfer log: `time|I|bytes|client|path` for bytes fetched from upstream,
 * `time|O|bytes|client|path` for bytes delivered to a client.
 */
export async function packageCacheStats(logDir: string): Promise<PackageCacheStats> {
  const text = await readFile(join(logDir, 'apt-cacher.log'), 'utf8').catch(() => '');
  const fetched = new Set<string>();
  const s: PackageCacheStats = { hits: 0, misses: 0, bytesIn: 0, bytesOut: 0 };
  for (const line of text.split('\n')) {
    const [, kind, bytes, , path] = line.split('|');
    if (!path) continue;
    if (kind === 'I') {
      s.misses++;
      s.bytesIn += Number(bytes) || 0;
      fetched.add(path);
    } else if (kind === 'O') {
      s.bytesOut += Number(bytes) || 0;
      if (!fetched.delete(path)) s.hits++;
    }
  }
  return s;
}

async function withLock<T>(lock: string, fn: () => Promise<T>): Promise<T> {
  const until = Date.now() + 60_000;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || Date.now() > until) throw e;
      // A process killed during set-up leaves the lock behind; set-up takes seconds, not a minute.
      const age = await stat(lock).then(
        (st) => Date.now() - st.mtimeMs,
        () => 0,
      );
      if (age > 60_000) await rmdir(lock).catch(() => undefined);
      else await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn();
  } finally {
    await rmdir(lock).catch(() => undefined);
  }
}
