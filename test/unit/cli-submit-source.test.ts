import { describe, expect, it } from 'vitest';
import { submitBody } from '../../src/cli/commands/submit.ts';

const base = { arch: 'amd64', image: 'busybox', env: [], secret: [], label: [] };

describe('submit --git, --ref, --sha', () => {
  it("make the job's source", async () => {
    const sha = 'a'.repeat(40);
    expect(
      (await submitBody(['make'], { ...base, git: 'https://example.com/a/b.git', ref: 'main', sha })).source,
    ).toEqual({
      git: 'https://example.com/a/b.git',
      ref: 'main',
      sha,
    });
    expect((await submitBody(['make'], { ...base, git: 'https://example.com/a/b.git' })).source).toEqual({
      git: 'https://example.com/a/b.git',
    });
    expect((await submitBody(['make'], base)).source).toBeUndefined();
  });

  it('refuse a ref or sha without --git, and a sha that is not one, naming the option', async () => {
    await expect(submitBody(['make'], { ...base, ref: 'main' })).rejects.toThrow(/^--ref: .*give --git too/);
    await expect(submitBody(['make'], { ...base, sha: 'a'.repeat(40) })).rejects.toThrow(/^--sha: .*--git/);
    await expect(
      submitBody(['make'], { ...base, git: 'https://example.com/a/b.git', sha: 'HEAD' }),
    ).rejects.toThrow(/^--sha: expected 40 lowercase hex digits, got 'HEAD'/);
  });
});
