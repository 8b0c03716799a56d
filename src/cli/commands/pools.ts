import type { Command } from 'commander';
import { InvalidInputError, parseArch } from '../../core/light.ts';
import { apiClientFrom, CLIENT_ENV_HELP } from '../api-client.ts';
import { out, outJson } from '../output.ts';
import { table } from '../table.ts';

/** A pool as `GET /v1/pools` returns it (the fields this command prints). */
interface PoolRow {
  arch: string;
  min: number;
  max: number;
  slotsPerNode: number;
  configured: boolean;
  desired: number | null;
  waiting: number;
  /** Absent from an API older than concurrency caps. */
  held?: number;
  running: number;
  healthyNodes: number;
  totalSlots: number;
  drainingNodes: number;
  quarantinedNodes: number;
  lostNodes: number;
  oldestWaitingSeconds: number | null;
  estimatedWaitSeconds: number | null;
  estimate: { basis: string; note: string };
  scaler: { provider: string; lastSeen: string; reactionSeconds: number } | null;
}

/** A count of nodes from a command-line value (0 allowed), or an error naming the option. */
function count(option: string, value: string | undefined, min = 0): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isInteger(n) || n < min)
    throw new InvalidInputError(option, `expected an integer of ${min} or more, got '${value}'`);
  return n;
}

/** Seconds as people read them: 45s, 3m10s, 2h05m. */
export function duration(s: number | null): string {
  if (s === null) return '-';
  if (s < 60) return `${Math.round(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

function rows(list: PoolRow[]): string {
  return table(
    [
      'ARCH',
      'MIN',
      'MAX',
      'DESIRED',
      'SLOTS/NODE',
      'NODES',
      'SLOTS',
      'RUNNING',
      'WAITING',
      'OLDEST',
      'EST. WAIT',
    ],
    list.map((p) => {
      const others = [
        p.drainingNodes ? `${p.drainingNodes} draining` : '',
        p.quarantinedNodes ? `${p.quarantinedNodes} quarantined` : '',
        p.lostNodes ? `${p.lostNodes} lost` : '',
      ].filter(Boolean);
      return [
        p.arch,
        String(p.min),
        p.max === 0 ? '0 (disabled)' : String(p.max),
        p.desired === null ? '-' : String(p.desired),
        String(p.slotsPerNode),
        `${p.healthyNodes}${others.length ? ` (+${others.join(', ')})` : ''}`,
        String(p.totalSlots),
        String(p.running),
        p.held ? `${p.waiting} (+${p.held} held)` : String(p.waiting),
        duration(p.oldestWaitingSeconds),
        p.estimatedWaitSeconds !== null
          ? duration(p.estimatedWaitSeconds)
          : p.estimate.basis === 'disabled'
            ? 'disabled'
            : `unknown (${p.estimate.note})`,
      ];
    }),
  );
}

/** `archway pools` (a table of every arch's pool) and `archway pools set ARCH --min N --max N [--slots N]`. */
export function registerPools(program: Command, env: Record<string, string | undefined>): void {
  const api = () => apiClientFrom(env);
  const pools = program
    .command('pools')
    .description('list the pools per arch: settings, nodes, running and waiting jobs, estimated wait')
    .option('--json', 'print {"pools": [...]} as the API returns them')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway pools --json`,
    )
    .action(async (opts: { json?: boolean }) => {
      const answer = await api().json<{ pools: PoolRow[] }>('GET', '/v1/pools');
      if (opts.json) return outJson(answer);
      const list = answer.pools;
      await out(rows(list));
      const scalers = list.filter((p) => p.scaler);
      if (scalers.length === 0) process.stderr.write('archway: no scaler has reported (`archway scaler`)\n');
    });
  pools
    .command('set')
    .description("change an arch's pool (settings left out keep their values); --max 0 disables it")
    .argument('<arch>', 'amd64, arm64, ppc64le or s390x (aliases accepted)')
    .option('--min <n>', 'nodes kept even with nothing to do')
    .option('--max <n>', 'nodes the scaler never goes beyond (0 disables the pool)')
    .option('--slots <n>', 'slots (jobs at once) of each node the scaler starts')
    .option('--json', 'print the pool as the API returns it')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway pools set arm64 --min 1 --max 4`,
    )
    .action(async (archArg: string, opts: { min?: string; max?: string; slots?: string; json?: boolean }) => {
      const arch = parseArch(archArg, 'ARCH');
      const body = {
        ...(opts.min === undefined ? {} : { min: count('--min', opts.min) }),
        ...(opts.max === undefined ? {} : { max: count('--max', opts.max) }),
        ...(opts.slots === undefined ? {} : { slotsPerNode: count('--slots', opts.slots, 1) }),
      };
      if (Object.keys(body).length === 0)
        throw new InvalidInputError('pools set', 'give at least one of --min, --max, --slots');
      const pool = await api().json<PoolRow>('PUT', `/v1/pools/${arch}`, { body });
      await (opts.json ? outJson(pool) : out(rows([pool])));
    });
}
