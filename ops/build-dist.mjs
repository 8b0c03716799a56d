// Compiles the TypeScript ahead of time into dist/, so that `bin/archway` starts in node alone
// (no tsx transpiling at every start: issue #13 measured 2-3 s per CLI call that way).
//
// Run by `npm ci` (the `prepare` script) and by bin/archway whenever a source file is newer
// than the last build, so what runs is always the checkout's code. Each build goes into its own
// dist/<id>/ and dist/current is switched to it by one rename: a process started from an older
// build keeps loading its own chunks (they are code-split and loaded lazily), and a build never
// shows half-written. Type checking is `npm run typecheck`'s job, not this one's.
//
// Usage: node ops/build-dist.mjs [--quiet]
import { mkdir, readdir, readFile, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const dist = join(root, 'dist');
const quiet = process.argv.includes('--quiet');
/** Builds kept besides the current one, for processes still running from them. */
const KEEP = 4;

// Source files find their assets with `new URL('./x', import.meta.url)` (image recipes, pages'
// assets, package.json): in a bundle every file would share one URL, so each file's own source
// location is written in for it, and assets are read from the checkout as under tsx.
const sourceMeta = {
  name: 'source-import-meta',
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, async (args) => {
      if (args.path.includes(`${join(root, 'node_modules')}/`)) return undefined;
      let contents = await readFile(args.path, 'utf8');
      if (contents.includes('import.meta.')) {
        contents = contents
          .replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href))
          .replaceAll('import.meta.dirname', JSON.stringify(dirname(args.path)))
          .replaceAll('import.meta.filename', JSON.stringify(args.path));
      }
      return { contents, loader: 'ts' };
    });
  },
};

// Packages stay outside the bundle (node_modules is there at run time). Marking them free of
// side effects lets esbuild drop the core's modules that a command does not use, and with them
// their imports: without it `archway --version` loaded ioredis, pino and prom-client.
const externalPackages = {
  name: 'external-packages',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => ({ path: args.path, external: true, sideEffects: false }));
  },
};

const started = Date.now();
const id = `${started.toString(36)}-${process.pid}`;
const out = join(dist, id);
await mkdir(out, { recursive: true });
await build({
  absWorkingDir: root,
  entryPoints: { 'cli/main': 'src/cli/main.ts' },
  outdir: out,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: 'linked',
  chunkNames: 'chunks/[name]-[hash]',
  logLevel: 'warning',
  plugins: [externalPackages, sourceMeta],
});
// Where and when the build came from: bin/archway rebuilds when the checkout moved or a source
// file is newer than this file. Its time is the build's start, so an edit made while esbuild ran
// still counts as newer.
const stamp = join(out, 'build.json');
await writeFile(stamp, `${JSON.stringify({ root, id, builtAt: new Date(started).toISOString() })}\n`);
await utimes(stamp, started / 1000, started / 1000);
const tmpLink = join(dist, `.current-${id}`);
await symlink(id, tmpLink);
await rename(tmpLink, join(dist, 'current'));

// Old builds: keep the newest few (a long-running worker may still load a chunk from its own).
const builds = [];
for (const name of await readdir(dist)) {
  if (name === id || name === 'current' || name.startsWith('.')) continue;
  const s = await stat(join(dist, name)).catch(() => undefined);
  if (s?.isDirectory()) builds.push({ name, mtime: s.mtimeMs });
}
builds.sort((a, b) => b.mtime - a.mtime);
for (const old of builds.slice(KEEP)) await rm(join(dist, old.name), { recursive: true, force: true });

if (!quiet) {
  process.stderr.write(`archway: compiled into ${relative(root, out)} in ${Date.now() - started} ms\n`);
}
