import { z } from 'zod';
import { type Arch, parseArch } from './domain.ts';
import { toError } from './errors/to-error.ts';
import { parseRedisUrl } from './redis/connection.ts';
import { allowEntryError } from './source-url.ts';

export { parseConfig } from './parse-config.ts';

const int = (def: number, min = 1) => z.coerce.number().int().min(min).default(def);

/** A comma-separated list (blanks dropped), each item checked by `item`. */
const commaList = (item: z.ZodString) =>
  z
    .string()
    .default('')
    .transform((s) =>
      s
        .split(',')
        .map((v) => v.trim())
        .filter(Boolean),
    )
    .pipe(z.array(item));

const cidrList = commaList(
  z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'IPv4 CIDRs such as 10.1.2.0/24, comma-separated'),
);

/** Job egress (a network namespace per container, a veth to the host, nftables), shared by every host process. */
const LogSettings = {
  /** pino log level. Per-request lines of the API are at `debug`. */
  ARCHWAY_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /**
   * `pretty` (short human lines, through pino-pretty) or `json` (one JSON object a line). Default:
   * pretty when stderr is a terminal, else json. `--log-format` on the command line sets it.
   */
  ARCHWAY_LOG_FORMAT: z.enum(['pretty', 'json']).optional(),
};

/** How a long-running process is supervised, for the API and the workers. */
const SupervisionSettings = {
  /**
   * Set by `up` on the parts it starts (its own pid): when the process's parent is no longer this
   * pid (`up` was killed, `kill -9` or the OOM killer), the part stops as on a first SIGTERM
   * instead of running on unsupervised.
   */
  ARCHWAY_STOP_WITH_PID: z.coerce.number().int().positive().optional(),
};

const EgressSettings = {
  /**
   * Whether jobs may have `network: egress`. On the API: `false` refuses such jobs (400) and builds
   * from repositories get `none`. On a worker: `false` makes no job network (egress jobs fail).
   */
  ARCHWAY_EGRESS: z.stringbool().default(true),
  /** IPv4 block of job addresses: a /30 per container; its first address is the host's service address (DNS, package cache). */
  ARCHWAY_EGRESS_SUBNET: z
    .string()
    .regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'an IPv4 CIDR such as 10.89.0.0/16')
    .default('10.89.0.0/16'),
  /** Private CIDRs egress jobs may reach anyway (a private mirror or git server), comma-separated. Default none. */
  ARCHWAY_EGRESS_ALLOW: cidrList,
  /** Host-wide state of the job network (leases, DNS forwarder, package cache): one per host, whatever the pool. */
  ARCHWAY_NET_STATE_DIR: z.string().startsWith('/', 'an absolute path').default('/run/archway-net'),
  /** Where the package cache keeps its files. Default `<pool>/cache/apt-cacher-ng`. */
  ARCHWAY_APT_CACHE_DIR: z.string().startsWith('/', 'an absolute path').optional(),
  /** Most the package cache may hold, in GiB. */
  ARCHWAY_APT_CACHE_GIB: z.coerce.number().positive().default(4),
};

/** Largest time multiplier: a job's limits may grow a hundredfold on a slow arch, no more. */
export const MAX_TIME_MULTIPLIER = 100;

/**
 * `arch:factor,...` (aliases accepted): how much longer jobs' time and silence limits are on each
 * arch's pool. Each factor is a number above 0 and at most MAX_TIME_MULTIPLIER; an arch appears once.
 */
export const TimeMultipliers = z
  .string()
  .default('')
  .transform((v, ctx): Partial<Record<Arch, number>> => {
    const out: Partial<Record<Arch, number>> = {};
    for (const item of v
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)) {
      const [name = '', factor, ...rest] = item.split(':').map((s) => s.trim());
      const fail = (message: string) => {
        ctx.addIssue({
          code: 'custom',
          message: `${message} (expected arch:factor pairs such as s390x:3,ppc64le:2)`,
        });
        return z.NEVER;
      };
      let arch: Arch;
      try {
        arch = parseArch(name);
      } catch {
        return fail(`unknown arch '${name}' in '${item}'`);
      }
      const n = Number(factor);
      if (factor === undefined || factor === '' || rest.length > 0 || !Number.isFinite(n))
        return fail(`'${item}': the factor is not a number`);
      if (n <= 0 || n > MAX_TIME_MULTIPLIER)
        return fail(`'${item}': the factor must be above 0 and at most ${MAX_TIME_MULTIPLIER}`);
      if (out[arch] !== undefined) return fail(`${arch} is given twice`);
      out[arch] = n;
    }
    return out;
  });

/** Pool size a loop-backed pool gets when ARCHWAY_POOL_SIZE_GIB is unset, in GiB. */
export const DEFAULT_POOL_SIZE_GIB = 64;

/**
 * The operator's ceilings: the most one job may ask for. Unset, each is derived from the host the
 * process runs on (src/host/ceilings.ts): the API refuses a job over them with a 400, and a worker
 * fails one that reaches it over its own host's.
 */
const CeilingSettings = {
  /** Most CPUs one job may ask for. Default: this host's CPU count. */
  ARCHWAY_MAX_CPUS: z.coerce.number().min(0.01).max(256).optional(),
  /** Most memory one job may ask for, in MiB. Default: this host's memory. */
  ARCHWAY_MAX_MEMORY_MIB: z.coerce.number().int().min(32).optional(),
  /** Most processes and threads one job may ask for. Default: an eighth of kernel.pid_max. */
  ARCHWAY_MAX_PIDS: z.coerce.number().int().min(16).optional(),
  /** Most disk one job may ask for, in MiB. Default: a quarter of the pool's size. */
  ARCHWAY_MAX_DISK_MIB: z.coerce.number().int().min(1).optional(),
};

/**
 * What a host process (the worker, `archway run`, `archway images`) reads from the environment.
 * Every variable is listed with its default in docs/configuration.md.
 */
export const HostConfig = z.object({
  /** Where the btrfs pool lives (images, warm and job snapshots, bundles, caches). */
  ARCHWAY_POOL_PATH: z.string().startsWith('/', 'an absolute path').default('/var/lib/archway'),
  /** Size of the sparse loop-backed btrfs file made when the pool path is not on btrfs, in GiB. */
  ARCHWAY_POOL_SIZE_GIB: int(DEFAULT_POOL_SIZE_GIB),
  /** First host uid/gid that container root maps to. */
  ARCHWAY_UID_BASE: int(100000),
  /** How many uids/gids each container gets, from the base. */
  ARCHWAY_UID_SIZE: int(65536, 1024),
  /**
   * How many uid/gid ranges a host hands out: container root of range k maps to base + k * size,
   * so no two running containers share a kernel uid (and its key quota and ucounts). At most this
   * many containers (warm ones included) run on a host at once, across every worker of it.
   */
  ARCHWAY_UID_RANGES: int(64),
  /** Directory of the uid range leases: one per host (kernel uids are host-wide), whatever the pool. */
  ARCHWAY_UID_LEASE_DIR: z.string().startsWith('/', 'an absolute path').default('/run/archway-leases/uid'),
  /** `user.max_inotify_instances` in each container's user namespace (per uid in the container). */
  ARCHWAY_CONTAINER_MAX_INOTIFY_INSTANCES: int(128, 0),
  /** `user.max_inotify_watches` in each container's user namespace (per uid in the container). */
  ARCHWAY_CONTAINER_MAX_INOTIFY_WATCHES: int(8192, 0),
  /** `user.max_fanotify_groups` in each container's user namespace (per uid in the container). */
  ARCHWAY_CONTAINER_MAX_FANOTIFY_GROUPS: int(16, 0),
  /** `user.max_fanotify_marks` in each container's user namespace (per uid in the container). */
  ARCHWAY_CONTAINER_MAX_FANOTIFY_MARKS: int(8192, 0),
  /** Every `user.max_*_namespaces` in each container's user namespace: how many nested namespaces of each kind. */
  ARCHWAY_CONTAINER_MAX_NAMESPACES: int(64, 0),
  /** OCI runtime: runc, crun, or auto (crun where the host's cgroups are unified v2, else runc). */
  ARCHWAY_OCI_RUNTIME: z.enum(['auto', 'runc', 'crun']).default('auto'),
  /**
   * Directory for the OCI runtime's state (a tmpfs, so a reboot forgets containers). Default
   * /run/archway for the default pool, else derived from ARCHWAY_POOL_PATH (withDerivedDefaults).
   */
  ARCHWAY_RUN_DIR: z.string().startsWith('/', 'an absolute path').default('/run/archway'),
  /**
   * cgroup (under each hierarchy's root) that every container's cgroup is made in. Default
   * archway for the default pool, else derived from ARCHWAY_POOL_PATH (withDerivedDefaults).
   */
  ARCHWAY_CGROUP_PARENT: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_.-]*$/, 'a cgroup name such as archway')
    .default('archway'),
  /**
   * Docker-format seccomp profile that every container's filter is made from (archway's denials
   * are added on top of it). Default: Debian's containers-common profile.
   */
  ARCHWAY_SECCOMP_PROFILE: z
    .string()
    .startsWith('/', 'an absolute path')
    .default('/usr/share/containers/seccomp.json'),
  /** Static init (from the host) that warm containers idle in. */
  ARCHWAY_INIT: z.string().startsWith('/', 'an absolute path').default('/usr/bin/catatonit'),
  /** Directory of the blob store that `images publish` writes (`sha256/<hex>` files). Default `<pool>/blobs`. */
  ARCHWAY_BLOB_DIR: z.string().startsWith('/', 'an absolute path').optional(),
  /** Debian mirror for image builds. */
  ARCHWAY_DEBIAN_MIRROR: z.url().default('http://deb.debian.org/debian'),
  ...LogSettings,
  ...EgressSettings,
  ...CeilingSettings,
});
export type HostConfig = z.infer<typeof HostConfig>;

/** The blob store's directory: ARCHWAY_BLOB_DIR, else `<ARCHWAY_POOL_PATH>/blobs`. */
export function blobDirOf(c: { ARCHWAY_POOL_PATH: string; ARCHWAY_BLOB_DIR?: string | undefined }): string {
  return c.ARCHWAY_BLOB_DIR ?? `${c.ARCHWAY_POOL_PATH.replace(/\/+$/, '')}/blobs`;
}

const RedisSettings = {
  /** Redis to use. */
  REDIS_URL: z
    .string()
    .regex(
      /^rediss?(\+sentinel|\+cluster)?:\/\//,
      'a redis:// or rediss:// URL, redis+sentinel://[:password@]host:port[,host:port...]/primary-name, or redis+cluster://[:password@]host:port[,host:port...]',
    )
    .superRefine((url, ctx) => {
      try {
        parseRedisUrl(url);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: toError(e).message });
      }
    })
    .default('redis://127.0.0.1:6379'),
  /** Prefix of every key (and the hash tag of the shared ones). */
  ARCHWAY_REDIS_PREFIX: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]*$/, 'lower-case letters, digits, _ and -')
    .default('archway'),
  /** Days a finished job's log is kept. */
  ARCHWAY_LOG_RETENTION_DAYS: z.coerce.number().positive().default(7),
};

/** One API token: `name:scope+scope:secret`, scopes read, submit, admin (admin implies the others). */
export const ApiToken = z.object({
  name: z.string(),
  scopes: z.array(z.enum(['read', 'submit', 'admin'])),
  secret: z.string(),
});
export type ApiToken = z.infer<typeof ApiToken>;

function parseTokens(value: string, ctx: z.RefinementCtx): ApiToken[] {
  const out: ApiToken[] = [];
  for (const item of value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const [name, scopes, ...rest] = item.split(':');
    const secret = rest.join(':');
    const parsed = ApiToken.safeParse({ name, scopes: scopes?.split('+'), secret });
    if (!parsed.success || secret.length < 16) {
      ctx.addIssue({
        code: 'custom',
        message: `each token is name:scope+scope:secret (scopes read, submit, admin; secret of 16+ characters); '${name ?? ''}' is not`,
      });
      return z.NEVER;
    }
    out.push(parsed.data);
  }
  return out;
}

/**
 * The GitHub App (webhooks, check runs, source tokens). All three of app id, private key and
 * webhook secret, or none (the App is off and `POST /webhooks/github` is not served).
 */
const GitHubSettings = {
  /** The GitHub App's id. */
  ARCHWAY_GITHUB_APP_ID: z.coerce.number().int().positive().optional(),
  /** The App's private key: PEM text (`\n` escapes allowed) or the path of a PEM file. No default: a secret. */
  ARCHWAY_GITHUB_PRIVATE_KEY: z.string().optional(),
  /** Webhook secret; comma-separated for rotation: the first is current, the others are still accepted. No default: a secret. */
  ARCHWAY_GITHUB_WEBHOOK_SECRET: z.string().optional(),
  /** GitHub's REST API (GitHub Enterprise: `https://HOST/api/v3`). */
  ARCHWAY_GITHUB_API_URL: z.url().default('https://api.github.com'),
  /** Whether a new push to a branch or pull request cancels the older build (a repo's `.archway.yml` may say otherwise). */
  ARCHWAY_GITHUB_AUTO_CANCEL: z.stringbool().default(true),
  /** Most MiB of webhook bodies held at once before their signatures are checked; past it, 503. */
  ARCHWAY_GITHUB_WEBHOOK_MEMORY_MIB: int(100),
};

/** The GitHub App's settings, when it is configured. */
export interface GitHubConfig {
  appId: number;
  /** PEM text, or the path of a PEM file (read by the composition root). */
  privateKey: string;
  /** The current secret first, then the previous ones still accepted. */
  webhookSecrets: string[];
  apiUrl: string;
  autoCancel: boolean;
  /** Most bytes of webhook bodies held at once (ARCHWAY_GITHUB_WEBHOOK_MEMORY_MIB). */
  webhookMemoryBytes: number;
}

function githubConfig(
  c: {
    ARCHWAY_GITHUB_APP_ID?: number | undefined;
    ARCHWAY_GITHUB_PRIVATE_KEY?: string | undefined;
    ARCHWAY_GITHUB_WEBHOOK_SECRET?: string | undefined;
    ARCHWAY_GITHUB_API_URL: string;
    ARCHWAY_GITHUB_AUTO_CANCEL: boolean;
    ARCHWAY_GITHUB_WEBHOOK_MEMORY_MIB: number;
  },
  ctx: z.RefinementCtx,
): GitHubConfig | undefined {
  const set = {
    ARCHWAY_GITHUB_APP_ID: c.ARCHWAY_GITHUB_APP_ID,
    ARCHWAY_GITHUB_PRIVATE_KEY: c.ARCHWAY_GITHUB_PRIVATE_KEY,
    ARCHWAY_GITHUB_WEBHOOK_SECRET: c.ARCHWAY_GITHUB_WEBHOOK_SECRET,
  };
  const missing = Object.entries(set).filter(([, v]) => v === undefined);
  if (missing.length === 3) return undefined;
  if (missing.length > 0) {
    ctx.addIssue({
      code: 'custom',
      path: [missing[0]?.[0] ?? 'ARCHWAY_GITHUB_APP_ID'],
      message: `the GitHub App needs ARCHWAY_GITHUB_APP_ID, ARCHWAY_GITHUB_PRIVATE_KEY and ARCHWAY_GITHUB_WEBHOOK_SECRET; ${missing.map(([k]) => k).join(', ')} missing`,
    });
    return undefined;
  }
  const secrets = (c.ARCHWAY_GITHUB_WEBHOOK_SECRET ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (secrets.length === 0) {
    ctx.addIssue({ code: 'custom', path: ['ARCHWAY_GITHUB_WEBHOOK_SECRET'], message: 'no secret given' });
    return undefined;
  }
  return {
    appId: c.ARCHWAY_GITHUB_APP_ID as number,
    privateKey: c.ARCHWAY_GITHUB_PRIVATE_KEY as string,
    webhookSecrets: secrets,
    apiUrl: c.ARCHWAY_GITHUB_API_URL,
    autoCancel: c.ARCHWAY_GITHUB_AUTO_CANCEL,
    webhookMemoryBytes: c.ARCHWAY_GITHUB_WEBHOOK_MEMORY_MIB * 1024 * 1024,
  };
}

/** Which git servers sources may come from, beyond the public internet. */
const ALLOW_LOOPBACK_SOURCES = {
  /** Allow `source.git` URLs on this host's loopback (and plain http to them). For tests only. */
  ARCHWAY_ALLOW_LOOPBACK_SOURCES: z.stringbool().default(false),
  /**
   * Private git servers `source.git` may name, comma-separated: CIDRs (`10.20.0.0/16`,
   * `fd12:3456::/48`), addresses, host names (`git.corp.example`, `*.corp.example`). Sources on
   * private, link-local, multicast and reserved addresses are refused unless listed here (loopback
   * and unspecified addresses always are). Default: none.
   */
  ARCHWAY_SOURCE_ALLOW: z
    .string()
    .default('')
    .transform((v, ctx) => {
      const entries = v
        .split(',')
        .map((e) => e.trim())
        .filter(Boolean);
      for (const e of entries) {
        const why = allowEntryError(e);
        if (why) {
          ctx.addIssue({ code: 'custom', message: `${why} (comma-separated CIDRs, addresses, host names)` });
          return z.NEVER;
        }
      }
      return entries;
    }),
};

/** The API process. */
export const ApiConfig = z
  .object({
    ...RedisSettings,
    /** Port the API listens on. */
    ARCHWAY_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
    /** Address the API binds. */
    ARCHWAY_HOST: z.string().default('127.0.0.1'),
    /** Tokens: `name:scope+scope:secret,...`. No default: a secret. */
    ARCHWAY_TOKENS: z.string().default('').transform(parseTokens),
    /** A single admin token (what `archway up` prints and the CLI sends). No default: a secret. */
    ARCHWAY_TOKEN: z.string().min(16, 'at least 16 characters').optional(),
    /** Largest request body, in bytes. */
    ARCHWAY_BODY_LIMIT_BYTES: z.coerce
      .number()
      .int()
      .positive()
      .default(2 * 1024 * 1024),
    /** Most followers of one job's log (`follow=1` or SSE) this API serves at once; more get a 429. */
    ARCHWAY_LOG_FOLLOWERS_PER_JOB: int(100),
    /** Most log followers this API serves at once, over all jobs; more get a 429. */
    ARCHWAY_LOG_FOLLOWERS_MAX: int(1000),
    /**
     * Seconds a log follower's client may leave written log unread (its connection's buffers
     * full) before the API cuts it off and frees its place. Default 30.
     */
    ARCHWAY_LOG_FOLLOW_STALL_SECONDS: int(30),
    /** The pool whose `blobs/` directory the API serves image blobs from (when ARCHWAY_BLOB_DIR is unset). */
    ARCHWAY_POOL_PATH: z.string().startsWith('/', 'an absolute path').default('/var/lib/archway'),
    /** Directory of the image blob store the API serves. Default `<pool>/blobs`. */
    ARCHWAY_BLOB_DIR: z.string().startsWith('/', 'an absolute path').optional(),
    /**
     * How long a lost node (no heartbeat for 10 s) stays in `GET /v1/nodes` and `archway nodes`;
     * after it only `?all=true` / `nodes --all` shows it, and after a day its record is deleted.
     * Default 600 (10 minutes).
     */
    ARCHWAY_LOST_NODE_RETENTION_SECONDS: z.coerce.number().int().min(0).default(600),
    /** The API's address as users reach it (links to job logs). Default http://HOST:PORT. */
    ARCHWAY_PUBLIC_URL: z.url().optional(),
    /**
     * Key of the signed page links (check runs' Details, `pageUrl`) and of page login cookies.
     * Unset: a random key per process, so links and logins end when the API restarts (`up`
     * keeps one under its pool). No default: a secret.
     */
    ARCHWAY_PAGE_SECRET: z.string().min(32, 'at least 32 characters').optional(),
    /** Days a signed page link stays valid. */
    ARCHWAY_PAGE_LINK_DAYS: z.coerce.number().positive().max(3650).default(30),
    /** Hours a page login (its session cookie) lasts. */
    ARCHWAY_PAGE_SESSION_HOURS: z.coerce.number().positive().max(8760).default(12),
    /**
     * Job and build pages and their logs open without a signed link or a login (jobs of private
     * repositories excepted): for open-source installations.
     */
    ARCHWAY_PUBLIC_LOGS: z.stringbool().default(false),
    /**
     * This API replica's own address as the other replicas reach it (`http://10.0.0.5:8080`):
     * an upload is kept on the replica that took it, and another replica that needs it fetches it
     * from here. Default: where it listens (`http://ARCHWAY_HOST:ARCHWAY_PORT`), right for one replica.
     */
    ARCHWAY_REPLICA_URL: z.url().optional(),
    /**
     * Jobs of one repository (label `repo`, which builds carry) that run at once, over every arch;
     * more wait in the queue without holding a slot. Per-repository caps (`PUT
     * /v1/repos/:owner/:name/limits`) override it. Unset: no default cap. Written to Redis when the
     * API starts, so every worker applies it without a restart.
     */
    ARCHWAY_REPO_CONCURRENCY: z.coerce.number().int().min(1).max(10_000).optional(),
    /** Where uploaded trees (`POST /v1/uploads`) are kept. Default `<pool>/uploads`. */
    ARCHWAY_UPLOAD_DIR: z.string().startsWith('/', 'an absolute path').optional(),
    /** Largest uploaded tree (a git bundle), in bytes; a bigger one is refused with 413. */
    ARCHWAY_UPLOAD_LIMIT_BYTES: z.coerce
      .number()
      .int()
      .positive()
      .default(100 * 1024 * 1024),
    /** How long an uploaded tree is kept after its build ended (a restart within it still runs), in hours. */
    ARCHWAY_UPLOAD_RETENTION_HOURS: z.coerce.number().positive().default(24),
    /**
     * Most bytes the API fetches to read a git source's config (`POST /v1/builds` with a git
     * source and no inline config); default 64 MiB. A server that allows blob filters sends only
     * the commit, its trees and the config file.
     */
    ARCHWAY_CONFIG_FETCH_LIMIT_BYTES: z.coerce
      .number()
      .int()
      .positive()
      .default(64 * 1024 * 1024),
    /** Longest the API spends reading a git source's config, in seconds; default 30. */
    ARCHWAY_CONFIG_FETCH_TIMEOUT_SECONDS: z.coerce.number().positive().default(30),
    ...LogSettings,
    ...SupervisionSettings,
    ...GitHubSettings,
    ...ALLOW_LOOPBACK_SOURCES,
    ARCHWAY_EGRESS: EgressSettings.ARCHWAY_EGRESS,
    ...CeilingSettings,
  })
  .transform((c, ctx) => {
    const tokens = [
      ...c.ARCHWAY_TOKENS,
      ...(c.ARCHWAY_TOKEN ? [{ name: 'admin', scopes: ['admin' as const], secret: c.ARCHWAY_TOKEN }] : []),
    ];
    if (tokens.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['ARCHWAY_TOKEN'],
        message: 'no API token configured: set ARCHWAY_TOKEN or ARCHWAY_TOKENS',
      });
      return z.NEVER;
    }
    return { ...c, tokens, github: githubConfig(c, ctx) };
  });
export type ApiConfig = z.output<typeof ApiConfig>;

/** The worker process (besides its command-line flags --arch, --slots, --warm). */
export const WorkerConfig = HostConfig.extend({
  ...RedisSettings,
  ...SupervisionSettings,
  /** This node's id. Default: `<hostname>-<arch>-<pid>`. */
  ARCHWAY_NODE_ID: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'letters, digits, _, . and -')
    .optional(),
  /** Bytes of output a job's log keeps, in MiB. */
  ARCHWAY_LOG_LIMIT_MIB: z.coerce.number().positive().default(4),
  /**
   * Time multipliers per arch, `arch:factor,...` (for example `s390x:3,ppc64le:2`): a worker of
   * a listed arch multiplies each job's time limit and silence limit by its factor (emulated and
   * slower arches). One value for the whole fleet: each worker takes its own arch's factor.
   * Default: none (factor 1).
   */
  ARCHWAY_TIME_MULTIPLIERS: TimeMultipliers,
  /**
   * How long after an image version is published a node without it may still be syncing it, in
   * seconds: a job of that image is retried elsewhere without blame; past it, the node's sync is
   * overdue and the error counts toward its quarantine. Raise it for large images on slow links.
   */
  ARCHWAY_IMAGE_SYNC_GRACE_SECONDS: z.coerce.number().int().min(1).max(86_400).default(600),
  /** Port of the worker's /metrics (0 = none). */
  ARCHWAY_WORKER_METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(0),
  ...ALLOW_LOOPBACK_SOURCES,
  /** The API that image blobs are downloaded from. Unset: no image sync (the node holds what is built on its host). */
  ARCHWAY_API_URL: z.url().optional(),
  /** Bearer token (read scope) for downloading image blobs. No default: a secret. */
  ARCHWAY_SYNC_TOKEN: z.string().min(16, 'at least 16 characters').optional(),
  /**
   * Images the worker keeps warm (comma-separated names, in order of preference; `--warm-images`
   * overrides). Default: every image the node holds for its arch when it starts,
   * `debian-bookworm-build` first.
   */
  ARCHWAY_WARM_IMAGES: commaList(
    z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'image names, comma-separated'),
  ),
  /**
   * Most warm containers one worker keeps, every image and network mode together (0 = none),
   * images its jobs ask for later included (they join while this has room). Each
   * holds one of the host's `ARCHWAY_UID_RANGES` until a job takes it, and every worker of the
   * host draws on them. Default 8: `up`'s 4 workers with 2 slots each need at most 4 x (8 + 2) = 40
   * of the 64 default ranges.
   */
  ARCHWAY_WARM_MAX: z.coerce.number().int().min(0).default(8),
  /**
   * A git mirror of the pool (`cache/git/...`; each uploaded tree has one of its own) that no job
   * used for this long is removed, in hours. Default 24.
   */
  ARCHWAY_GIT_MIRROR_RETENTION_HOURS: z.coerce.number().positive().default(24),
  /** Beyond this many bytes of git mirrors in the pool, the least recently used are removed first. Default 20 GiB. */
  ARCHWAY_GIT_MIRROR_MAX_BYTES: z.coerce
    .number()
    .int()
    .positive()
    .default(20 * 1024 ** 3),
});
export type WorkerConfig = z.infer<typeof WorkerConfig>;

/** `archway images publish`: a host command that also writes the catalog in Redis. */
export const PublishConfig = HostConfig.extend({ ...RedisSettings });
export type PublishConfig = z.infer<typeof PublishConfig>;

const seconds = (def: number, min = 0) => z.coerce.number().min(min).max(86_400).default(def);

/** `archway scaler`: computes the nodes each pool needs and asks a provider to act (docs/operations.md). */
export const ScalerConfig = z
  .object({
    ...RedisSettings,
    /** Who starts and stops nodes: `local` (worker processes on this host) or `exec` (the operator's command). No default. */
    ARCHWAY_SCALER_PROVIDER: z.enum(['local', 'exec'], 'expected local or exec (there is no default)'),
    /** The `exec` provider's command: a program and its arguments, split on spaces, never run through a shell. */
    ARCHWAY_SCALER_EXEC_COMMAND: z.string().trim().min(1).optional(),
    /** Longest the `exec` command may run before it is killed, in seconds. */
    ARCHWAY_SCALER_EXEC_TIMEOUT_SECONDS: seconds(300, 1),
    /** Names of variables of the scaler's environment passed on to the `exec` command (comma-separated), besides PATH and HOME. */
    ARCHWAY_SCALER_EXEC_PASS_ENV: commaList(
      z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'variable names, comma-separated'),
    ),
    /** Arches the scaler looks after (comma-separated, aliases accepted), or `all`. */
    ARCHWAY_SCALER_ARCHES: z.string().default('all'),
    /** Seconds between two passes over the pools. */
    ARCHWAY_SCALER_INTERVAL_SECONDS: seconds(2, 0.1),
    /** A pool with nodes grows only once its oldest waiting job has waited this long (a pool with none grows at once). */
    ARCHWAY_SCALER_UP_AFTER_SECONDS: seconds(5),
    /** Seconds between two scale-ups of one pool. */
    ARCHWAY_SCALER_UP_COOLDOWN_SECONDS: seconds(10),
    /** A pool shrinks only after it has needed fewer nodes than it has for this long; then its idle nodes drain. */
    ARCHWAY_SCALER_DOWN_AFTER_SECONDS: seconds(60),
    /** Expected seconds from asking the provider to the new node taking jobs, until the scaler has measured it. */
    ARCHWAY_SCALER_BOOT_SECONDS: seconds(30),
    /** A started node that has not registered after this long no longer counts as coming (`local`: it is stopped). */
    ARCHWAY_SCALER_BOOT_TIMEOUT_SECONDS: seconds(300, 1),
    /** Warm containers per image of each `local` worker (its --warm). */
    ARCHWAY_SCALER_LOCAL_WARM: z.coerce.number().int().min(0).max(64).default(1),
    ...LogSettings,
  })
  .superRefine((c, ctx) => {
    if (c.ARCHWAY_SCALER_PROVIDER === 'exec' && !c.ARCHWAY_SCALER_EXEC_COMMAND)
      ctx.addIssue({
        code: 'custom',
        path: ['ARCHWAY_SCALER_EXEC_COMMAND'],
        message: 'the exec provider needs the command to run (a program and its arguments)',
      });
  });
export type ScalerConfig = z.infer<typeof ScalerConfig>;
