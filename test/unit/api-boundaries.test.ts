import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '../..');

/** Route files whose text matches `pattern`. */
async function offenders(pattern: RegExp): Promise<string[]> {
  const dir = join(root, 'src/api/routes');
  const out: string[] = [];
  for (const name of await readdir(dir)) {
    if (name.endsWith('.ts') && pattern.test(await readFile(join(dir, name), 'utf8'))) out.push(name);
  }
  return out;
}

// Issue #14: ApiDeps hands the routes the stores built once in the API's main.
describe('API routes get their stores from ApiDeps', () => {
  it('build no store from the raw connection', async () => {
    expect(
      await offenders(/create[A-Z]\w*\(\s*(deps\.)?redis\b|create[A-Z]\w*\(\{\s*redis: deps\.redis/),
    ).toEqual([]);
  });
  it("import no store factory from queue/'s door", async () => {
    expect(await offenders(/\bcreate(PoolStore|PoolStatus|ImageCatalog)\b/)).toEqual([]);
  });
});
