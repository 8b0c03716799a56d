import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { compileSecrets, createSecretMasker, MASK, maskSecrets, stripAnsi } from '../../queue/index.ts';

/** The obvious quadratic masker: each byte covered by an occurrence, in the raw or the stripped text, is masked. */
function reference(text: string, secrets: string[]): string {
  const pats = secrets.map(stripAnsi).filter(Boolean);
  const covered = new Array<boolean>(text.length).fill(false);
  const mark = (view: string, posOf: number[]) => {
    for (const p of pats) {
      for (let i = view.indexOf(p); i >= 0; i = view.indexOf(p, i + 1)) {
        for (let k = posOf[i] as number; k <= (posOf[i + p.length - 1] as number); k++) covered[k] = true;
      }
    }
  };
  mark(
    text,
    [...text].map((_, i) => i),
  );
  // The stripped view with the raw index of each of its characters.
  const visible: number[] = [];
  const stripped = stripAnsi(text);
  for (let i = 0, j = 0; i < text.length && j < stripped.length; i++) {
    if (stripAnsi(text.slice(0, i + 1)).length > j) visible[j++] = i;
  }
  mark(stripped, visible);
  // Runs: a secret's occurrences that overlap make one run; touching ones stay two (as split/join did).
  let out = '';
  for (let i = 0; i < text.length; ) {
    if (!covered[i]) {
      out += text[i++];
      continue;
    }
    out += MASK;
    while (i < text.length && covered[i]) i++;
  }
  return out;
}

function feedInPieces(text: string, secrets: string[], seed: number): string {
  const m = createSecretMasker(compileSecrets(secrets));
  const buf = Buffer.from(text);
  let out = Buffer.alloc(0);
  let s = seed;
  for (let i = 0; i < buf.length; ) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const n = 1 + (s % 7);
    m.write(buf.subarray(i, i + n));
    i += n;
    if (s % 3 === 0) out = Buffer.concat([out, m.take(false)]);
  }
  return Buffer.concat([out, m.take(true)]).toString();
}

describe('secret masker', () => {
  it('masks every occurrence, overlapping or touching ones as one run', () => {
    expect(maskSecrets('hello SECRET world SEC', ['SECRET'])).toBe(`hello ${MASK} world SEC`);
    expect(maskSecrets('xabcdy', ['abc', 'bcd'])).toBe(`x${MASK}y`);
    expect(maskSecrets('he said she', ['he', 'she', 'hers'])).toBe(`${MASK} said ${MASK}`);
    expect(maskSecrets('ab', ['a', 'b'])).toBe(MASK);
    expect(maskSecrets('nothing here', [])).toBe('nothing here');
  });

  it('masks a secret split by an escape sequence, and one that contains one', () => {
    expect(maskSecrets('a SEC\x1b[0mRET b', ['SECRET'])).toBe(`a ${MASK} b`);
    expect(maskSecrets('x S\x1b[31;1mE\x1b(BC\x1b[0KRET', ['SECRET'])).toBe(`x ${MASK}`);
    expect(maskSecrets('SECRET', ['SEC\x1b[1mRET'])).toBe(MASK);
    // Digits that a CSI swallows are still masked in the raw pass.
    expect(maskSecrets('\x1b[1234567m', ['1234567'])).toBe(`\x1b[${MASK}m`);
  });

  it('strips escape sequences as terminals parse them', () => {
    expect(stripAnsi('a\x1b[31;1mb\x1b[0mc\x1b(Bd\x1b[?25le')).toBe('abcde');
    expect(stripAnsi('a\x1b[12\nb')).toBe('a\nb');
    expect(stripAnsi('plain')).toBe('plain');
  });

  it('agrees with the obvious masker on random text, fed in random pieces', () => {
    const alphabet = ['a', 'b', 'c', '\x1b', '[', '0', 'm', '€', '\n'];
    let s = 42;
    const rnd = (n: number) => {
      s = (s * 1103515245 + 12345) % 2 ** 31;
      return s % n;
    };
    const word = (len: number) => Array.from({ length: len }, () => alphabet[rnd(alphabet.length)]).join('');
    for (let round = 0; round < 300; round++) {
      const secrets = Array.from({ length: 1 + rnd(4) }, () => word(1 + rnd(5)));
      const text = word(rnd(80));
      const want = reference(text, secrets);
      expect(maskSecrets(text, secrets), JSON.stringify({ text, secrets })).toBe(want);
      expect(feedInPieces(text, secrets, round), JSON.stringify({ text, secrets })).toBe(want);
    }
  });

  it('holds back only what may still become a secret, never half a character', () => {
    const m = createSecretMasker(compileSecrets(['SECRET']));
    m.write(Buffer.from('line one\nSEC'));
    expect(m.take(false).toString()).toBe('line one\n');
    expect(m.held).toBe(3);
    m.write(Buffer.from('RET and more €'.slice(0, -1)));
    m.write(Buffer.from('€').subarray(0, 2));
    expect(m.take(false).toString()).toBe(`${MASK} and more `);
    m.write(Buffer.from('€').subarray(2));
    expect(m.take(true).toString()).toBe('€');
  });

  it('masks a 64 KiB secret in 2 x 64 KiB of its near-misses (the quadratic case)', () => {
    const secret = `${'x'.repeat(65_535)}y`;
    const text = `${'x'.repeat(131_072)}y${'x'.repeat(10)}`;
    const m = createSecretMasker(compileSecrets([secret]));
    for (let i = 0; i < text.length; i += 4096) m.write(Buffer.from(text.slice(i, i + 4096)));
    const out = m.take(true).toString();
    expect(out).toBe(`${'x'.repeat(131_072 - 65_535)}${MASK}${'x'.repeat(10)}`);
    // 100 random 64 KiB secrets, one of them in the output: linear memory (~14 bytes a secret byte).
    const many = Array.from({ length: 100 }, () => randomBytes(48 * 1024).toString('base64'));
    const a = compileSecrets(many);
    expect(a.size).toBeLessThanOrEqual(100 * 65_536 + 1);
    const m2 = createSecretMasker(a);
    m2.write(Buffer.from(`key=${many[57]}.`));
    expect(m2.take(true).toString()).toBe(`key=${MASK}.`);
  });
});
