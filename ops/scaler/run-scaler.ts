import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { createJobQueue, createNodeRegistry, createPoolStatus, createPoolStore } from '../../queue/index.ts';
import {
  ARCHES,
  type Arch,
  connectRedis,
  createCloser,
  createKeys,
  createLogger,
  parseArch,
  parseConfig,
  ScalerConfig,
  WorkerConfig,
} from '../../src/core/index.ts';
import type { ScalerProvider } from './provider.ts';
import { createExecProvider } from './providers/exec-provider.ts';
import { createLocalProvider, type LocalProvider } from './providers/local-provider.ts';
import { createScaler, type Scaler } from './scaler.ts';

/** Longest a graceful close may take (local workers drain first) before the process exits anyway. */
const CLOSE_TIMEOUT_MS = 120_000;

/** Variables of the worker's config that no two local workers may share. */
const PER_NODE = new Set(['ARCHWAY_NODE_ID', 'ARCHWAY_WORKER_METRICS_PORT']);

export interface RunScalerOptions {
  /** Handle SIGTERM and SIGINT (close; a second signal or the close timeout forces an exit). Default true. */
  handleSignals?: boolean;
  /** Close timeout of the local provider's workers, in ms (default 60 s). */
  localCloseTimeoutMs?: number;
}

export interface ScalerProcess {
  scaler: Scaler;
  provider: ScalerProvider;
  /** The local provider (with its workers), when that is the one in use. */
  local?: LocalProvider;
  arches: readonly Arch[];
  /** Idempotent: the scaler (and so its provider), then the queue and Redis. */
  close(): Promise<void>;
  /** Resolves once close() has finished. */
  readonly closed: Promise<void>;
}

/** The named variables of `env` that are set, as a record. */
function pick(env: Record<string, string | undefined>, names: Iterable<string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) {
    const v = env[n];
    if (v !== undefined && v !== '') out[n] = v;
  }
  return out;
}

/**
 * The composition root of `archway scaler`: parses ScalerConfig once, builds the logger, Redis,
 * the queue (for depths), the node registry, the pools and the provider, and starts the loop.
 * The first SIGTERM or SIGINT closes (local workers drain); a second one exits at once.
 */
export async function runScaler(
  env: Record<string, string | undefined>,
  opts: RunScalerOptions = {},
): Promise<ScalerProcess> {
  const config = parseConfig(ScalerConfig, env);
  const arches: Arch[] =
    config.ARCHWAY_SCALER_ARCHES.trim() === 'all'
      ? [...ARCHES]
      : [
          ...new Set(
            config.ARCHWAY_SCALER_ARCHES.split(',')
              .map((s) => s.trim())
              .filter(Boolean)
              .map((s) => parseArch(s, 'ARCHWAY_SCALER_ARCHES')),
          ),
        ];
  const logger = createLogger({
    name: 'scaler',
    level: config.ARCHWAY_LOG_LEVEL,
    format: config.ARCHWAY_LOG_FORMAT,
  });
  const redis = await connectRedis({ url: config.REDIS_URL, name: 'archway-scaler', logger });
  const keys = createKeys(config.ARCHWAY_REDIS_PREFIX);
  const queue = createJobQueue({
    redis,
    keys,
    logRetentionSeconds: Math.round(config.ARCHWAY_LOG_RETENTION_DAYS * 86_400),
  });
  const nodes = createNodeRegistry(redis, keys);
  const pools = createPoolStore(redis, keys);
  const status = createPoolStatus({ redis, keys, queue, nodes, pools });
  const bootTimeoutMs = config.ARCHWAY_SCALER_BOOT_TIMEOUT_SECONDS * 1000;

  let local: LocalProvider | undefined;
  let provider: ScalerProvider;
  switch (config.ARCHWAY_SCALER_PROVIDER) {
    case 'local': {
      // Workers get what a worker reads (its own config's variables) and PATH: nothing else of ours.
      const names = Object.keys(WorkerConfig.shape).filter((n) => !PER_NODE.has(n));
      local = createLocalProvider({
        env: { PATH: env.PATH ?? '/usr/local/bin:/usr/bin:/bin', ...pick(env, names) },
        warm: config.ARCHWAY_SCALER_LOCAL_WARM,
        bootTimeoutMs,
        logger,
        ...(opts.localCloseTimeoutMs === undefined ? {} : { closeTimeoutMs: opts.localCloseTimeoutMs }),
      });
      provider = local;
      break;
    }
    case 'exec':
      provider = createExecProvider({
        command: config.ARCHWAY_SCALER_EXEC_COMMAND ?? '',
        env: pick(env, ['PATH', 'HOME', ...config.ARCHWAY_SCALER_EXEC_PASS_ENV]),
        timeoutMs: config.ARCHWAY_SCALER_EXEC_TIMEOUT_SECONDS * 1000,
        bootTimeoutMs,
        logger,
      });
      break;
    default: {
      const never: never = config.ARCHWAY_SCALER_PROVIDER;
      throw new Error(`unknown provider ${String(never)}`);
    }
  }

  const scaler = createScaler({
    redis,
    keys,
    pools,
    status,
    nodes,
    provider,
    arches,
    intervalMs: config.ARCHWAY_SCALER_INTERVAL_SECONDS * 1000,
    policy: {
      upAfterMs: config.ARCHWAY_SCALER_UP_AFTER_SECONDS * 1000,
      upCooldownMs: config.ARCHWAY_SCALER_UP_COOLDOWN_SECONDS * 1000,
      downAfterMs: config.ARCHWAY_SCALER_DOWN_AFTER_SECONDS * 1000,
    },
    bootEstimateMs: config.ARCHWAY_SCALER_BOOT_SECONDS * 1000,
    instanceId: `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
    logger,
  });

  const { close, closed } = createCloser({
    name: 'scaler',
    logger,
    handleSignals: opts.handleSignals ?? true,
    timeoutMs: CLOSE_TIMEOUT_MS,
    steps: [
      ['scaler', () => scaler.close()],
      ['queue', () => queue.close()],
      ['redis', () => redis.quit()],
    ],
  });

  try {
    await scaler.start();
  } catch (e) {
    await close();
    throw e;
  }
  logger.info(
    { provider: provider.name, arches, interval: config.ARCHWAY_SCALER_INTERVAL_SECONDS },
    'scaler running',
  );
  return { scaler, provider, ...(local ? { local } : {}), arches, close, closed };
}
