import { describe, expect, it } from 'vitest';
import { ArchwayError } from '../../src/core/index.ts';
import { ConfigError, parseConfig } from '../../webhooks/index.ts';

function errorOf(yaml: string): ConfigError {
  try {
    parseConfig(yaml);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

describe('config errors name the key, the line and the problem', () => {
  it('is an ArchwayError with a stable code and a 4xx status', () => {
    const e = errorOf('arch: mips');
    expect(e).toBeInstanceOf(ArchwayError);
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.httpStatus).toBe(400);
    expect(e.detail).toMatch(/^unknown arch 'mips'/);
  });

  it.each<[string, string, number, string, RegExp]>([
    ['a mapping for the root', '- a\n- b\n', 1, '', /the config must be a mapping of keys, got a list/],
    ['a list for language', 'language: [python]\n', 1, 'language', /expected a string, got a list/],
    [
      'a mapping for a phase command',
      'script:\n  - make\n  - {a: b}\n',
      3,
      'script[1]',
      /expected a string, got a mapping/,
    ],
    [
      'a bad env entry',
      'env:\n  global:\n    - just-a-word\n',
      3,
      'env.global[0]',
      /expected NAME=value, got 'just-a-word'/,
    ],
    [
      'a bad env name',
      'env:\n  jobs:\n    - 1BAD: x\n',
      3,
      'env.jobs[0].1BAD',
      /'1BAD' is not a variable name/,
    ],
    ['an unknown env key', 'env:\n  global: [A=1]\n  extra: [B=2]\n', 3, 'env.extra', /unknown key 'extra'/],
    [
      'a non-boolean fast_finish',
      'jobs:\n  fast_finish: sometimes\n',
      2,
      'jobs.fast_finish',
      /expected true or false, got 'sometimes'/,
    ],
    [
      'a scalar include entry',
      'jobs:\n  include:\n    - arm64\n',
      3,
      'jobs.include[0]',
      /expected a mapping of job settings, got 'arm64'/,
    ],
    [
      'a stage without a name',
      'stages:\n  - if: branch = x\n',
      2,
      'stages[0].name',
      /expected a string, got nothing/,
    ],
    [
      'a bad stage condition',
      'stages:\n  - name: d\n    if: branch ==\n',
      3,
      'stages[0].if',
      /cannot parse condition/,
    ],
    [
      'a bad exclude condition',
      'jobs:\n  exclude:\n    - if: NOT\n',
      3,
      'jobs.exclude[0].if',
      /cannot parse condition/,
    ],
    ['a bad root condition', 'if: branch IN master\n', 1, 'if', /expected '\(' after IN/],
    [
      'a bad branch regex',
      'branches:\n  only:\n    - /(/\n',
      3,
      'branches.only[0]',
      /invalid regular expression/,
    ],
    [
      'an unknown branches key',
      'branches:\n  sometimes: [a]\n',
      2,
      'branches.sometimes',
      /unknown key 'sometimes'/,
    ],
    [
      'an unknown arch in exclude',
      'jobs:\n  exclude:\n    - arch: ia64\n',
      3,
      'jobs.exclude[0].arch',
      /unknown arch 'ia64'/,
    ],
    [
      'an unknown arch in allow_failures',
      'jobs:\n  allow_failures:\n    - arch: [amd64, m68k]\n',
      3,
      'jobs.allow_failures[0].arch[1]',
      /unknown arch 'm68k'/,
    ],
    [
      'an unknown arch in a bare jobs list',
      'jobs:\n  - arch: vax\n',
      2,
      'jobs[0].arch',
      /unknown arch 'vax'/,
    ],
    [
      'several os in an include',
      'jobs:\n  include:\n    - os: [linux, osx]\n',
      3,
      'jobs.include[0].os',
      /takes one os, got linux, osx/,
    ],
    [
      'several versions in an include',
      'language: go\njobs:\n  include:\n    - go: [1.21, 1.22]\n',
      4,
      'jobs.include[0].go',
      /takes one go value/,
    ],
  ])('%s', (_name, yaml, line, keyPath, message) => {
    const e = errorOf(yaml);
    expect(e.line).toBe(line);
    expect(e.keyPath).toBe(keyPath);
    expect(e.message).toMatch(message);
    expect(e.message).toMatch(new RegExp(`^line ${line}, column \\d+: `));
  });

  it('quotes the offending line', () => {
    const e = errorOf('language: c\njobs:\n  include:\n    - arch:   sparc64  # no such pool\n');
    expect(e.excerpt).toBe('    - arch:   sparc64  # no such pool');
    expect(e.column).toBe(15);
  });

  it('points into an anchor when the bad value comes from one', () => {
    const e = errorOf('_arches: &arches [amd64, z80]\narch: *arches\n');
    expect(e.line).toBe(1);
    expect(e.keyPath).toBe('arch[1]');
  });

  it('accepts everything a config may leave out or leave empty', () => {
    const c = parseConfig('language:\nos:\narch:\nenv:\njobs:\nstages:\nscript:\nbranches:\nif:\n');
    expect(c.include).toEqual([]);
    expect(c.root.phases).toEqual({});
    expect(c.env).toEqual({ global: [], jobs: undefined });
  });
});
