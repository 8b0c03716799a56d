/** The autoscaler: the scaling decision, the loop, its providers (local, exec), and the `archway scaler` process. */
export {
  decide,
  emptyMemory,
  type ScaleAction,
  type ScaleDecision,
  type ScaleInput,
  type ScaleMemory,
  type ScaleNode,
  type ScalePolicy,
} from './decide.ts';
export type { ReconcileInput, ScalerProvider } from './provider.ts';
export { createExecProvider, type ExecProviderOptions } from './providers/exec-provider.ts';
export {
  createLocalProvider,
  type LocalProvider,
  type LocalProviderOptions,
  type LocalWorker,
} from './providers/local-provider.ts';
export { type RunScalerOptions, runScaler, type ScalerProcess } from './run-scaler.ts';
export { createScaler, type Scaler, type ScalerOptions } from './scaler.ts';
