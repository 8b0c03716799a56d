import { execa } from 'execa';
import { describe, expect, it } from 'vitest';

const help = async (path: string[]) => {
  const r = await execa('bin/archway', [...path, '--help'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    extendEnv: false,
    reject: false,
  });
  expect(r.exitCode).toBe(0);
  return r.stdout;
};

/** The command names of a help's `Commands:` section (help itself left out). */
function commandsOf(text: string): string[] {
  const section = text.split(/^Commands:$/m)[1]?.split(/^\S/m)[0] ?? '';
  return [...section.matchAll(/^ {2}([a-z][a-z-]*)/gm)]
    .map((m) => m[1] as string)
    .filter((c) => c !== 'help');
}

/** Every command path, found from the top-level help down. */
async function allCommands(path: string[] = []): Promise<{ path: string[]; text: string }[]> {
  const out: { path: string[]; text: string }[] = [];
  for (const name of commandsOf(await help(path))) {
    const sub = [...path, name];
    const text = await help(sub);
    out.push({ path: sub, text });
    out.push(...(await allCommands(sub)));
  }
  return out;
}

// Issue #13: every --help names the environment variables the command reads and shows one example.
describe('bin/archway --help', { timeout: 120_000 }, () => {
  it('names the environment and shows an example for every command that runs something', async () => {
    const commands = await allCommands();
    expect(commands.map((c) => c.path.join(' '))).toEqual(
      expect.arrayContaining(['up', 'submit', 'job show']),
    );
    // A group that only holds subcommands (`job`, `config`) runs nothing itself.
    const runnable = commands.filter((c) => !(commandsOf(c.text).length > 0 && !/^ {2}--/m.test(c.text)));
    const missing = runnable
      .filter((c) => !/^Environment\b/m.test(c.text) || !/^Example\b/m.test(c.text))
      .map((c) => c.path.join(' '));
    expect(missing).toEqual([]);
  });
});
