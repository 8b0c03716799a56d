import { InvalidInputError } from '../core/index.ts';

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
