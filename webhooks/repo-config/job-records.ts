import { z } from 'zod';
import { Arch } from '../../src/core/index.ts';
import type { AptAddon } from './apt-addon.ts';
import { CONFIG_ARCHES, OSES, PHASES } from './config-schema.ts';
import type { EnvVar } from './env-vars.ts';
import { type BuildEvent, EVENT_TYPES, type ExpandedJob } from './expand-matrix.ts';

/*
 * zod schemas of the expansion's results, for reading them back where they are stored (a build
 * record in Redis keeps each slot's expanded job and the build's event). They are checked against
 * the TypeScript types they read: a field added to ExpandedJob or BuildEvent must be added here.
 */

const EnvVarRecord: z.ZodType<EnvVar> = z.union([
  z.object({ secure: z.literal(false), name: z.string(), value: z.string() }),
  z.object({
    secure: z.literal(true),
    id: z.string(),
    name: z.string().exactOptional(),
    ciphertext: z.string(),
  }),
]);

const AptAddonRecord: z.ZodType<AptAddon> = z.object({
  packages: z.array(z.string()),
  update: z.boolean(),
  sources: z.array(z.object({ sourceline: z.string(), keyUrl: z.string().exactOptional() })),
});

/** An ExpandedJob as it was stored. */
export const ExpandedJobRecord: z.ZodType<ExpandedJob> = z.object({
  number: z.string(),
  name: z.string().exactOptional(),
  stage: z.string(),
  os: z.enum(OSES),
  arch: Arch,
  configArch: z.enum(CONFIG_ARCHES),
  image: z.string(),
  language: z.string(),
  version: z.object({ key: z.string(), value: z.string() }).exactOptional(),
  versions: z.record(z.string(), z.string()),
  compiler: z.string().exactOptional(),
  dist: z.string().exactOptional(),
  env: z.array(z.string()),
  envVars: z.array(EnvVarRecord),
  if: z.string().exactOptional(),
  allowFailure: z.boolean(),
  skipped: z.boolean(),
  skipReason: z.string().exactOptional(),
  phases: z.record(z.enum(PHASES), z.array(z.string())),
  apt: AptAddonRecord.exactOptional(),
});

/** A BuildEvent as it was stored. */
export const BuildEventRecord: z.ZodType<BuildEvent> = z.object({
  type: z.enum(EVENT_TYPES),
  branch: z.string().exactOptional(),
  tag: z.string().exactOptional(),
  commit: z.string().exactOptional(),
  commitMessage: z.string().exactOptional(),
  repo: z.string().exactOptional(),
  fork: z.boolean().exactOptional(),
  sender: z.string().exactOptional(),
  pullRequest: z.number().exactOptional(),
  headBranch: z.string().exactOptional(),
  headRepo: z.string().exactOptional(),
  headSha: z.string().exactOptional(),
});
