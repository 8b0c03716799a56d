import { createHash } from 'node:crypto';
import type { YamlValue } from './load-yaml.ts';

/**
 * One variable of a job's environment, as the config wrote it.
 *
 * A plain variable keeps its value as shell text (`FOO="a b"`, `PATH=$HOME/bin:$PATH`): like
 * Travis, archway runs `export NAME=value` in the job's shell, so quotes and `$VARS` work as in
 * a shell. A `secure:` value is never decrypted here: it becomes a placeholder, named by the
 * first 12 hex digits of the ciphertext's sha256.
 */
export type EnvVar =
  | { secure: false; name: string; value: string }
  | { secure: true; id: string; name?: string; ciphertext: string };

/** `NAME=value` for a plain variable; `[secure:<id>]` (or `NAME=[secure:<id>]`) for a secure one. */
export function envString(v: EnvVar): string {
  if (!v.secure) return `${v.name}=${v.value}`;
  return v.name === undefined ? `[secure:${v.id}]` : `${v.name}=[secure:${v.id}]`;
}

/** Travis's way of reading `A=1 B="two words" C=$(cmd)` (travis-build's Env::Var pattern). */
const VAR_PATTERN =
  /(?:SECURE )?(\w+)=((?:[^"'`\s]?(["'`]).*?(?<!\\)\3)+|(?:[^$]?\$\(.*?\))+|[^"'\s]+|(?=\s)|$)/g;

/** The variables of one `NAME=value ...` string, or undefined when it holds none. */
export function parseEnvString(line: string): EnvVar[] | undefined {
  const vars: EnvVar[] = [];
  for (const m of line.matchAll(VAR_PATTERN)) {
    const name = m[1];
    if (name === undefined) continue;
    vars.push({ secure: false, name, value: m[2] ?? '' });
  }
  return vars.length > 0 ? vars : undefined;
}

/** Shell text for a value given as a YAML mapping value: bare when safe, else double-quoted (so `$VARS` still expand). */
function shellValue(raw: string): string {
  if (/^[\w.,:/@%+=${}~^-]*$/.test(raw)) return raw;
  return `"${raw.replace(/(["\\`])/g, '\\$1')}"`;
}

function secureId(ciphertext: string): string {
  return createHash('sha256').update(ciphertext).digest('hex').slice(0, 12);
}

/** Thrown with a path relative to the value being read. */
export class EnvError extends Error {
  readonly path: (string | number)[];
  constructor(message: string, path: (string | number)[] = []) {
    super(message);
    this.path = path;
  }
}

/** The variables of one entry: `A=1 B=2`, `{A: 1, B: 2}` or `{secure: ...}`. */
export function envEntry(value: YamlValue): EnvVar[] {
  if (value === null) return [];
  if (typeof value === 'string') {
    if (value.trim() === '') return [];
    const vars = parseEnvString(value);
    if (!vars) throw new EnvError(`expected NAME=value, got '${value}'`);
    return vars;
  }
  if (typeof value === 'boolean') throw new EnvError(`expected NAME=value, got ${value}`);
  if (Array.isArray(value)) return value.flatMap((v, i) => withPath(() => envEntry(v), [i]));
  const keys = Object.keys(value);
  if (keys.length === 1 && keys[0] === 'secure') {
    const c = value.secure;
    if (typeof c !== 'string' || c === '')
      throw new EnvError('secure: expected the encrypted string', ['secure']);
    return [{ secure: true, id: secureId(c), ciphertext: c }];
  }
  return keys.map((name) => {
    const v = value[name] ?? null;
    if (!/^[A-Za-z_]\w*$/.test(name)) throw new EnvError(`'${name}' is not a variable name`, [name]);
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const inner = Object.keys(v);
      if (inner.length === 1 && inner[0] === 'secure' && typeof v.secure === 'string') {
        return { secure: true as const, id: secureId(v.secure), name, ciphertext: v.secure };
      }
    }
    if (v !== null && typeof v === 'object') {
      throw new EnvError('expected a value (a string, a number or a boolean)', [name]);
    }
    return { secure: false as const, name, value: shellValue(v === null ? '' : String(v)) };
  });
}

function withPath<T>(fn: () => T, prefix: (string | number)[]): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof EnvError) throw new EnvError(e.message, [...prefix, ...e.path]);
    throw e;
  }
}

/** A list of entries, each a job's variables (`env.jobs`): a single entry is a list of one. */
export function envEntries(value: YamlValue): EnvVar[][] {
  if (value === null) return [];
  const list = Array.isArray(value) ? value : [value];
  const out: EnvVar[][] = [];
  list.forEach((item, i) => {
    if (item === null) return;
    // A nested list (an alias of a list of entries) is flattened, as Travis does.
    if (Array.isArray(item)) {
      for (const inner of withPath(() => envEntries(item), [i])) out.push(inner);
      return;
    }
    const vars = withPath(() => envEntry(item), [i]);
    if (vars.length > 0) out.push(vars);
  });
  return out;
}

/** The shape `env:` takes at the root: global variables, and the entries that expand the matrix. */
export interface RootEnv {
  global: EnvVar[];
  /** `env.jobs` (or `env.matrix`, or a bare `env` list); undefined when none is given. */
  jobs: EnvVar[][] | undefined;
  /** Set when both `env.jobs` and `env.matrix` were given. */
  warning?: string;
}

function isMapping(v: YamlValue): v is { [key: string]: YamlValue } {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Reads the root `env:` in each of its forms. */
export function rootEnv(value: YamlValue): RootEnv {
  if (value === null) return { global: [], jobs: undefined };
  if (isMapping(value) && ('global' in value || 'jobs' in value || 'matrix' in value)) {
    const unknown = Object.keys(value).filter((k) => !['global', 'jobs', 'matrix'].includes(k));
    if (unknown[0] !== undefined) {
      throw new EnvError(`unknown key '${unknown[0]}': env takes global and jobs (or matrix)`, [unknown[0]]);
    }
    const global = withPath(() => envEntries(value.global ?? null).flat(), ['global']);
    const both = value.jobs !== undefined && value.matrix !== undefined;
    const jobsValue = value.matrix !== undefined ? value.matrix : (value.jobs ?? null);
    const jobsKey = value.matrix !== undefined ? 'matrix' : 'jobs';
    const jobs = jobsValue === null ? undefined : withPath(() => envEntries(jobsValue), [jobsKey]);
    return {
      global,
      jobs,
      ...(both
        ? { warning: 'env: both matrix and jobs are given; env.matrix is used (as Travis does)' }
        : {}),
    };
  }
  return { global: [], jobs: envEntries(value) };
}

/** A job's variables as a condition's `env(NAME)` sees them: quotes removed, the last one wins. */
export function envForConditions(vars: readonly EnvVar[]): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  for (const v of vars) {
    if (v.secure) continue;
    const m = /^(["'])(.*)\1$/s.exec(v.value);
    out[v.name] = m ? (m[2] ?? '') : v.value;
  }
  return out;
}
