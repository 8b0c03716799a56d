import type { Arch } from '../../src/core/index.ts';

/** What a provider is told of a pool at each pass. */
export interface ReconcileInput {
  /** Ids of the arch's live nodes (lost ones left out). */
  registered: ReadonlySet<string>;
  /** Live nodes of the arch that count (not draining). */
  present: number;
  now: number;
}

/** Starts and releases nodes for the scaler: `local` (processes on this host) or `exec` (the operator's command). */
export interface ScalerProvider {
  readonly name: 'local' | 'exec';
  /** Nodes asked for on `arch` that have not registered yet; gives up on those past the boot timeout. */
  reconcile(arch: Arch, input: ReconcileInput): number;
  /** Starts `add` more nodes of `arch`, `slots` slots each, for a pool of `total` nodes. */
  up(req: { arch: Arch; add: number; total: number; slots: number }): Promise<void>;
  /** `node` has drained and left (or was lost); the pool now has `total` nodes: release what held it. */
  down(req: { arch: Arch; node: string; total: number }): Promise<void>;
  /** Idempotent; what each provider does with its nodes is documented on it. */
  close(): Promise<void>;
}
