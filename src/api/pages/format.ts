/** `1h 02m`, `3m 05s`, `4.2s`: a duration for people. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '';
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** How long a job ran (or has been running, or waiting), from its timestamps. */
export function jobDuration(
  j: { createdAt: string; startedAt?: string | undefined; finishedAt?: string | undefined },
  now = Date.now(),
): string {
  const start = Date.parse(j.startedAt ?? '');
  if (Number.isNaN(start)) return '';
  const end = Date.parse(j.finishedAt ?? '') || now;
  return formatDuration(end - start);
}

/** `2026-12-01 11:22:33 UTC`. */
export function formatTime(iso: string | undefined): string {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}
