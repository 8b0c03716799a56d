import type { Command } from 'commander';
import { apiClientFrom, CLIENT_ENV_HELP } from '../api-client.ts';
import { out, outJson } from '../output.ts';
import { table } from '../table.ts';

interface NodeRow {
  id: string;
  arch: string;
  hostArch: string;
  emulated: boolean;
  slots: number;
  busy: number;
  state: string;
  quarantineReason?: string;
  drainRequested: boolean;
  lost: boolean;
  version: string;
  lastSeen: string;
}

/** `archway nodes` (a table in the style of `lxc cluster list`), `nodes drain ID`, `nodes undrain ID`. */
export function registerNodes(program: Command, env: Record<string, string | undefined>): void {
  const api = () => apiClientFrom(env);
  const nodes = program
    .command('nodes')
    .description('list worker nodes with their arch, emulation, slots and state')
    .option('--json', 'print {"nodes": [...]} as the API returns them')
    .option('--all', 'also nodes lost for longer than ARCHWAY_LOST_NODE_RETENTION_SECONDS (default 10 min)')
    .addHelpText(
      'after',
      `${CLIENT_ENV_HELP}

Example:
  archway nodes --json`,
    )
    .action(async (opts: { json?: boolean; all?: boolean }) => {
      const answer = await api().json<{ nodes: NodeRow[] }>('GET', `/v1/nodes${opts.all ? '?all=true' : ''}`);
      if (opts.json) return outJson(answer);
      const list = answer.nodes;
      const status = (n: NodeRow) =>
        n.lost ? 'LOST' : n.state === 'active' ? 'ONLINE' : n.state.toUpperCase();
      await out(
        table(
          ['NAME', 'ARCH', 'HOST', 'EMULATED', 'SLOTS', 'BUSY', 'STATUS', 'MESSAGE'],
          list.map((n) => [
            n.id,
            n.arch,
            n.hostArch,
            n.emulated ? 'yes' : 'no',
            String(n.slots),
            String(n.busy),
            status(n),
            n.lost
              ? `no heartbeat since ${n.lastSeen}`
              : (n.quarantineReason ??
                (n.drainRequested ? 'drain requested: leaves once its jobs finish' : 'fully operational')),
          ]),
        ),
      );
    });
  for (const [action, what] of [
    ['drain', 'take no new job, finish the running ones, then leave'],
    ['undrain', 'take jobs again (a draining node that has not left, or a quarantined one)'],
  ] as const) {
    nodes
      .command(action)
      .description(`ask a node to ${what}`)
      .argument('<id>', 'node id (see `archway nodes`)')
      .option('--json', 'print the node as the API returns it')
      .addHelpText('after', `${CLIENT_ENV_HELP}\n\nExample:\n  archway nodes ${action} amd64-host1-1a2b`)
      .action(async (id: string, opts: { json?: boolean }) => {
        const answer = await api().json<{ node: NodeRow }>(
          'POST',
          `/v1/nodes/${encodeURIComponent(id)}/${action}`,
        );
        if (opts.json) return outJson(answer);
        const { node } = answer;
        await out(`${node.id}: ${action === 'drain' ? 'draining' : 'undrained'} (${node.busy} running)\n`);
      });
  }
}
