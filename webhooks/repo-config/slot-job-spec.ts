import {
  JobSpec,
  parseSourceUrl,
  type SourceUrlPolicy,
  sourceBuildDir,
  uploadSourcePolicy,
  VISIBILITY_LABEL,
} from '../../src/core/index.ts';
import type { BuildEvent, ExpandedJob } from './expand-matrix.ts';
import { buildJobScript } from './phases.ts';

/** What a job of a build is made from: its expanded job, its id, and the build's source and names. */
export interface SlotJobSpecInput {
  job: ExpandedJob;
  event: BuildEvent;
  /** The job's id, fixed before it is submitted (its script knows it). */
  jobId: string;
  build: {
    id: string;
    number: number;
    repo: string;
    cloneUrl: string;
    /** Empty when not known (a git source given by sha, or by neither). */
    ref: string;
    /** The id of the uploaded tree at `cloneUrl` (the API's own URL of it), for a build of an upload. */
    upload?: string | undefined;
    sha: string;
    /** The repository is private: its jobs' sources are shown to admin tokens only. */
    private: boolean;
    /** Variables for every job of the build. */
    env?: Record<string, string> | undefined;
  };
  sourcePolicy: SourceUrlPolicy;
  /** The field named when the source URL is refused (`repository.clone_url`, `source.git`). */
  sourceField: string;
  /** Jobs get `network: egress` (Travis jobs had network) unless the operator turned it off. */
  egress: boolean;
}

/** The job spec of one job of a build, for the GitHub App's builds and the API's alike. Pure. */
export function slotJobSpec(i: SlotJobSpecInput): JobSpec {
  const b = i.build;
  const src = parseSourceUrl(
    b.cloneUrl,
    b.upload ? uploadSourcePolicy(b.cloneUrl) : i.sourcePolicy,
    i.sourceField,
  );
  return JobSpec.parse({
    arch: i.job.arch,
    image: i.job.image,
    script: buildJobScript(i.job, {
      event: i.event,
      jobId: i.jobId,
      buildNumber: b.number,
      buildId: b.id,
      buildDir: sourceBuildDir(src.path),
    }),
    source: {
      git: b.cloneUrl,
      ...(b.ref ? { ref: b.ref } : {}),
      ...(b.sha ? { sha: b.sha } : {}),
      ...(b.upload ? { upload: b.upload } : {}),
    },
    ...(b.env ? { env: b.env } : {}),
    network: i.egress ? 'egress' : 'none',
    labels: {
      repo: b.repo,
      ...(b.sha ? { sha: b.sha } : {}),
      build: b.id,
      build_number: String(b.number),
      job_number: i.job.number,
      stage: i.job.stage,
      event: i.event.type,
      ...(b.private ? { [VISIBILITY_LABEL]: 'private' } : {}),
    },
  });
}
