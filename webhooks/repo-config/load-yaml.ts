import {
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
  type Scalar,
  visit,
  type YAMLMap,
} from 'yaml';
import { ConfigError, type SourcePosition } from './config-error.ts';

/** A YAML document as the config reader sees it: every scalar is a string, a boolean or null. */
export type YamlValue = string | boolean | null | YamlValue[] | { [key: string]: YamlValue };
export type YamlMapping = { [key: string]: YamlValue };

/** A path to a value: keys and list indexes (`['jobs', 'include', 2, 'arch']`). */
export type KeyPath = readonly (string | number)[];

/** Limits that refuse a YAML bomb before it costs memory. */
export interface YamlLimits {
  /** Largest document, in bytes. Default 256 KiB. */
  maxBytes?: number;
  /** The yaml package's `maxAliasCount` (alias uses weighted by what they repeat). Default 1000. */
  maxAliasCount?: number;
  /** Most values (scalars, lists, mappings) after aliases and merge keys are expanded. Default 50,000. */
  maxNodes?: number;
  /** Deepest nesting. Default 64. */
  maxDepth?: number;
}

export const DEFAULT_YAML_LIMITS: Required<YamlLimits> = {
  maxBytes: 256 * 1024,
  maxAliasCount: 1000,
  maxNodes: 50_000,
  maxDepth: 64,
};

/** `jobs.include[2].arch`: how a key path is shown to users. */
export function formatKeyPath(path: KeyPath): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? part : `.${part}`;
  }
  return out;
}

/** Where each value of a loaded document was written. */
export class SourceMap {
  readonly #positions = new Map<string, SourcePosition>();
  readonly #lines: string[];

  constructor(text: string) {
    this.#lines = text.split(/\r?\n/);
  }

  set(path: KeyPath, pos: SourcePosition): void {
    this.#positions.set(JSON.stringify(path), pos);
  }

  has(path: KeyPath): boolean {
    return this.#positions.has(JSON.stringify(path));
  }

  /** The position of this path, or of its nearest ancestor that has one. */
  find(path: KeyPath): SourcePosition | undefined {
    for (let n = path.length; n >= 0; n--) {
      const pos = this.#positions.get(JSON.stringify(path.slice(0, n)));
      if (pos) return pos;
    }
    return undefined;
  }

  /** The text of a 1-based line, without its end. */
  line(n: number): string | undefined {
    return this.#lines[n - 1];
  }

  /** A ConfigError that names the key, its line and column, and quotes the line. */
  error(path: KeyPath, detail: string): ConfigError {
    const position = this.find(path);
    return new ConfigError(detail, {
      keyPath: formatKeyPath(path),
      position,
      excerpt: position ? this.line(position.line) : undefined,
    });
  }
}

export interface LoadedYaml {
  value: YamlValue;
  source: SourceMap;
  /** Things that were accepted but that the user should know (a duplicate key, ...). */
  warnings: string[];
}

/**
 * Reads a YAML document the way `.travis.yml` files are written: YAML 1.1 (`on`/`yes` are
 * booleans as values), anchors and aliases, merge keys (`<<: *a`, `<<: [*a, *b]`, several `<<`
 * in one mapping), duplicate keys (the last one counts, as in Ruby's YAML reader).
 *
 * Scalars become strings, booleans or null. Numbers keep the text they were written with
 * (`python: 3.10` is `'3.10'`, not `3.1`), and mapping keys are always the text as written, so
 * Travis's `deploy: on:` stays `on` although YAML 1.1 reads it as `true`.
 *
 * Refused before they cost memory: a document over `maxBytes`, alias use over `maxAliasCount`
 * (checked by the yaml package on its shared-reference view, which does not grow), and an
 * expansion over `maxNodes` values or `maxDepth` levels.
 */
export function loadYaml(text: string, limits: YamlLimits = {}): LoadedYaml {
  const lim = { ...DEFAULT_YAML_LIMITS, ...limits };
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > lim.maxBytes) {
    throw new ConfigError(
      `the config is ${bytes} bytes; the limit is ${lim.maxBytes} bytes (${Math.floor(lim.maxBytes / 1024)} KiB)`,
    );
  }
  const source = new SourceMap(text);
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, {
    version: '1.1',
    merge: true,
    uniqueKeys: false,
    lineCounter,
    prettyErrors: true,
  });
  const posAt = (offset: number): SourcePosition => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  const firstError = doc.errors[0];
  if (firstError) {
    const position = posAt(firstError.pos[0]);
    const detail =
      firstError.message.split('\n')[0]?.replace(/ at line \d+, column \d+:?$/, '') ?? 'bad YAML';
    throw new ConfigError(`invalid YAML: ${detail}`, { position, excerpt: source.line(position.line) });
  }
  const warnings = doc.warnings.map((w) => {
    const p = posAt(w.pos[0]);
    return `line ${p.line}: ${w.message.split('\n')[0] ?? ''}`;
  });

  // The yaml package's own bomb check: aliases resolve to shared references here, so this costs
  // no more memory than the document, and throws on exponential alias use.
  try {
    doc.toJS({ maxAliasCount: lim.maxAliasCount });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    if (/excessive alias count/i.test(msg)) {
      throw new ConfigError(
        `too many aliases: the document repeats anchored content more than ${lim.maxAliasCount} times (a YAML alias bomb?)`,
      );
    }
    throw new ConfigError(`invalid YAML: ${msg}`);
  }

  // Anchors as the document defines them: an alias names the last anchor before it.
  const aliasTarget = new Map<Node, Node>();
  const anchors = new Map<string, Node>();
  visit(doc, {
    Node(_key, node) {
      if (isAlias(node)) {
        const target = anchors.get(node.source);
        if (target) aliasTarget.set(node, target);
      }
      const anchor = (node as { anchor?: string }).anchor;
      if (anchor) anchors.set(anchor, node);
    },
  });

  let nodes = 0;
  const resolving = new Set<Node>();

  const count = (path: KeyPath, depth: number) => {
    nodes++;
    if (nodes > lim.maxNodes) {
      throw new ConfigError(
        `the config expands to more than ${lim.maxNodes} values once its aliases and merge keys are applied (a YAML alias bomb?)`,
      );
    }
    if (depth > lim.maxDepth) throw source.error(path, `nested deeper than ${lim.maxDepth} levels`);
  };

  const resolve = (node: Node, path: KeyPath): Node => {
    if (!isAlias(node)) return node;
    const target = aliasTarget.get(node);
    if (!target) {
      if (node.range) source.set(path, posAt(node.range[0]));
      throw source.error(path, `alias *${node.source} names no anchor defined before it`);
    }
    return target;
  };

  const scalarValue = (node: Scalar): string | boolean | null => {
    const v = node.value;
    if (v === null || v === undefined) return null;
    if (typeof v === 'boolean' || typeof v === 'string') return v;
    // Numbers, dates and the like keep their text: `3.10` is a version, not 3.1.
    if (typeof node.source === 'string' && node.source !== '') return node.source;
    return String(v);
  };

  const keyString = (key: unknown, path: KeyPath, depth: number): string => {
    let k = key;
    if (isAlias(k)) k = resolve(k, path);
    if (k === null || k === undefined) return '';
    if (isScalar(k)) {
      if (typeof k.value === 'string') return k.value;
      if (typeof k.source === 'string') return k.source;
      return String(k.value ?? '');
    }
    count(path, depth);
    throw source.error(path, 'a mapping key must be a plain value, not a list or a mapping');
  };

  const isMergeKey = (key: unknown): boolean =>
    isScalar(key) &&
    ((typeof key.value === 'symbol' && key.value.description === '<<') ||
      (key.value === '<<' && key.type === 'PLAIN'));

  const convert = (input: unknown, path: KeyPath, depth: number): YamlValue => {
    if (input === null || input === undefined) {
      count(path, depth);
      return null;
    }
    const node = resolve(input as Node, path);
    if (resolving.has(node))
      throw source.error(path, 'an alias refers to the mapping or list that contains it');
    resolving.add(node);
    try {
      count(path, depth);
      if (isScalar(node)) {
        if (node.range) source.set(path, posAt(node.range[0]));
        return scalarValue(node);
      }
      if (isSeq(node)) {
        if (!source.has(path) && node.range) source.set(path, posAt(node.range[0]));
        return node.items.map((item, i) => {
          const p = [...path, i];
          const itemNode = item as Node | null;
          if (itemNode && !isScalar(itemNode) && itemNode.range) source.set(p, posAt(itemNode.range[0]));
          return convert(itemNode, p, depth + 1);
        });
      }
      if (isMap(node)) return convertMap(node, path, depth);
      throw source.error(path, 'unsupported YAML node');
    } finally {
      resolving.delete(node);
    }
  };

  const convertMap = (node: YAMLMap, path: KeyPath, depth: number): YamlMapping => {
    const out: YamlMapping = Object.create(null);
    const merges: { node: unknown; path: KeyPath }[] = [];
    const explicit: { key: string; keyNode: unknown; value: unknown }[] = [];
    for (const pair of node.items) {
      if (!isPair(pair)) continue;
      if (isMergeKey(pair.key)) {
        merges.push({ node: pair.value, path });
        continue;
      }
      explicit.push({ key: keyString(pair.key, path, depth + 1), keyNode: pair.key, value: pair.value });
    }
    // Merge keys first, so that explicit keys win over merged ones (YAML's merge rule). Of several
    // `<<` in one mapping, a later one wins over an earlier one (as Ruby's reader applies them in
    // order); in `<<: [*a, *b]`, `a` wins over `b` (YAML's rule).
    for (const merge of merges) {
      const mergeNode =
        merge.node === null || merge.node === undefined ? null : resolve(merge.node as Node, path);
      const sources: unknown[] = isSeq(mergeNode) ? [...mergeNode.items].reverse() : [mergeNode];
      for (const src of sources) {
        const srcNode = src === null || src === undefined ? null : resolve(src as Node, path);
        if (!isMap(srcNode)) {
          throw source.error(path, '`<<` merges a mapping (an alias of one) or a list of them');
        }
        const merged = convert(srcNode, path, depth) as YamlMapping;
        for (const key of Object.keys(merged)) out[key] = merged[key] as YamlValue;
      }
    }
    const seen = new Set<string>();
    for (const { key, keyNode, value } of explicit) {
      const p = [...path, key];
      const keyPos = isScalar(keyNode) && keyNode.range ? posAt(keyNode.range[0]) : undefined;
      if (seen.has(key)) {
        warnings.push(`line ${keyPos?.line ?? '?'}: duplicate key ${formatKeyPath(p)}: the last one counts`);
      }
      seen.add(key);
      if (keyPos) source.set(p, keyPos);
      out[key] = convert(value, p, depth + 1);
    }
    return out;
  };

  const value = convert(doc.contents, [], 0);
  return { value, source, warnings };
}
