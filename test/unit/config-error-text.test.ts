import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configInputError } from '../../src/api/builds/api-builds.ts';
import { ConfigError, expandRepoConfig } from '../../webhooks/index.ts';

/** What the API answers for a config: the InvalidInputError's message (its 400's `error.message`). */
function apiMessage(text: string, path: string): string {
  try {
    expandRepoConfig(text, { type: 'api' }, { buildNumber: 1 });
  } catch (e) {
    if (e instanceof ConfigError) return configInputError(e, path).message;
    throw e;
  }
  throw new Error('the config expanded');
}

describe('a config error is one text for the API and config expand', { timeout: 60_000 }, () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'archway-config-error-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const bad = {
    'an unknown arch, with its line and caret':
      'language: shell\nimage: busybox\nscript: true\njobs:\n  include:\n    - arch: amd64\n    - arch: riscv64\n',
    'bad YAML': 'language: shell\nscript: [true\n',
    'a key of the wrong shape': 'language: shell\nscript: true\nenv:\n  global: 3\n',
  };
  for (const [what, text] of Object.entries(bad)) {
    it(what, async () => {
      await writeFile(join(dir, '.travis.yml'), text);
      const cli = await execa(join(process.cwd(), 'bin/archway'), ['config', 'expand', '.travis.yml'], {
        cwd: dir,
        reject: false,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
        extendEnv: false,
      });
      expect(cli.exitCode).toBe(2);
      const printed = cli.stderr.replace(/^archway: /, '');
      // The message with its position, then the line and a caret under the column.
      expect(printed).toMatch(/^\.travis\.yml: line \d+, column \d+: .+\n\d+ \| .*\n *\^$/);
      // From the source: `config: .travis.yml: line ...`; config expand: `archway: .travis.yml: line ...`.
      expect(apiMessage(text, '.travis.yml')).toBe(`config: ${printed}`);
      // Inline, the API names no file: the same text after it.
      expect(`config: .travis.yml: ${apiMessage(text, 'config').replace(/^config: /, '')}`).toBe(
        `config: ${printed}`,
      );
    });
  }
});
