import { describe, expect, it } from 'vitest';
import { listRecipes, loadRecipe } from '../../images/index.ts';
import { type BuildEvent, expandRepoConfig, type ImageToolchain, travisEnv } from '../../webhooks/index.ts';

const push: BuildEvent = { type: 'push', branch: 'main' };

const toolchains: Record<string, ImageToolchain> = {
  build: { commands: ['gcc', 'g++', 'clang', 'clang++', 'python3'], versions: { python: '3.11.2' } },
  minimal: { commands: ['sudo'], versions: {} },
};

const warnings = (yaml: string) =>
  expandRepoConfig(`image: build\n${yaml}`, push, { toolchains }).warnings.filter((w) => w.startsWith('job'));

describe('config expand: what a job asks of its image', () => {
  it('warns about a compiler the image does not have (CC and CXX), once per problem with every job', () => {
    expect(
      warnings('language: cpp\narch: [amd64, arm64]\ncompiler: [clang, clang-9]\nscript: make\n'),
    ).toEqual([
      expect.stringMatching(
        /^jobs 1\.2, 1\.4: compiler clang-9: image build has no clang-9 \(CC\); the job errors/,
      ),
      expect.stringMatching(/^jobs 1\.2, 1\.4: compiler clang-9: image build has no clang\+\+-9 \(CXX\)/),
    ]);
    expect(warnings('language: c\ncompiler: [gcc, clang]\nscript: make\n')).toEqual([]);
  });

  it('trusts addons.apt to install a compiler it lists', () => {
    expect(warnings('language: c\ncompiler: clang-9\naddons: {apt: [clang-9]}\nscript: make\n')).toEqual([]);
  });

  it('warns about a language version other than the one the image has, and a language it lacks', () => {
    expect(warnings('language: python\npython: ["3.8", "3.11", "3", nightly]\nscript: true\n')).toEqual([
      'job 1.1: python 3.8: image build has python3 3.11.2, not 3.8',
      'job 1.4: python nightly: archway installs no language versions; image build has python3 3.11.2',
    ]);
    expect(warnings('language: ruby\nrvm: "3.2"\n')).toEqual(['job 1.1: rvm 3.2: image build has no ruby']);
    expect(warnings('language: node_js\n')).toEqual(['job 1.1: language node_js: image build has no node']);
    expect(warnings('language: shell\nscript: true\n')).toEqual([]);
  });

  it('checks only images it knows, and never skipped jobs', () => {
    expect(
      expandRepoConfig('language: c\ncompiler: clang-9\nimage: other\nscript: make\n', push, { toolchains })
        .warnings,
    ).toEqual([]);
    expect(warnings('os: osx\nlanguage: c\ncompiler: clang-9\nscript: make\n')).toEqual([]);
  });

  it("the shipped recipes declare what they provide, and the default image has Travis's C and python tools", async () => {
    const names = await listRecipes();
    const provides = Object.fromEntries(
      await Promise.all(names.map(async (n) => [n, (await loadRecipe(n)).provides] as const)),
    );
    expect(provides['debian-bookworm-build']?.commands).toEqual(
      expect.arrayContaining(['gcc', 'g++', 'clang', 'clang++', 'make', 'cmake', 'python3', 'sudo']),
    );
    expect(provides['debian-bookworm-build']?.versions.python).toMatch(/^3\.11\./);
    expect(provides['debian-bookworm']?.commands).toContain('sudo');
  });
});

describe('the job environment', () => {
  it("lets pip install as Travis's did (Debian's pip refuses outside a virtualenv, PEP 668)", () => {
    const job = expandRepoConfig('language: python\nscript: true\n', push).jobs[0];
    if (!job) throw new Error('no job');
    expect(travisEnv(job, { event: push, jobId: 'j' })).toContainEqual(['PIP_BREAK_SYSTEM_PACKAGES', '1']);
  });
});
