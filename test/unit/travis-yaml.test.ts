import { describe, expect, it } from 'vitest';
import { ConfigError, loadYaml, parseConfig } from '../../webhooks/index.ts';

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

describe('loadYaml: YAML as .travis.yml files use it', () => {
  it('resolves anchors and aliases, including anchors parked under unknown top-level keys', () => {
    const { value } = loadYaml(`
_shared:
  - &install_deps pip install -r requirements.txt
  - &linux_job
    os: linux
    dist: focal
script:
  - *install_deps
jobs:
  include:
    - <<: *linux_job
      arch: arm64
`);
    expect(value).toEqual({
      _shared: ['pip install -r requirements.txt', { os: 'linux', dist: 'focal' }],
      script: ['pip install -r requirements.txt'],
      jobs: { include: [{ os: 'linux', dist: 'focal', arch: 'arm64' }] },
    });
  });

  it('applies merge keys: explicit keys win, <<: [*a, *b] prefers a, a later << wins over an earlier one', () => {
    const { value } = loadYaml(`
a: &a { x: a, y: a, only_a: 1 }
b: &b { x: b, y: b, z: b, only_b: 2 }
list:
  <<: [*a, *b]
  y: explicit
several:
  <<: *a
  <<: *b
  z: explicit
explicit_first:
  x: explicit
  <<: *b
`);
    const v = value as Record<string, unknown>;
    expect(v.list).toEqual({ x: 'a', y: 'explicit', only_a: '1', z: 'b', only_b: '2' });
    expect(v.several).toEqual({ x: 'b', y: 'b', only_a: '1', z: 'explicit', only_b: '2' });
    expect(v.explicit_first).toEqual({ x: 'explicit', y: 'b', z: 'b', only_b: '2' });
  });

  it('keeps number text (python: 3.10 is 3.10, not 3.1) and reads YAML 1.1 booleans as values', () => {
    const { value } = loadYaml('python: [3.10, 3.9, 3]\nfast_finish: yes\nsudo: off\nx: 010\n');
    expect(value).toEqual({ python: ['3.10', '3.9', '3'], fast_finish: true, sudo: false, x: '010' });
  });

  it("keeps keys as written: Travis's deploy: on: stays 'on' although YAML 1.1 reads on as true", () => {
    const { value } = loadYaml('deploy:\n  provider: pages\n  on:\n    branch: master\n  y: 1\n');
    expect(value).toEqual({ deploy: { provider: 'pages', on: { branch: 'master' }, y: '1' } });
  });

  it('reads | and >- blocks, null items and null values', () => {
    const { value } = loadYaml(`
install:
script:
  - |
    if [ -n "$X" ]; then
      echo x
    fi
  -
  - >-
    make
    test
`);
    expect(value).toEqual({
      install: null,
      script: ['if [ -n "$X" ]; then\n  echo x\nfi\n', null, 'make test'],
    });
  });

  it('lets the last of duplicate keys count, with a warning naming its line', () => {
    const r = loadYaml('script: a\nos: linux\nscript: b\n');
    expect(r.value).toEqual({ script: 'b', os: 'linux' });
    expect(r.warnings).toEqual(['line 3: duplicate key script: the last one counts']);
  });

  it('refuses invalid YAML with its line', () => {
    const e = configError(() => loadYaml('language: python\nscript:\n  - a\n - b\n'));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.line).toBe(4);
    expect(e.message).toMatch(/^line 4, column \d+: invalid YAML/);
  });

  it('refuses an alias with no anchor before it', () => {
    const e = configError(() => loadYaml('a: *nothing\n'));
    expect(e.message).toMatch(/nothing/);
  });
});

describe('loadYaml: YAML bombs are refused before they cost memory', () => {
  const laughs = [
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]',
    'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]',
    'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]',
    'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]',
    'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]',
    'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]',
    'h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]',
    'i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]',
  ].join('\n');

  it('refuses the billion laughs (alias count)', () => {
    const before = process.memoryUsage().heapUsed;
    const e = configError(() => loadYaml(laughs));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toMatch(/too many aliases.*alias bomb/);
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(64 * 1024 * 1024);
  });

  it('refuses an expansion over the node limit even under the alias limit', () => {
    const e = configError(() => loadYaml(laughs.split('\n').slice(0, 4).join('\n'), { maxNodes: 1000 }));
    expect(e.message).toMatch(/more than 1000 values.*alias bomb/);
  });

  it('refuses merge-key bombs', () => {
    const lines = ['a0: &a0 {k0: x, k1: x, k2: x, k3: x}'];
    for (let i = 1; i < 12; i++)
      lines.push(`a${i}: &a${i} {<<: *a${i - 1}, n${i}: [*a${i - 1}, *a${i - 1}, *a${i - 1}]}`);
    expect(() => loadYaml(lines.join('\n'))).toThrow(ConfigError);
  });

  it('refuses a document over the size limit, naming it', () => {
    const big = `script:\n${'  - echo 0123456789012345678901234567890123456789\n'.repeat(6000)}`;
    const e = configError(() => loadYaml(big));
    expect(e.message).toMatch(/bytes; the limit is 262144 bytes \(256 KiB\)/);
  });

  it('refuses self-referencing aliases', () => {
    expect(() => loadYaml('a: &a [1, *a]\n')).toThrow(ConfigError);
  });

  it('refuses nesting deeper than the limit', () => {
    expect(() => loadYaml(`${'['.repeat(100)}${']'.repeat(100)}`)).toThrow(/nested deeper than 64/);
  });

  it('parseConfig applies the same limits', () => {
    expect(() => parseConfig(laughs)).toThrow(/alias bomb/);
  });
});
