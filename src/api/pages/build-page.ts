import type { BuildRecord } from '../../../queue/index.ts';
import type { JobRecord } from '../../core/index.ts';
import { formatDuration, formatTime, jobDuration } from './format.ts';
import { html, type SafeHtml } from './html.ts';
import { layout } from './layout.ts';

/** What a page reads of a slot's expanded job (the rest is the GitHub App's). */
export interface SlotJob {
  arch?: string | undefined;
  number?: string | undefined;
}

export type PageBuild = BuildRecord<SlotJob, unknown>;

export interface BuildPageOptions {
  build: PageBuild;
  /** The current job of each slot that has one, by job id. */
  jobs: ReadonlyMap<string, JobRecord>;
  /** The link to a job's page (signed when the build's page was opened with a link). */
  jobHref: (jobId: string) => string;
  user?: string | undefined;
}

const FINAL_BUILD = ['passed', 'failed', 'canceled'];

/** The main part of `/builds/:id` (what `assets/live.js` swaps in). */
export function buildMain(o: BuildPageOptions): SafeHtml {
  const b = o.build;
  const final =
    FINAL_BUILD.includes(b.state) &&
    b.slots.every((s) => !['waiting', 'queued', 'running'].includes(o.jobs.get(s.jobId)?.state ?? s.state));
  const stages = b.stages.length > 0 ? b.stages : ['test'];
  const took = b.finishedAt ? formatDuration(Date.parse(b.finishedAt) - Date.parse(b.createdAt)) : '';
  return html`<main id="live" class="build" data-refresh="3000" data-final="${final}">
<h1>Build #${b.number} <span class="state s-${b.state}">${b.state}</span></h1>
<dl class="facts">
<dt>Repository</dt><dd>${b.repo}</dd>
<dt>Ref</dt><dd>${b.ref}</dd>
<dt>Commit</dt><dd><code>${b.sha.slice(0, 12)}</code></dd>
<dt>Created</dt><dd>${formatTime(b.createdAt)}</dd>
${took ? html`<dt>Duration</dt><dd>${took}</dd>` : ''}
</dl>
${stages.map((stage, i) => {
  const slots = b.slots.filter((s) => s.stageIndex === i);
  return html`<section class="stage" data-stage="${stage}">
<h2>Stage ${i + 1}: ${stage}</h2>
<table class="jobs"><thead><tr><th>Job</th><th>Name</th><th>Arch</th><th>State</th><th>Duration</th></tr></thead><tbody>
${slots.map((s) => {
  const j = o.jobs.get(s.jobId);
  const state = j?.state ?? s.state;
  return html`<tr class="slot" data-slot="${s.n}" data-state="${state}">
<td>${j ? html`<a href="${o.jobHref(s.jobId)}">${s.job.number ?? `${b.number}.${s.n}`}</a>` : (s.job.number ?? `${b.number}.${s.n}`)}</td>
<td>${s.name}${s.allowFailure ? html` <small>(allowed to fail)</small>` : ''}</td>
<td>${j?.arch ?? s.job.arch ?? ''}</td>
<td><span class="state s-${state}">${state}</span>${j?.reason ? html` <small>${j.reason}</small>` : ''}</td>
<td>${j ? jobDuration(j) : ''}</td>
</tr>`;
})}
</tbody></table></section>`;
})}
</main>`;
}

export function buildPage(o: BuildPageOptions): string {
  return layout({
    title: `Build #${o.build.number} of ${o.build.repo}`,
    body: buildMain(o),
    scripts: ['live.js'],
    user: o.user,
  });
}
