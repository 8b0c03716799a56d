/**
 * Travis's condition language (conditions v1, https://docs.travis-ci.com/user/conditions-v1), used
 * by `if:` on the build, on stages, on jobs, and on `jobs.exclude` / `jobs.allow_failures`:
 *
 *   branch = master AND (type IN (push, api) OR tag =~ /^v\d+/) AND NOT env(SKIP) IS present
 *
 * Terms: `x = y`, `x == y`, `x != y`, `x =~ re`, `x ~= re`, `x !~ re` (a regex is `/.../` or a
 * bare word), `x IN (a, b)`, `x NOT IN (...)`, `x IS [NOT] present|blank|true|false`, or an
 * operand alone (true unless it is missing or the word `false`). Operands: the attributes below,
 * `env(NAME)`, `concat(a, b, ...)`, a bare word or a quoted string. Connectives: `AND`/`&&`,
 * `OR`/`||` (AND binds tighter), `NOT`, parentheses; keywords in any case; a backslash at the
 * end of a line continues it.
 */

/** The attributes a condition can name. */
export const CONDITION_ATTRIBUTES = [
  'type',
  'repo',
  'head_repo',
  'os',
  'dist',
  'group',
  'sudo',
  'language',
  'sender',
  'fork',
  'branch',
  'head_branch',
  'tag',
  'commit_message',
] as const;
export type ConditionAttribute = (typeof CONDITION_ATTRIBUTES)[number];

/** What a condition is evaluated against: the event's and the job's attributes, and the job's env. */
export type ConditionData = { [K in ConditionAttribute]?: string | boolean | undefined } & {
  /** Variables as the job sets them (global first), quotes removed. */
  env?: Readonly<Record<string, string>>;
};

export type Operand =
  | { kind: 'var'; name: ConditionAttribute }
  | { kind: 'val'; value: string }
  | { kind: 'call'; fn: 'env' | 'concat'; args: Operand[] };

export type ConditionNode =
  | { kind: 'or' | 'and'; left: ConditionNode; right: ConditionNode }
  | { kind: 'not'; expr: ConditionNode }
  | { kind: 'eq' | 'not_eq'; left: Operand; right: Operand }
  | { kind: 'match' | 'not_match'; left: Operand; regex: RegExp | Operand }
  | { kind: 'in' | 'not_in'; left: Operand; list: Operand[] }
  | { kind: 'is' | 'is_not'; left: Operand; pred: 'present' | 'blank' | 'true' | 'false' }
  | { kind: 'term'; operand: Operand };

/** A condition that does not parse; `position` is the 0-based offset where parsing stopped. */
export class ConditionSyntaxError extends Error {
  readonly position: number;
  constructor(message: string, position: number) {
    super(message);
    this.name = 'ConditionSyntaxError';
    this.position = position;
  }
}

const WORD = /[^\s()"',=!]+/y;
const SPACE = /\s*/y;

/** Turns a Ruby regex source into a JavaScript one: the usual anchors and classes, multiline like Ruby. */
export function rubyRegex(source: string): RegExp {
  const js = source
    .replace(/\\A/g, '^')
    .replace(/\\[zZ]/g, '$')
    .replace(/\\h/g, '[0-9a-fA-F]')
    .replace(/\(\?<([a-zA-Z_]\w*)>/g, '(?<$1>');
  // Ruby's ^ and $ match at every line; commit messages have several lines.
  return new RegExp(js, 'm');
}

class Parser {
  readonly #s: string;
  #pos = 0;

  constructor(src: string) {
    this.#s = src.replace(/\\\s*[\n\r]+/g, ' ');
  }

  parse(): ConditionNode {
    this.#space();
    if (this.#pos >= this.#s.length) this.#fail('an empty condition');
    const node = this.#expr();
    this.#space();
    if (this.#pos < this.#s.length) {
      this.#fail(`unexpected '${this.#s.slice(this.#pos, this.#pos + 20)}'`);
    }
    return node;
  }

  #fail(what: string): never {
    throw new ConditionSyntaxError(`cannot parse condition: ${what} at position ${this.#pos + 1}`, this.#pos);
  }

  #space(): void {
    SPACE.lastIndex = this.#pos;
    SPACE.exec(this.#s);
    this.#pos = SPACE.lastIndex;
  }

  /** Consumes a keyword (case-insensitive, whole word) or a symbol. */
  #keyword(...words: string[]): string | undefined {
    this.#space();
    for (const w of words) {
      const slice = this.#s.slice(this.#pos, this.#pos + w.length);
      if (slice.toLowerCase() !== w.toLowerCase()) continue;
      const next = this.#s[this.#pos + w.length];
      if (/^\w/.test(w) && next !== undefined && /[\w]/.test(next)) continue;
      this.#pos += w.length;
      return w.toLowerCase();
    }
    return undefined;
  }

  #peek(ch: string): boolean {
    this.#space();
    return this.#s[this.#pos] === ch;
  }

  #expr(): ConditionNode {
    let left = this.#and();
    while (this.#keyword('or', '||')) left = { kind: 'or', left, right: this.#and() };
    return left;
  }

  #and(): ConditionNode {
    let left = this.#unary();
    while (this.#keyword('and', '&&')) left = { kind: 'and', left, right: this.#unary() };
    return left;
  }

  #unary(): ConditionNode {
    if (this.#peek('(')) {
      this.#pos++;
      const inner = this.#expr();
      if (!this.#peek(')')) this.#fail("expected ')'");
      this.#pos++;
      return inner;
    }
    const save = this.#pos;
    if (this.#keyword('not')) {
      // `NOT IN` only follows an operand, so here NOT negates what comes next.
      if (this.#keyword('in')) {
        this.#pos = save;
      } else {
        return { kind: 'not', expr: this.#unary() };
      }
    }
    return this.#term();
  }

  #term(): ConditionNode {
    const left = this.#operand();
    const save = this.#pos;
    if (this.#keyword('not')) {
      if (this.#keyword('in')) return { kind: 'not_in', left, list: this.#list() };
      this.#pos = save;
    }
    if (this.#keyword('in')) return { kind: 'in', left, list: this.#list() };
    if (this.#keyword('is')) {
      const not = this.#keyword('not') !== undefined;
      const pred = this.#keyword('present', 'blank', 'true', 'false');
      if (!pred) this.#fail('expected present, blank, true or false after IS');
      return { kind: not ? 'is_not' : 'is', left, pred: pred as 'present' | 'blank' | 'true' | 'false' };
    }
    const re = this.#keyword('=~', '~=', '!~');
    if (re) return { kind: re === '!~' ? 'not_match' : 'match', left, regex: this.#regex() };
    const eq = this.#keyword('==', '!=', '=');
    if (eq) return { kind: eq === '!=' ? 'not_eq' : 'eq', left, right: this.#operand() };
    return { kind: 'term', operand: left };
  }

  #list(): Operand[] {
    if (!this.#peek('(')) this.#fail("expected '(' after IN");
    this.#pos++;
    const items: Operand[] = [];
    while (!this.#peek(')')) {
      items.push(this.#operand());
      if (!this.#keyword(',')) break;
    }
    if (!this.#peek(')')) this.#fail("expected ')' to close the list");
    this.#pos++;
    if (items.length === 0) this.#fail('expected a list of values');
    return items;
  }

  #regex(): RegExp | Operand {
    this.#space();
    const call = this.#call();
    if (call) return call;
    const s = this.#s;
    let src: string;
    if (s[this.#pos] === '/') {
      // Up to the next unescaped slash (or the end).
      let i = this.#pos + 1;
      let body = '';
      while (i < s.length && s[i] !== '/') {
        if (s[i] === '\\' && i + 1 < s.length) {
          body += s.slice(i, i + 2);
          i += 2;
        } else {
          body += s[i];
          i++;
        }
      }
      if (i >= s.length) this.#fail('a regular expression opened with / is not closed');
      this.#pos = i + 1;
      src = body;
    } else {
      const m = /\S+/y;
      m.lastIndex = this.#pos;
      const word = m.exec(s)?.[0] ?? '';
      // A bare regex never ends with ')': that closes a group around the term.
      const trimmed = word.replace(/\)+$/, '');
      if (trimmed === '') this.#fail('expected a regular expression');
      this.#pos += trimmed.length;
      src = trimmed;
    }
    try {
      return rubyRegex(src);
    } catch (e) {
      this.#fail(`invalid regular expression /${src}/ (${e instanceof Error ? e.message : String(e)})`);
    }
  }

  #call(): Operand | undefined {
    const save = this.#pos;
    const fn = this.#keyword('env', 'concat');
    if (!fn) return undefined;
    if (!this.#peek('(')) {
      this.#pos = save;
      return undefined;
    }
    this.#pos++;
    const args: Operand[] = [];
    while (!this.#peek(')')) {
      args.push(this.#operand());
      if (!this.#keyword(',')) break;
    }
    if (!this.#peek(')')) this.#fail(`expected ')' to close ${fn}(`);
    this.#pos++;
    if (fn === 'env' && args.length !== 1) this.#fail('env() takes one variable name');
    return { kind: 'call', fn: fn as 'env' | 'concat', args };
  }

  #operand(): Operand {
    this.#space();
    const s = this.#s;
    for (const name of CONDITION_ATTRIBUTES) {
      if (!s.startsWith(name, this.#pos)) continue;
      const next = s[this.#pos + name.length];
      if (next === undefined || /[\s,=)|!~&]/.test(next)) {
        this.#pos += name.length;
        return { kind: 'var', name };
      }
    }
    const call = this.#call();
    if (call) return call;
    const quote = s[this.#pos];
    if (quote === '"' || quote === "'") {
      const end = s.indexOf(quote, this.#pos + 1);
      if (end < 0) this.#fail(`unterminated ${quote} string`);
      const value = s.slice(this.#pos + 1, end);
      this.#pos = end + 1;
      return { kind: 'val', value };
    }
    WORD.lastIndex = this.#pos;
    const word = WORD.exec(s)?.[0];
    if (!word) this.#fail('expected a value, an attribute or env(NAME)');
    if (word.startsWith('$')) {
      this.#fail(`'${word}': shell variables do not work in conditions; use env(NAME), or quote the string`);
    }
    this.#pos += word.length;
    return { kind: 'val', value: word };
  }
}

/** Parses a condition; throws ConditionSyntaxError naming what is wrong and where. */
export function parseCondition(src: string): ConditionNode {
  return new Parser(src).parse();
}

function stringOf(v: string | boolean | undefined): string | undefined {
  return typeof v === 'boolean' ? String(v) : v;
}

function truthy(v: string | undefined): boolean {
  return v !== undefined && v.toLowerCase() !== 'false';
}

function evalOperand(op: Operand, data: ConditionData): string | undefined {
  switch (op.kind) {
    case 'val':
      return op.value;
    case 'var':
      return stringOf(data[op.name]);
    case 'call': {
      if (op.fn === 'env') {
        const name = evalOperand(op.args[0] as Operand, data);
        return name === undefined ? undefined : data.env?.[name];
      }
      return op.args.map((a) => evalOperand(a, data) ?? '').join('');
    }
    default: {
      const never: never = op;
      throw new Error(`unknown operand ${JSON.stringify(never)}`);
    }
  }
}

/** Evaluates a parsed condition. Missing attributes and variables are blank and equal nothing. */
export function evalCondition(node: ConditionNode, data: ConditionData): boolean {
  switch (node.kind) {
    case 'or':
      return evalCondition(node.left, data) || evalCondition(node.right, data);
    case 'and':
      return evalCondition(node.left, data) && evalCondition(node.right, data);
    case 'not':
      return !evalCondition(node.expr, data);
    case 'eq':
    case 'not_eq': {
      const l = evalOperand(node.left, data);
      const r = evalOperand(node.right, data);
      const equal = l !== undefined && r !== undefined ? l === r : l === r;
      return node.kind === 'eq' ? equal : !equal;
    }
    case 'match':
    case 'not_match': {
      const l = evalOperand(node.left, data);
      let re: RegExp;
      if (node.regex instanceof RegExp) re = node.regex;
      else {
        const src = evalOperand(node.regex, data) ?? '';
        try {
          re = rubyRegex(src);
        } catch {
          return node.kind === 'not_match';
        }
      }
      const matched = l !== undefined && re.test(l);
      return node.kind === 'match' ? matched : !matched;
    }
    case 'in':
    case 'not_in': {
      const l = evalOperand(node.left, data);
      const found = l !== undefined && node.list.some((o) => evalOperand(o, data) === l);
      return node.kind === 'in' ? found : !found;
    }
    case 'is':
    case 'is_not': {
      const v = evalOperand(node.left, data);
      let r: boolean;
      switch (node.pred) {
        case 'present':
          r = v !== undefined && v !== '';
          break;
        case 'blank':
          r = v === undefined || v === '';
          break;
        case 'true':
          r = truthy(v);
          break;
        case 'false':
          r = !truthy(v);
          break;
        default: {
          const never: never = node.pred;
          throw new Error(`unknown predicate ${String(never)}`);
        }
      }
      return node.kind === 'is' ? r : !r;
    }
    case 'term':
      return truthy(evalOperand(node.operand, data));
    default: {
      const never: never = node;
      throw new Error(`unknown condition ${JSON.stringify(never)}`);
    }
  }
}

/** Parses and evaluates a condition in one step. */
export function checkCondition(src: string, data: ConditionData): boolean {
  return evalCondition(parseCondition(src), data);
}
