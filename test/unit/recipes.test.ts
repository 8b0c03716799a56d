import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { listRecipes, loadRecipe } from '../../images/index.ts';
import { ImageNotFoundError, InvalidInputError } from '../../src/core/index.ts';

describe('recipes', () => {
  it('ships busybox, debian-bookworm and debian-bookworm-build, all valid', async () => {
    expect(await listRecipes()).toEqual(['busybox', 'debian-bookworm', 'debian-bookworm-build']);
    expect(await loadRecipe('busybox')).toMatchObject({ base: 'busybox', suite: 'bookworm' });
    const build = await loadRecipe('debian-bookworm-build');
    expect(build).toMatchObject({ base: 'debian', variant: 'minbase' });
    // What Travis's Linux images gave C/C++ and scripting projects (docs/images.md).
    expect(build.base === 'debian' && build.packages).toEqual(
      expect.arrayContaining([
        'build-essential',
        'clang',
        'cmake',
        'autoconf',
        'automake',
        'libtool',
        'pkg-config',
        'git',
        'sudo',
        'curl',
        'wget',
        'ca-certificates',
        'unzip',
        'xz-utils',
        'python3',
        'python3-pip',
        'python3-venv',
      ]),
    );
    // sudo in both Debian images, with the job's hostname resolvable (no "unable to resolve host").
    for (const name of ['debian-bookworm', 'debian-bookworm-build']) {
      const r = await loadRecipe(name);
      expect(r.base === 'debian' && r.packages).toEqual(
        expect.arrayContaining(['sudo', 'libnss-myhostname']),
      );
    }
  });
  it('refuses a name that is a path', async () => {
    await expect(loadRecipe('../etc/passwd')).rejects.toThrow(InvalidInputError);
  });
  it('names the known recipes for an unknown one', async () => {
    await expect(loadRecipe('alpine')).rejects.toThrow(ImageNotFoundError);
    await expect(loadRecipe('alpine')).rejects.toThrow(
      /known: busybox, debian-bookworm, debian-bookworm-build/,
    );
  });
  it('names the field at fault in a bad recipe', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'recipes-'));
    await writeFile(join(dir, 'bad.yml'), 'name: bad\nbase: debian\nsuite: bookworm\nvariant: huge\n');
    await expect(loadRecipe('bad', dir)).rejects.toThrow(/bad\.yml variant/);
  });
});
