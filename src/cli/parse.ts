import { InvalidInputError } from '../core/light.ts';

/** A positive number from a command-line value, or an error naming the option. */
export function positiveNumber(option: string, value: unknown, integer = false): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new InvalidInputError(
      option,
      `expected a positive ${integer ? 'integer' : 'number'}, got '${String(value)}'`,
    );
  }
  return n;
}

/** Commander's accumulator for a repeatable option. */
export const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** `K=V` values of a repeatable option, as a record; an error names the option. */
export function keyValues(option: string, values: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of values) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new InvalidInputError(option, `expected KEY=VALUE, got '${kv}'`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}
