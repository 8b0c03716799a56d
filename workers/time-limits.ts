import type { Arch, EffectiveLimits, JobSpec } from '../src/core/index.ts';

/** The limits a node of an arch with `multiplier` applies to a job (rounded up to whole seconds). Pure. */
export function effectiveLimits(
  spec: Pick<JobSpec, 'timeoutSeconds' | 'silenceTimeoutSeconds'>,
  multiplier = 1,
): EffectiveLimits {
  return {
    timeoutSeconds: Math.ceil(spec.timeoutSeconds * multiplier),
    silenceTimeoutSeconds: Math.ceil(spec.silenceTimeoutSeconds * multiplier),
    multiplier,
  };
}

/** Seconds as a limit is read: 45s, 10m, 2m30s, 1h, 1h05m. Pure. */
export function formatLimit(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0)
    return m || s
      ? `${h}h${String(m).padStart(2, '0')}m${s ? `${String(s).padStart(2, '0')}s` : ''}`
      : `${h}h`;
  if (m > 0) return s ? `${m}m${String(s).padStart(2, '0')}s` : `${m}m`;
  return `${s}s`;
}

/**
 * The log header's line for scaled limits ("time limits x3 on s390x (emulated): 10m -> 30m,
 * silence 2m -> 6m"); '' when the multiplier is 1. Pure.
 */
export function limitsNote(
  spec: Pick<JobSpec, 'timeoutSeconds' | 'silenceTimeoutSeconds'>,
  l: EffectiveLimits,
  where: { arch: Arch; emulated: boolean },
): string {
  if (l.multiplier === 1) return '';
  return `[archway] time limits x${l.multiplier} on ${where.arch}${where.emulated ? ' (emulated)' : ''}: ${formatLimit(spec.timeoutSeconds)} -> ${formatLimit(l.timeoutSeconds)}, silence ${formatLimit(spec.silenceTimeoutSeconds)} -> ${formatLimit(l.silenceTimeoutSeconds)}\n`;
}
