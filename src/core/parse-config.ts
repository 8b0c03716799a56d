import type { z } from 'zod';
import { withDerivedDefaults } from './derived-defaults.ts';
import { InvalidInputError } from './errors/invalid-input-error.ts';

/**
 * Parses `env` with `schema` (after the defaults that follow the pool path, see
 * withDerivedDefaults); a bad value throws an error naming the variable and what it expects.
 */
export function parseConfig<S extends z.ZodType>(
  schema: S,
  env: Record<string, string | undefined>,
): z.infer<S> {
  // Empty strings count as unset, as shells and systemd units often leave them.
  const cleaned = Object.fromEntries(
    Object.entries(withDerivedDefaults(env)).filter(([, v]) => v !== undefined && v !== ''),
  );
  const result = schema.safeParse(cleaned);
  if (!result.success) {
    const issue = result.error.issues[0];
    const name = String(issue?.path[0] ?? 'environment');
    throw new InvalidInputError(
      name,
      `invalid value ${JSON.stringify(cleaned[name] ?? '')}: ${issue?.message ?? 'invalid'}`,
    );
  }
  return result.data;
}
