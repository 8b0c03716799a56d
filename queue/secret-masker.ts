/**
 * Secret masking in time linear in the output, whatever the secrets' count and length: one
 * Aho-Corasick automaton over the secrets' UTF-8 bytes, run twice over the output, once over the
 * bytes as they are and once over the bytes with terminal escape sequences removed (what a log
 * page or a check run shows), so that `printf '%s\033[0m%s' "$a" "$b"` does not show `$a$b`.
 *
 * Hand-written rather than taken from npm: the maintained packages keep a Map (or an object) per
 * trie node and so need hundreds of bytes per secret byte (100 secrets of 64 KiB: ~1 GB), and
 * none of them streams with a bounded hold-back. This one keeps ~14 bytes per secret byte in
 * typed arrays (docs/benchmarks.md).
 */

/** What a masked run of output is replaced by. */
export const MASK = '[secure]';
const MASK_BYTES = Buffer.from(MASK);

// The escape-sequence machine (a subset of ECMA-48, as terminals parse it). A byte is either
// visible or part of a sequence; one definition serves the masker and stripAnsi, so what the
// masker's second pass sees is exactly what a stripped view shows.
const GROUND = 0;
const ESC = 1;
const ESC_INTERMEDIATE = 2;
const CSI = 3;

/** The next state, shifted left by one, with bit 0 set when `c` is visible. */
function ansiStep(state: number, c: number): number {
  switch (state) {
    case GROUND:
      return c === 0x1b ? ESC << 1 : (GROUND << 1) | 1;
    case ESC:
      if (c === 0x5b) return CSI << 1;
      if (c >= 0x20 && c <= 0x2f) return ESC_INTERMEDIATE << 1;
      if (c >= 0x30 && c <= 0x7e) return GROUND << 1;
      break;
    case ESC_INTERMEDIATE:
      if (c >= 0x20 && c <= 0x2f) return ESC_INTERMEDIATE << 1;
      if (c >= 0x30 && c <= 0x7e) return GROUND << 1;
      break;
    default:
      if (c >= 0x20 && c <= 0x3f) return CSI << 1;
      if (c >= 0x40 && c <= 0x7e) return GROUND << 1;
  }
  // A control or non-ASCII byte ends the sequence and is itself shown; ESC starts a new one.
  return c === 0x1b ? ESC << 1 : (GROUND << 1) | 1;
}

/** `text` without terminal escape sequences (colours, cursor moves): what a plain-text view shows. */
export function stripAnsi(text: string): string {
  if (!text.includes('\x1b')) return text;
  let out = '';
  let state = GROUND;
  let from = -1;
  for (let i = 0; i < text.length; i++) {
    const s = ansiStep(state, text.charCodeAt(i));
    state = s >> 1;
    if (s & 1) {
      if (from < 0) from = i;
    } else if (from >= 0) {
      out += text.slice(from, i);
      from = -1;
    }
  }
  return from >= 0 ? out + text.slice(from) : out;
}

/**
 * The secrets' automaton. Nodes are numbered in insertion order, so most of a secret's path is
 * a chain where node n's child is n + 1 (flagged in `chain`); the few other edges (at most one per
 * secret, plus the root's) are in a map. `out[n]` is the length of the longest secret that ends
 * at n's string (0: none), `depth[n]` the length of n's string.
 */
export interface SecretAutomaton {
  readonly size: number;
  /** Length in bytes of the longest secret. */
  readonly longest: number;
  readonly edge: Uint8Array;
  readonly chain: Uint8Array;
  readonly extra: Map<number, number>;
  readonly root: Int32Array;
  readonly fail: Int32Array;
  readonly out: Int32Array;
  readonly depth: Int32Array;
}

function child(a: SecretAutomaton, s: number, b: number): number {
  if (s === 0) return a.root[b] as number;
  if (a.chain[s] === 1 && a.edge[s + 1] === b) return s + 1;
  return a.extra.get(s * 256 + b) ?? -1;
}

/** The next state from `s` on byte `b`. */
function step(a: SecretAutomaton, s: number, b: number): number {
  let n = child(a, s, b);
  while (n < 0) {
    s = a.fail[s] as number;
    n = child(a, s, b);
  }
  return n;
}

/**
 * Builds the automaton of `secrets` (empty ones ignored; escape sequences in a secret are
 * removed, as the stripped pass would never see them). Time and memory linear in their length.
 */
export function compileSecrets(secrets: readonly string[]): SecretAutomaton {
  const patterns = [...new Set(secrets.map((s) => stripAnsi(s)).filter((s) => s.length > 0))].map((s) =>
    Buffer.from(s),
  );
  const total = patterns.reduce((n, p) => n + p.length, 1);
  const edge = new Uint8Array(total);
  const chain = new Uint8Array(total);
  const extra = new Map<number, number>();
  const root = new Int32Array(256).fill(-1);
  const fail = new Int32Array(total);
  const out = new Int32Array(total);
  const depth = new Int32Array(total);
  const parent = new Int32Array(total);
  const a: SecretAutomaton = { size: 1, longest: 0, edge, chain, extra, root, fail, out, depth };
  let size = 1;
  let longest = 0;
  for (const p of patterns) {
    let s = 0;
    for (let i = 0; i < p.length; i++) {
      const b = p[i] as number;
      let n = child(a, s, b);
      if (n < 0) {
        n = size++;
        edge[n] = b;
        parent[n] = s;
        depth[n] = (depth[s] as number) + 1;
        if (s === 0) root[b] = n;
        else if (n === s + 1) chain[s] = 1;
        else extra.set(s * 256 + b, n);
      }
      s = n;
    }
    out[s] = p.length;
    longest = Math.max(longest, p.length);
  }
  // Failure links in order of depth (a node's link is found from its parent's); counting sort.
  const byDepth = new Int32Array(longest + 2);
  for (let n = 1; n < size; n++)
    byDepth[(depth[n] as number) + 1] = (byDepth[(depth[n] as number) + 1] as number) + 1;
  for (let d = 1; d <= longest + 1; d++) byDepth[d] = (byDepth[d] as number) + (byDepth[d - 1] as number);
  const order = new Int32Array(size);
  for (let n = 1; n < size; n++) {
    const d = depth[n] as number;
    const at = byDepth[d] as number;
    order[at] = n;
    byDepth[d] = at + 1;
  }
  for (let b = 0; b < 256; b++) if ((root[b] as number) < 0) root[b] = 0;
  for (let k = 0; k < size - 1; k++) {
    const n = order[k] as number;
    const p = parent[n] as number;
    if (p !== 0) fail[n] = step(a, fail[p] as number, edge[n] as number);
    if (out[n] === 0) out[n] = out[fail[n] as number] as number;
  }
  return { ...a, size, longest };
}

/** Masks one text at once (a check run's log tail after it was stripped). */
export function maskSecrets(text: string, secrets: readonly string[]): string {
  if (!secrets.some((s) => s.length > 0)) return text;
  const m = createSecretMasker(compileSecrets(secrets));
  m.write(Buffer.from(text));
  return m.take(true).toString();
}

export interface SecretMasker {
  /** Feeds output; time linear in its length. */
  write(data: Buffer): void;
  /**
   * The masked output that can leave now: everything when `final`, else all but the tail that may
   * still become (part of) a secret, cut at a UTF-8 character boundary.
   */
  take(final: boolean): Buffer;
  /** Bytes fed and not yet taken. */
  readonly held: number;
}

/**
 * A streaming masker: each run of output covered by an occurrence of a secret, in the bytes as
 * written or in them with escape sequences removed, is replaced by one MASK (occurrences that
 * overlap or touch make one run). Holds back at most the longest secret's length.
 */
export function createSecretMasker(a: SecretAutomaton): SecretMasker {
  const ring = Math.max(1, a.longest + 1);
  /** Raw position of each of the last visible bytes, by visible index modulo `ring`. */
  const visibleAt = new Float64Array(ring);
  let pos = 0; // raw bytes fed
  let base = 0; // raw position of the first byte not taken
  let chunks: Buffer[] = []; // the bytes from `chunkBase` on
  let chunkBase = 0;
  let rawState = 0;
  let visState = 0;
  let visCount = 0;
  let ansi = GROUND;
  let lastHidden = -1; // raw position of the last byte of an escape sequence
  // Masked runs [start, end) not taken yet, in order, disjoint.
  const starts: number[] = [];
  const ends: number[] = [];

  function cover(start: number, end: number): void {
    let s = Math.max(start, base);
    while (ends.length > 0 && (ends[ends.length - 1] as number) >= s) {
      s = Math.min(s, starts.pop() as number);
      ends.pop();
    }
    starts.push(s);
    ends.push(end);
  }

  function byteAt(p: number): number {
    let off = p - chunkBase;
    for (const c of chunks) {
      if (off < c.length) return c[off] as number;
      off -= c.length;
    }
    return 0;
  }

  return {
    get held() {
      return pos - base;
    },
    write(data) {
      if (data.length === 0) return;
      chunks.push(data);
      const { out, depth } = a;
      for (let i = 0; i < data.length; i++, pos++) {
        const b = data[i] as number;
        const prev = rawState;
        rawState = step(a, rawState, b);
        const hit = out[rawState] as number;
        if (hit > 0) cover(pos + 1 - hit, pos + 1);
        const t = ansi === GROUND && b !== 0x1b ? 1 : ansiStep(ansi, b);
        ansi = t >> 1;
        if (t & 1) {
          visibleAt[visCount % ring] = pos;
          visCount++;
          // In step with the raw pass (same state, no hidden byte in its string): same result.
          if (visState === prev && pos - (depth[prev] as number) > lastHidden) visState = rawState;
          else {
            visState = step(a, visState, b);
            const vhit = out[visState] as number;
            if (vhit > 0) cover(visibleAt[(visCount - vhit) % ring] as number, pos + 1);
          }
        } else lastHidden = pos;
      }
    },
    take(final) {
      let cut = pos;
      if (!final) {
        // A secret still arriving starts at or after the start of the current state's string, in each pass.
        const rd = a.depth[rawState] as number;
        const vd = a.depth[visState] as number;
        cut = Math.min(pos - rd, vd > 0 ? (visibleAt[(visCount - vd) % ring] as number) : pos);
        const last = ends.length - 1;
        if (last >= 0 && (ends[last] as number) > cut) cut = Math.min(cut, starts[last] as number);
        // Never inside a UTF-8 character (a chunk is decoded on its own by readers).
        if (ends.length === 0 || (ends[ends.length - 1] as number) < cut) {
          for (let p = cut - 1, seen = 1; p >= base && seen <= 4; p--, seen++) {
            const b = byteAt(p);
            if ((b & 0xc0) === 0x80) continue;
            const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
            if (need > seen) cut = p;
            break;
          }
          const l = ends.length - 1;
          if (l >= 0 && (ends[l] as number) > cut) cut = Math.min(cut, starts[l] as number);
        }
      }
      if (cut <= base) return Buffer.alloc(0);
      const all = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
      const parts: Buffer[] = [];
      let p = base;
      let k = 0;
      while (k < ends.length && (ends[k] as number) <= cut) {
        const s = starts[k] as number;
        if (s > p) parts.push(all.subarray(p - chunkBase, s - chunkBase));
        parts.push(MASK_BYTES);
        p = ends[k] as number;
        k++;
      }
      if (cut > p) parts.push(all.subarray(p - chunkBase, cut - chunkBase));
      starts.splice(0, k);
      ends.splice(0, k);
      base = cut;
      chunks = base < pos ? [all.subarray(base - chunkBase)] : [];
      chunkBase = base;
      return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
    },
  };
}
