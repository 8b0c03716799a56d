import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { CatalogEntry } from '../../../queue/index.ts';
import { Arch, BlobNotFoundError, Digest, RangeNotSatisfiableError } from '../../core/index.ts';
import type { ApiDeps } from '../api-deps.ts';
import { ErrorBody, errorResponses } from '../schemas.ts';

const security = [{ bearer: [] }];

export interface ImageRoutesOptions {
  deps: ApiDeps;
  /** The blob store's directory: blobs are `sha256/<hex>` files in it. */
  blobDir: string;
}

const NodeHolding = z.object({
  id: z.string(),
  /** The version is the one new jobs on that node get. */
  current: z.boolean(),
  lost: z.boolean(),
});

export const ImageStatus = z.object({
  name: z.string(),
  arch: Arch,
  /** The catalog's current version; null for an image that nodes hold but that was never published. */
  current: CatalogEntry.nullable(),
  /** Every version that the catalog names as current or that a node holds, with the nodes holding it. */
  versions: z.array(z.object({ digest: z.string(), current: z.boolean(), nodes: z.array(NodeHolding) })),
});
export type ImageStatus = z.infer<typeof ImageStatus>;

/**
 * fastify pipes a stream as it is, but the zod type provider types the body after the documented
 * schema (a string of octets): this bridges the two.
 */
const asBody = (stream: Readable) => stream as unknown as string;

/** A single `bytes=` range of a blob of `size` bytes; undefined for a header to ignore (RFC 9110 14.2). */
export function parseRange(
  header: string,
  size: number,
): { start: number; end: number } | 'unsatisfiable' | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined; // several ranges, another unit, or nonsense: serve it all
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

/** The blob store (`GET /v1/images/blobs/sha256:...`) and the images' sync state (`GET /v1/images`). */
export const imageRoutes: FastifyPluginAsyncZod<ImageRoutesOptions> = async (app, { deps, blobDir }) => {
  const { catalog } = deps;

  app.get(
    '/images',
    {
      config: { scope: 'read' },
      schema: {
        summary: 'Images and their sync state',
        description:
          "Per image and arch: the catalog's current version (its blobs, parent, sizes) and which nodes hold which version.",
        tags: ['images'],
        security,
        response: { 200: z.object({ images: z.array(ImageStatus) }), ...errorResponses(401, 403) },
      },
    },
    async () => {
      const byImage = new Map<string, ImageStatus>();
      const entry = (name: string, arch: Arch) => {
        const key = `${name}/${arch}`;
        let s = byImage.get(key);
        if (!s) {
          s = { name, arch, current: null, versions: [] };
          byImage.set(key, s);
        }
        return s;
      };
      const version = (s: ImageStatus, digest: string) => {
        let v = s.versions.find((x) => x.digest === digest);
        if (!v) {
          v = { digest, current: s.current?.digest === digest, nodes: [] };
          s.versions.push(v);
        }
        return v;
      };
      for (const c of await catalog.list()) {
        const s = entry(c.name, c.arch);
        s.current = c;
        version(s, c.digest);
      }
      for (const node of await deps.nodes.list()) {
        for (const held of node.images) {
          version(entry(held.name, held.arch), held.digest).nodes.push({
            id: node.id,
            current: held.current,
            lost: node.lost,
          });
        }
      }
      const images = [...byImage.values()].sort(
        (a, b) => a.name.localeCompare(b.name) || a.arch.localeCompare(b.arch),
      );
      // The catalog's version first, then the others by how many nodes hold them.
      for (const s of images)
        s.versions.sort((a, b) => Number(b.current) - Number(a.current) || b.nodes.length - a.nodes.length);
      return { images };
    },
  );

  app.get(
    '/images/blobs/:digest',
    {
      config: { scope: 'read' },
      schema: {
        summary: 'An image blob',
        description: [
          'A zstd-compressed `btrfs send` stream, named by the sha256 of its bytes: immutable and cacheable for ever',
          '(`ETag` is the digest). Range requests (one range) answer 206, or 416 beyond the end; `If-None-Match` answers 304.',
        ].join(' '),
        tags: ['images'],
        security,
        params: z.object({ digest: Digest }),
        response: {
          200: {
            description: 'The whole blob',
            content: { 'application/octet-stream': { schema: z.string() } },
          },
          206: {
            description: 'The requested range of the blob',
            content: { 'application/octet-stream': { schema: z.string() } },
          },
          304: z.null().describe('Not modified (If-None-Match holds the digest)'),
          ...errorResponses(400, 401, 403, 404),
          416: {
            description: 'The range starts at or past the end of the blob (Content-Range: bytes */size)',
            content: { 'application/json': { schema: ErrorBody } },
          },
        },
      },
    },
    async (req, reply) => {
      const { digest } = req.params;
      const path = join(blobDir, 'sha256', digest.slice('sha256:'.length));
      const size = await stat(path).then(
        (s) => (s.isFile() ? s.size : undefined),
        () => undefined,
      );
      if (size === undefined) throw new BlobNotFoundError(digest);
      const etag = `"${digest}"`;
      const rangeHeader = req.headers.range;
      const ifRange = req.headers['if-range'];
      // If-Range with another validator: the client's copy is of something else; send it all.
      const range = rangeHeader && (!ifRange || ifRange === etag) ? parseRange(rangeHeader, size) : undefined;
      if (range === 'unsatisfiable') {
        reply.header('content-range', `bytes */${size}`);
        throw new RangeNotSatisfiableError(rangeHeader ?? '', size);
      }
      reply
        .header('etag', etag)
        .header('cache-control', 'public, max-age=31536000, immutable')
        .header('accept-ranges', 'bytes')
        .type('application/octet-stream');
      const inm = req.headers['if-none-match'];
      if (inm && (inm.trim() === '*' || inm.split(',').some((t) => t.trim().replace(/^W\//, '') === etag)))
        return reply.code(304).send(null);
      if (range) {
        return reply
          .code(206)
          .header('content-range', `bytes ${range.start}-${range.end}/${size}`)
          .header('content-length', range.end - range.start + 1)
          .send(asBody(createReadStream(path, { start: range.start, end: range.end })));
      }
      return reply.header('content-length', size).send(size === 0 ? '' : asBody(createReadStream(path)));
    },
  );
};
