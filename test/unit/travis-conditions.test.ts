import { describe, expect, it } from 'vitest';
import {
  type ConditionData,
  ConditionSyntaxError,
  checkCondition,
  parseCondition,
} from '../../webhooks/index.ts';

const data: ConditionData = {
  type: 'push',
  branch: 'master',
  repo: 'numpy/numpy',
  fork: 'false',
  sender: 'deploy bot',
  os: 'linux',
  language: 'python',
  commit_message: 'Fix a bug\n\n[skip deploy]',
  env: { FOO: 'foo', BAR: 'false', EMPTY: '', PREFIX: 'ma' },
};

describe('conditions: evaluation (cases after travis-conditions v1)', () => {
  it.each([
    ['branch = master', true],
    ['branch == master', true],
    ['branch = foo', false],
    ['branch != master', false],
    ['branch != foo', true],
    ['type IN (push, pull_request)', true],
    ['type in (api, cron)', false],
    ['branch NOT IN (master, dev)', false],
    ['branch not in (dev)', true],
    ['tag IS present', false],
    ['tag IS blank', true],
    ['tag is not present', true],
    ['branch IS PRESENT', true],
    ['env(FOO) IS present', true],
    ['env(EMPTY) IS blank', true],
    ['env(MISSING) IS blank', true],
    ['env(BAR) IS false', true],
    ['env(FOO) IS true', true],
    ['fork = false', true],
    ['fork IS false', true],
    ['branch =~ ^ma.*$', true],
    ['branch =~ /^(master|main)$/', true],
    ['branch ~= ^foo', false],
    ['branch !~ ^foo', true],
    ['tag =~ ^v1', false],
    ['tag !~ ^v1', true],
    ['commit_message =~ /^\\[skip deploy\\]/', true],
    ['commit_message !~ /no-deploy/', true],
    ['sender = "deploy bot"', true],
    ["sender != 'deploy bot'", false],
    ['env(FOO) = foo', true],
    ['ENV(FOO) = foo', true],
    ['env(FOO) = env(FOO)', true],
    ['concat(env(PREFIX), ster) = master', true],
    ['branch =~ concat("^", env(PREFIX))', true],
    ['repo = numpy/numpy AND branch = master', true],
    ['branch = foo OR env(FOO) = foo AND tag = wat', false],
    ['branch = foo OR env(FOO) = foo AND NOT tag = wat', true],
    ['NOT branch = foo AND (env(FOO) = foo OR tag = wat)', true],
    ['(tag =~ ^v) OR (branch = master)', true],
    ['(branch = master) && (type = push)', true],
    ['branch = foo || type = push', true],
    ['os = linux AND language = python', true],
    ['true', true],
    ['false', false],
    ['FALSE', false],
    ['1', true],
    ['""', true],
    ['branch = master AND \\\n  type = push', true],
    ['branch=master', true],
    ['branch!=master', false],
    ['type IN(push,api)', true],
  ])('%s -> %s', (cond, expected) => {
    expect(checkCondition(cond, data)).toBe(expected);
  });

  it('treats a missing attribute as blank, equal to nothing', () => {
    expect(checkCondition('tag = ""', {})).toBe(false);
    expect(checkCondition('tag != v1', {})).toBe(true);
    expect(checkCondition('tag =~ .*', {})).toBe(false);
  });

  it("matches ^ at every line, as Ruby's regexes do", () => {
    expect(checkCondition('commit_message =~ ^\\[skip', data)).toBe(true);
  });
});

describe('conditions: syntax errors', () => {
  it.each([
    ['', /empty condition/],
    ['branch = ', /expected a value/],
    ['branch IN ()', /expected a list of values/],
    ['branch IN (a, b', /expected '\)'/],
    ['(branch = a', /expected '\)'/],
    ['branch IS maybe', /present, blank, true or false/],
    ['branch = master garbage', /unexpected 'garbage'/],
    ['$TRAVIS_BRANCH = master', /shell variables do not work/],
    ['branch =~ /unclosed', /not closed/],
    ['branch =~ /a(/', /invalid regular expression/],
    ['env(A, B) = c', /env\(\) takes one variable name/],
  ])('%j is refused', (cond, message) => {
    expect(() => parseCondition(cond)).toThrow(ConditionSyntaxError);
    expect(() => parseCondition(cond)).toThrow(message);
  });
});
